//! The raw signing rate: signatures per second that THREADS threads signing flat out reach in
//! SECONDS, through the provider this build of signet signs with, printed as one number.
//!
//! `benches/targets.sh` compares the RS256-2048 load run with it. The host's speed drifts by
//! up to a third within a quarter of a minute (BENCHMARKS.md, runs L and M), so the script
//! measures in short slices that alternate raw signing and load, and each load slice is
//! compared with the raw slices on either side of it. Criterion (`benches/signing.rs`) is the
//! place for careful per-signature figures; this is a stopwatch that starts in milliseconds.
//!
//! Run: `cargo bench --bench raw_rate -- [ALG [THREADS [SECONDS]]]`, e.g. `RS256-2048 2 2`
//! (the defaults). ALG is one of ES256, ES384, ES512, RS256-2048, RS256-3072, RS256-4096.

mod common;

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::ALL_SPECS;

fn main() -> ExitCode {
    // `cargo bench` adds `--bench`; the positional arguments are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let name = args.first().map_or("RS256-2048", String::as_str);
    let Some(spec) = ALL_SPECS.into_iter().find(|spec| spec.name() == name) else {
        eprintln!("raw_rate: unknown algorithm {name:?}");
        return ExitCode::from(64);
    };
    let threads = match args.get(1).map_or(Ok(2), |arg| arg.parse::<usize>()) {
        Ok(threads) if (1..=256).contains(&threads) => threads,
        _ => {
            eprintln!("raw_rate: THREADS must be a number from 1 to 256");
            return ExitCode::from(64);
        }
    };
    let window = match args.get(2).map_or(Ok(2.0), |arg| arg.parse::<f64>()) {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Duration::from_secs_f64(seconds),
        _ => {
            eprintln!("raw_rate: SECONDS must be a number above 0 and at most 3600");
            return ExitCode::from(64);
        }
    };
    if !common::provider_supports(spec) {
        eprintln!("raw_rate: {name} is not signed by this build's provider");
        return ExitCode::from(64);
    }

    let (key, pkcs8) = common::generate(spec);
    let input = common::signing_input(&key);
    let sign = common::provider::signets_provider(spec, &pkcs8)
        .expect("the provider supports the algorithm (checked above)");

    let start = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let (signatures, elapsed) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    let mut count = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        black_box(sign(black_box(&input)));
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        // The measurement window itself, not a synchronisation: the workers sign until told.
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        let signatures: u64 = workers
            .into_iter()
            .map(|worker| worker.join().expect("a signing thread panicked"))
            .sum();
        (signatures, started.elapsed())
    });
    println!("{:.0}", signatures as f64 / elapsed.as_secs_f64());
    ExitCode::SUCCESS
}
