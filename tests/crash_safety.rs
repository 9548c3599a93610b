//! Crash safety of the key directory: a real `signet keys rotate|import` process is SIGKILLed at
//! random points, many times; after every kill the store must load, and no key it ever held
//! (every one of them may have signed, or may verify, a still-valid token) may be gone.
//!
//! The kill delays are drawn uniformly over a calibrated run time of the command, so they land
//! before, during and after the state change. The seed is printed; set
//! `SIGNET_CRASH_SEED=<n>` to replay a run.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use signet::backend::pkcs8_to_pem;
use signet::keys::{Algorithm, LocalKey};
use signet::lifecycle::{KeyLifecycle, KeyState, RotationPolicy, SystemClock};

const ITERATIONS: usize = 100;
/// Bound on the whole test, far above its usual few seconds.
const BUDGET: Duration = Duration::from_secs(60);

/// Waits for a command to exit; one still running at the harness's deadline (stuck on the
/// store's lock, say) is killed and fails the test rather than hanging it.
fn finish(mut child: std::process::Child) -> std::process::ExitStatus {
    common::wait_child(&mut child, common::DEADLINE)
}

fn signet(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signet"));
    command
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// xorshift64*: enough randomness for kill delays, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn open(dir: &Path) -> KeyLifecycle {
    common::open_key_dir(
        dir,
        RotationPolicy::new(Duration::from_secs(60), Duration::from_secs(24 * 3600)),
        Arc::new(SystemClock),
    )
    .unwrap_or_else(|e| panic!("store does not open: {e}"))
}

/// A fresh EC key as a PEM file to import.
fn key_file(dir: &Path, n: usize) -> PathBuf {
    let (_, pkcs8) = LocalKey::generate(Algorithm::ES256, 2048).unwrap();
    let path = dir.join(format!("import-{n}.pem"));
    std::fs::write(&path, pkcs8_to_pem(&pkcs8).unwrap().as_bytes()).unwrap();
    // Private, or import refuses it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[derive(Debug, Clone, Copy)]
enum Operation {
    RotateAndPromote,
    ImportVerifyOnly,
    ImportAsNext,
}

#[test]
fn a_killed_rotate_or_import_never_breaks_the_store_or_loses_a_key() {
    let started = Instant::now();
    let seed = std::env::var("SIGNET_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("SIGNET_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("keys");
    let store_arg = store.to_str().unwrap().to_owned();
    assert!(finish(
        signet(&["keys", "init", "--key-dir", &store_arg])
            .spawn()
            .unwrap()
    )
    .success());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let stderr_file = root.path().join("stderr.txt");
    let run = |operation: Operation, file: &Path| -> std::process::Child {
        let file = file.to_str().unwrap();
        let args: Vec<&str> = match operation {
            Operation::RotateAndPromote => vec![
                "keys",
                "rotate",
                "--key-dir",
                &store_arg,
                "--promote-now",
                "--force",
            ],
            Operation::ImportVerifyOnly => vec![
                "keys",
                "import",
                "--key-dir",
                &store_arg,
                "--file",
                file,
                "--verify-only",
            ],
            Operation::ImportAsNext => {
                vec!["keys", "import", "--key-dir", &store_arg, "--file", file]
            }
        };
        let mut command = signet(&args);
        command.stderr(std::fs::File::create(&stderr_file).unwrap());
        command.spawn().unwrap()
    };

    // Calibrate: how long a complete command takes here.
    let mut run_time = Duration::ZERO;
    for n in 0..3 {
        let file = key_file(root.path(), 1000 + n);
        let began = Instant::now();
        let status = finish(run(Operation::ImportVerifyOnly, &file));
        assert!(status.success());
        run_time = run_time.max(began.elapsed());
    }
    let mut window_micros = (run_time.as_micros() as u64 * 5 / 4).max(1000);
    println!("calibrated command run time {run_time:?}; kill window {window_micros}µs");

    let mut seen: BTreeSet<String> = runtime
        .block_on(open(&store).list())
        .into_iter()
        .map(|r| r.kid)
        .collect();
    let mut actives: BTreeSet<String> = BTreeSet::new();
    let (mut killed, mut completed, mut changed_when_killed) = (0, 0, 0);

    // At least ITERATIONS rounds, and more (up to 4×) until enough kills landed and enough
    // rotations completed: on a loaded machine the calibrated window can be off, so it also
    // adapts — shorter after a command that completed, longer after a kill that changed nothing.
    let mut i = 0;
    while i < ITERATIONS
        || ((killed < ITERATIONS / 4
            || actives.len() < 5
            || changed_when_killed == 0
            || killed == changed_when_killed)
            && i < 4 * ITERATIONS)
    {
        assert!(
            started.elapsed() < BUDGET,
            "over budget after {i} iterations"
        );
        let operation = match i % 3 {
            0 => Operation::RotateAndPromote,
            1 => Operation::ImportVerifyOnly,
            _ => Operation::ImportAsNext,
        };
        // A next key left by an earlier kill (or an import) would make rotate and a second
        // import-as-next refuse: finish it as an operator would, by promoting it.
        {
            let lifecycle = open(&store);
            let has_next = runtime
                .block_on(lifecycle.list())
                .iter()
                .any(|r| r.state == KeyState::Next);
            if has_next && !matches!(operation, Operation::ImportVerifyOnly) {
                runtime.block_on(lifecycle.promote(true)).unwrap();
            }
        }
        let file = key_file(root.path(), i);
        let before = std::fs::read(store.join("state.json")).unwrap();

        let mut child = run(operation, &file);
        std::thread::sleep(Duration::from_micros(rng.below(window_micros)));
        let _ = child.kill(); // SIGKILL; fails harmlessly if the command already finished
        let status = finish(child);
        let after = std::fs::read(store.join("state.json")).unwrap();
        if status.signal() == Some(9) {
            killed += 1;
            if before != after {
                changed_when_killed += 1;
            } else {
                window_micros = window_micros * 11 / 10;
            }
        } else {
            window_micros = (window_micros * 9 / 10).max(1000);
            assert!(
                status.success(),
                "iteration {i}: {operation:?} failed on its own: {status}: {}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            );
            completed += 1;
        }

        // The store loads (every state entry has its key, the state is consistent) and
        // nothing it ever held is gone.
        let lifecycle = open(&store);
        let records = runtime.block_on(lifecycle.list());
        let present: BTreeSet<String> = records.iter().map(|r| r.kid.clone()).collect();
        let lost: Vec<&String> = seen.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "iteration {i} ({operation:?}, seed {seed}): keys lost: {lost:?}"
        );
        let active = records
            .iter()
            .find(|r| r.state == KeyState::Active)
            .expect("one active key");
        actives.insert(active.kid.clone());
        assert!(
            lifecycle.keyring().snapshot().signing_key().unwrap().kid() == active.kid,
            "the active key signs"
        );
        seen.extend(present);
        i += 1;
    }
    println!(
        "{killed} killed ({changed_when_killed} after changing the state), {completed} completed, {} keys, {} distinct active keys, {:?}",
        seen.len(),
        actives.len(),
        started.elapsed()
    );
    assert!(killed >= ITERATIONS / 4, "too few kills landed: {killed}");
    // Kills landed on both sides of the commit: some after the command changed the state (so
    // a half-done change was really interrupted and recovered), some before it did.
    assert!(
        changed_when_killed >= 1,
        "no kill landed after the state changed"
    );
    assert!(
        killed > changed_when_killed,
        "every kill landed after the state changed"
    );
    assert!(actives.len() >= 5, "rotations happened: {actives:?}");
    // Interrupted writes left no temp file behind once the store was opened again.
    let leftovers: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Finally, complete commands still work on the store.
    {
        let lifecycle = open(&store);
        if runtime
            .block_on(lifecycle.list())
            .iter()
            .any(|r| r.state == KeyState::Next)
        {
            runtime.block_on(lifecycle.promote(true)).unwrap();
        }
    }
    assert!(finish(
        signet(&["keys", "rotate", "--key-dir", &store_arg])
            .spawn()
            .unwrap()
    )
    .success());
}
