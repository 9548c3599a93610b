//! `signet bench`: a load generator for any ExternalJWTSigner, driving it over its Unix socket
//! the way kube-apiserver does (cleartext HTTP/2 with prior knowledge, authority `localhost`,
//! one connection unless told otherwise) and reporting throughput and latency percentiles.
//!
//! It is a client only: it never reads signet's internals, so it measures signet and any other
//! implementation alike. It never prints the claims it sends or the signatures it gets back.

mod cpu;
mod grpc;
mod report;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codegen::http;

use crate::cli::parse_duration;
use crate::config::EXIT_CONFIG;
use crate::server::SocketAddress;

pub use cpu::CpuShare;
pub use report::{LatencySummary, Report, RpcReport};

/// The default Sign payload: a real kube-apiserver v1.36.2 claims string for a pod-bound token
/// (see `benches/fixtures/README.md` for its origin).
pub const DEFAULT_CLAIMS: &str =
    include_str!("../../benches/fixtures/apiserver-claims-pod-bound.txt");

/// `signet bench` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Socket of the signer to load: an absolute path, or `@name` for an abstract socket.
    #[arg(long)]
    pub socket: String,

    /// Which RPC to call. `mix` sends 90% Sign, 9% FetchKeys and 1% Metadata.
    #[arg(long, value_enum, default_value_t = RpcChoice::Sign)]
    pub rpc: RpcChoice,

    /// API package to call: v1 (kube-apiserver 1.34+) or v1alpha1 (1.32, 1.33).
    #[arg(long, value_enum, default_value_t = ApiVersion::V1)]
    pub api: ApiVersion,

    /// Calls in flight at once (each a task that sends its next call when the last returns).
    #[arg(long, short = 'c', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// How long to measure, after the warm-up (e.g. 10s, 1m, 500ms).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// How long to send calls before measuring (connections and caches warm up; not reported).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// HTTP/2 connections to spread the calls over. kube-apiserver uses one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// File holding the `claims` string to sign (base64url JSON, as kube-apiserver sends it).
    /// Default: a real pod-bound token's claims from kube-apiserver v1.36.
    #[arg(long, value_name = "PATH")]
    pub claims_file: Option<PathBuf>,

    /// Report format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Threads of the load generator's own runtime. One thread (the default) costs the least
    /// CPU and adds the least latency per call on a machine the signer shares; more threads
    /// help only when one core cannot generate the load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// Keep one thread of the load generator polling the socket, never sleeping, while the
    /// run lasts (it costs that core). On a VM that halts idle vCPUs, every answer otherwise
    /// waits for the load generator's own vCPU to wake, which at concurrency 1 can be as long
    /// as the call itself: spinning takes that out and leaves the signer's latency.
    /// kube-apiserver does not spin; the default measures what a sleeping client sees.
    #[arg(long)]
    pub spin: bool,

    /// How long a call may take before it counts as a DeadlineExceeded error (sent to the
    /// server as `grpc-timeout`, as gRPC clients do); at most 60s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RpcChoice {
    Sign,
    Fetchkeys,
    Metadata,
    Mix,
}

/// One RPC of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rpc {
    Sign,
    FetchKeys,
    Metadata,
}

impl Rpc {
    const ALL: [Rpc; 3] = [Rpc::Sign, Rpc::FetchKeys, Rpc::Metadata];

    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rpc::Sign => "sign",
            Rpc::FetchKeys => "fetchkeys",
            Rpc::Metadata => "metadata",
        }
    }
}

impl RpcChoice {
    /// The RPC for a task's `n`th call. The mix is deterministic so runs compare.
    fn pick(self, n: u64) -> Rpc {
        match self {
            RpcChoice::Sign => Rpc::Sign,
            RpcChoice::Fetchkeys => Rpc::FetchKeys,
            RpcChoice::Metadata => Rpc::Metadata,
            RpcChoice::Mix => match n % 100 {
                0..=89 => Rpc::Sign,
                90..=98 => Rpc::FetchKeys,
                _ => Rpc::Metadata,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    V1,
    V1alpha1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("invalid --socket: {0}")]
    Socket(String),
    #[error("--duration must be more than zero")]
    ZeroDuration,
    #[error("--timeout must be more than zero and at most {}s (the longest latency recorded)", MAX_TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot read --claims-file {path}: {source}")]
    ClaimsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--claims-file {0} is empty")]
    EmptyClaims(PathBuf),
    #[error("--claims-file {0} is over 4 MiB, the largest message a gRPC server takes by default")]
    ClaimsTooLarge(PathBuf),
    #[error("cannot connect to {socket}: {reason}")]
    Connect { socket: String, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl BenchError {
    fn exit_code(&self) -> ExitCode {
        match self {
            BenchError::Socket(_)
            | BenchError::ZeroDuration
            | BenchError::Timeout
            | BenchError::ClaimsFile { .. }
            | BenchError::EmptyClaims(_)
            | BenchError::ClaimsTooLarge(_) => ExitCode::from(EXIT_CONFIG),
            BenchError::Connect { .. } | BenchError::Runtime(_) => ExitCode::FAILURE,
        }
    }
}

/// Everything a run needs, checked. Its Debug leaves out the claims (a `--claims-file` may
/// hold a real token's).
#[derive(Clone)]
pub struct LoadPlan {
    pub socket: SocketAddress,
    pub rpc: RpcChoice,
    pub api: ApiVersion,
    pub concurrency: u32,
    pub connections: u32,
    pub warmup: Duration,
    pub duration: Duration,
    pub claims: String,
    /// Poll without sleeping while the run lasts (`--spin`).
    pub spin: bool,
    /// The longest a call may take (`--timeout`).
    pub timeout: Duration,
}

impl fmt::Debug for LoadPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadPlan")
            .field("socket", &self.socket)
            .field("rpc", &self.rpc)
            .field("api", &self.api)
            .field("concurrency", &self.concurrency)
            .field("connections", &self.connections)
            .field("warmup", &self.warmup)
            .field("duration", &self.duration)
            .field(
                "claims",
                &format_args!("<{} bytes redacted>", self.claims.len()),
            )
            .field("spin", &self.spin)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl LoadPlan {
    pub fn from_args(args: &BenchArgs) -> Result<Self, BenchError> {
        let socket = SocketAddress::parse(&args.socket).map_err(BenchError::Socket)?;
        if args.duration.is_zero() {
            return Err(BenchError::ZeroDuration);
        }
        if args.timeout.is_zero() || args.timeout > MAX_TIMEOUT {
            return Err(BenchError::Timeout);
        }
        let claims = match &args.claims_file {
            None => DEFAULT_CLAIMS.to_owned(),
            Some(path) => {
                let text = read_claims_file(path)?;
                let claims = text.trim().to_owned();
                if claims.is_empty() {
                    return Err(BenchError::EmptyClaims(path.clone()));
                }
                claims
            }
        };
        Ok(Self {
            socket,
            rpc: args.rpc,
            api: args.api,
            concurrency: args.concurrency,
            connections: args.connections,
            warmup: args.warmup,
            duration: args.duration,
            claims,
            spin: args.spin,
            timeout: args.timeout,
        })
    }
}

/// The longest `--timeout`: the latency histogram's range.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest `--claims-file` taken: gRPC servers refuse a larger message by default
/// (4 MiB), so every call would measure only the refusal. Reading stops past it, so a huge
/// file (or a device) is never held in memory.
const MAX_CLAIMS_FILE: u64 = 4 * 1024 * 1024;

fn read_claims_file(path: &Path) -> Result<String, BenchError> {
    use std::io::Read as _;
    let read_error = |source| BenchError::ClaimsFile {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CLAIMS_FILE + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CLAIMS_FILE {
        return Err(BenchError::ClaimsTooLarge(path.to_owned()));
    }
    String::from_utf8(bytes).map_err(|_| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

/// Runs `signet bench`: prints the report on stdout; exits non-zero when the run could not
/// start (64 for a flag mistake) or when any call failed.
pub fn main(args: &BenchArgs) -> ExitCode {
    let outcome = LoadPlan::from_args(args).and_then(|plan| {
        let runtime = match args.threads {
            // One thread: everything on the calling thread, no cross-thread wake-ups.
            1 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            threads => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads as usize)
                .enable_all()
                .build(),
        }
        .map_err(BenchError::Runtime)?;
        runtime.block_on(run(&plan, Progress::when_terminal()))
    });
    match outcome {
        Ok(report) => {
            let printed = match args.output {
                OutputFormat::Text => report.to_text(),
                OutputFormat::Json => report.to_json() + "\n",
            };
            print!("{printed}");
            if report.errors_total() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("signet bench: {err}");
            err.exit_code()
        }
    }
}

/// Whether and how to show a live progress line on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Hidden,
    Terminal,
}

impl Progress {
    /// A progress line only when a person is watching: stderr is a terminal.
    pub fn when_terminal() -> Self {
        use std::io::IsTerminal as _;
        if std::io::stderr().is_terminal() {
            Progress::Terminal
        } else {
            Progress::Hidden
        }
    }
}

/// Connects `plan.connections` HTTP/2 connections, runs the warm-up then the measured phase
/// with `plan.concurrency` tasks, and summarises what happened.
pub async fn run(plan: &LoadPlan, progress: Progress) -> Result<Report, BenchError> {
    let mut clients = Vec::with_capacity(plan.connections as usize);
    for _ in 0..plan.connections {
        let io = plan
            .socket
            .connect()
            .await
            .map_err(|err| connect_failed(&plan.socket, &err))?;
        let send = grpc::handshake(io)
            .await
            .map_err(|err| connect_failed(&plan.socket, &err))?;
        clients.push(grpc::Client::new(
            send,
            plan.api,
            &plan.claims,
            plan.timeout,
        ));
    }

    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let timing = Timing {
        measure_from: started + plan.warmup,
        end: started + plan.warmup + plan.duration,
    };
    let mut tasks = Vec::with_capacity(plan.concurrency as usize);
    for task in 0..plan.concurrency {
        let client = clients[task as usize % clients.len()].clone();
        let job = Job {
            rpc: plan.rpc,
            // Stagger the mix so that tasks do not all call FetchKeys at the same moment.
            first_call: u64::from(task) * 37,
            timeout: plan.timeout,
            timing,
            counters: counters.clone(),
        };
        tasks.push(tokio::spawn(job.run(client)));
    }
    // The cores' counters when the measured window opens (the warm-up is not counted).
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(timing.measure_from.into()).await;
        cpu::CpuTimes::read()
    });
    let spinner = plan.spin.then(|| tokio::spawn(spin_until(timing.end)));
    let ticker = (progress == Progress::Terminal).then(|| {
        tokio::spawn(show_progress(
            counters.clone(),
            started,
            timing,
            plan.warmup,
            plan.duration,
        ))
    });

    let mut tally = Tally::new();
    for task in tasks {
        let done = task.await.expect("a load task panicked");
        tally.merge(done);
    }
    let cpu = match (cpu_at_start.await.ok().flatten(), cpu::CpuTimes::read()) {
        (Some(start), Some(end)) => end.share_since(&start),
        _ => None,
    };
    if let Some(spinner) = spinner {
        spinner.abort();
        let _ = spinner.await;
    }
    if let Some(ticker) = ticker {
        ticker.abort();
        let _ = ticker.await;
        eprint!("\r\x1b[K");
    }
    let measured = tally
        .last_finish
        .map_or(plan.duration, |last| {
            last.saturating_duration_since(timing.measure_from)
        })
        .max(Duration::from_micros(1));
    Ok(Report::new(plan, measured, &tally, cpu))
}

fn connect_failed(socket: &SocketAddress, err: &dyn std::error::Error) -> BenchError {
    BenchError::Connect {
        socket: socket.to_string(),
        reason: crate::server::error_chain(err),
    }
}

/// One HTTP/2 connection for tonic's generated clients (the criterion `rpc` benchmark), as
/// kube-apiserver opens it: plaintext, prior knowledge, authority `localhost`, over the Unix
/// socket. `signet bench` itself calls through its own client (`grpc.rs`), which costs less
/// per call.
///
/// The generated client drives hyper's HTTP/2 connection directly rather than through tonic's
/// `Channel`, whose request buffer adds a task hop to every call.
pub async fn connect(socket: &SocketAddress) -> Result<Connection, BenchError> {
    let io = socket
        .connect()
        .await
        .map_err(|err| connect_failed(socket, &err))?;
    let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|err| connect_failed(socket, &err))?;
    drive_connection(connection);
    Ok(Connection { send })
}

/// Drives an HTTP/2 connection on a task of its own until it closes, and says why if it
/// failed (calls in flight on it then fail and are counted).
fn drive_connection<E>(
    connection: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) where
    E: std::error::Error + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!(
                "signet bench: connection closed: {}",
                crate::server::error_chain(&err)
            );
        }
    });
}

/// An HTTP/2 connection to the signer, usable as the transport of the generated clients.
#[derive(Debug, Clone)]
pub struct Connection {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let mut send = self.send.clone();
        Box::pin(async move {
            // tonic's request body is a stream that learns it has ended only when polled once
            // more, so sent as it is, a unary call leaves as three writes: HEADERS, DATA and an
            // empty DATA frame that ends the stream. grpc-go (kube-apiserver) marks its one
            // DATA frame END_STREAM instead. The message is already encoded, so collecting it
            // costs no wait.
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let request = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(body)));
            Ok(send.send_request(request).await?)
        })
    }
}

/// How one call ended, for the tally.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallError {
    /// The server answered with this gRPC status.
    Status(tonic::Code, String),
    /// The server answered with something kube-apiserver would reject: not gRPC, no status,
    /// a malformed or empty message.
    InvalidResponse(&'static str),
    /// The connection closed (the server went away, or sent GOAWAY): reported as
    /// `Unavailable`, as gRPC clients do, and the task that met it stops.
    ConnectionLost(String),
}

impl CallError {
    fn label(&self) -> String {
        match self {
            CallError::Status(code, _) => format!("{code:?}"),
            CallError::InvalidResponse(_) => "InvalidResponse".to_owned(),
            CallError::ConnectionLost(_) => format!("{:?}", tonic::Code::Unavailable),
        }
    }

    fn message(&self) -> String {
        match self {
            CallError::Status(_, message) | CallError::ConnectionLost(message) => message.clone(),
            CallError::InvalidResponse(why) => (*why).to_owned(),
        }
    }
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> Self {
        CallError::Status(status.code(), status.message().to_owned())
    }
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Calls that start before this are warm-up and not reported.
    measure_from: Instant,
    /// No call starts at or after this.
    end: Instant,
}

/// Live totals for the progress line (the report is built from each task's own tally).
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
}

/// One task's share of the load: call, wait for the answer, repeat until the end.
#[derive(Debug)]
struct Job {
    rpc: RpcChoice,
    first_call: u64,
    timeout: Duration,
    timing: Timing,
    counters: Arc<Counters>,
}

impl Job {
    async fn run(self, mut client: grpc::Client) -> Tally {
        let mut tally = Tally::new();
        let mut n = self.first_call;
        loop {
            let started = Instant::now();
            if started >= self.timing.end {
                break;
            }
            let rpc = self.rpc.pick(n);
            n += 1;
            let outcome = tokio::time::timeout(self.timeout, client.call(rpc))
                .await
                .unwrap_or_else(|_| {
                    Err(CallError::Status(
                        tonic::Code::DeadlineExceeded,
                        format!("no answer within {:?} (--timeout)", self.timeout),
                    ))
                });
            let finished = Instant::now();
            self.counters.calls.fetch_add(1, Ordering::Relaxed);
            if outcome.is_err() {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            // A closed connection carries no more calls: retrying on it would only count
            // the same failure as fast as the loop turns.
            let connection_lost = matches!(outcome, Err(CallError::ConnectionLost(_)));
            if started >= self.timing.measure_from || connection_lost {
                tally.record(rpc, outcome, finished - started);
                tally.last_finish = Some(tally.last_finish.map_or(finished, |t| t.max(finished)));
            }
            if connection_lost {
                break;
            }
        }
        tally
    }
}

/// Measured calls: latency of successful calls and errors by kind, per RPC.
#[derive(Debug)]
pub(crate) struct Tally {
    latency: [Histogram<u64>; 3],
    errors: [std::collections::BTreeMap<String, ErrorCount>; 3],
    last_finish: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorCount {
    count: u64,
    /// The first message seen, to help the operator (the server's text, not ours).
    example: String,
}

/// Latencies from 1 µs to 60 s, in nanoseconds, to 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: [new_histogram(), new_histogram(), new_histogram()],
            errors: Default::default(),
            last_finish: None,
        }
    }

    fn record(&mut self, rpc: Rpc, outcome: Result<(), CallError>, took: Duration) {
        match outcome {
            Ok(()) => self.latency[rpc.index()]
                .saturating_record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)),
            Err(err) => {
                let entry = self.errors[rpc.index()].entry(err.label()).or_default();
                if entry.count == 0 {
                    entry.example = err.message();
                }
                entry.count += 1;
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            mine.add(theirs).expect("histograms share bounds");
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            for (label, count) in theirs {
                let entry = mine.entry(label).or_default();
                if entry.count == 0 {
                    entry.example = count.example;
                }
                entry.count += count.count;
            }
        }
        self.last_finish = match (self.last_finish, other.last_finish) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Keeps this runtime thread polling its I/O driver instead of sleeping until `end`, so an
/// answer is read as soon as it arrives.
async fn spin_until(end: Instant) {
    crate::busy_poll::poll_io_while(|| Instant::now() < end).await;
}

async fn show_progress(
    counters: Arc<Counters>,
    started: Instant,
    timing: Timing,
    warmup: Duration,
    duration: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut previous = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let calls = counters.calls.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let rate = (calls - previous.1) as f64 / now.duration_since(previous.0).as_secs_f64();
        previous = (now, calls);
        let phase = if now < timing.measure_from {
            format!(
                "warm-up {:.1}/{:.1}s",
                now.duration_since(started).as_secs_f64(),
                warmup.as_secs_f64()
            )
        } else {
            format!(
                "measuring {:.1}/{:.1}s",
                now.saturating_duration_since(timing.measure_from)
                    .as_secs_f64()
                    .min(duration.as_secs_f64()),
                duration.as_secs_f64()
            )
        };
        eprint!("\r\x1b[K{phase}  calls {calls}  errors {errors}  {rate:.0} calls/s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_ninety_nine_one() {
        let mut counts = [0u32; 3];
        for n in 0..1000 {
            counts[RpcChoice::Mix.pick(n).index()] += 1;
        }
        assert_eq!(counts, [900, 90, 10]);
        assert_eq!(RpcChoice::Sign.pick(95), Rpc::Sign);
    }

    #[tokio::test]
    async fn the_spinner_yields_to_the_calls_and_stops_at_the_end() {
        let started = Instant::now();
        let end = started + Duration::from_millis(30);
        let spinner = tokio::spawn(spin_until(end));
        // A task on the same one-thread runtime keeps running while the spinner spins.
        let mut turns = 0_u64;
        while !spinner.is_finished() {
            turns += 1;
            tokio::task::yield_now().await;
            assert!(started.elapsed() < Duration::from_secs(10), "never stopped");
        }
        spinner.await.unwrap();
        assert!(Instant::now() >= end);
        assert!(turns > 1);
    }

    #[test]
    fn default_claims_are_the_apiserver_fixture_verbatim() {
        assert_eq!(DEFAULT_CLAIMS.len(), 711);
        assert!(!DEFAULT_CLAIMS.contains(['\n', '=', ' ']));
        crate::jws::check_claims(DEFAULT_CLAIMS, 86_400).unwrap();
    }

    #[test]
    fn tally_keeps_latency_of_successes_and_counts_errors_by_code() {
        let mut a = Tally::new();
        a.record(Rpc::Sign, Ok(()), Duration::from_micros(100));
        a.record(
            Rpc::Sign,
            Err(CallError::Status(tonic::Code::Unavailable, "down".into())),
            Duration::from_micros(5),
        );
        let mut b = Tally::new();
        b.record(Rpc::Sign, Ok(()), Duration::from_micros(300));
        b.record(
            Rpc::Sign,
            Err(CallError::Status(tonic::Code::Unavailable, "again".into())),
            Duration::from_micros(5),
        );
        a.merge(b);
        assert_eq!(a.latency[Rpc::Sign.index()].len(), 2);
        let unavailable = &a.errors[Rpc::Sign.index()]["Unavailable"];
        assert_eq!(unavailable.count, 2);
        assert_eq!(unavailable.example, "down");
    }
}
