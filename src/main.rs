//! The `signet` binary: parse flags, check configuration before binding (exit 64 on a
//! mistake), then run the chosen command.

use std::process::ExitCode;

use clap::Parser as _;

use signet::admin::commands::CommandError;
use signet::cli::{Cli, Command, KeysCommand, ServeArgs, VerifyArgs};
use signet::config::{ServeConfig, EXIT_CONFIG};
use signet::lifecycle::{offline, ImportOptions, KeyRecord, LifecycleError};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // --help and --version are not errors; every flag mistake is a configuration error.
            return if err.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    signet::logging::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Keys(args) => keys(args.command),
        Command::Verify(args) => verify(&args),
        Command::Bench(args) => signet::loadgen::main(&args),
    }
}

/// `signet keys ...`: offline on a key directory (`init`, and `rotate`/`import` with
/// `--key-dir`), otherwise online through the running server's admin socket. Errors are one
/// line on stderr, `signet: error: ...`; exit 1, or 64 for a refused command line.
fn keys(command: KeysCommand) -> ExitCode {
    if let Err(err) = signet::admin::commands::check(&command) {
        return command_failed(&err);
    }
    let result: Result<KeyRecord, LifecycleError> = match command {
        KeysCommand::Init(args) => offline::init(&args.key_dir, args.alg, args.rsa_bits),
        KeysCommand::Rotate(args) if args.key_dir.is_some() => {
            let dir = args.key_dir.expect("checked above");
            offline::rotate(&dir, args.alg, args.rsa_bits, args.promote_now)
        }
        KeysCommand::Import(args) if args.key_dir.is_some() => {
            let dir = args.key_dir.expect("checked above");
            let pem = match signet::backend::read_private_key_file(&args.file) {
                Ok(pem) => pem,
                Err(err) => {
                    eprintln!("signet: error: {err}");
                    return ExitCode::FAILURE;
                }
            };
            offline::import(
                &dir,
                &pem,
                ImportOptions {
                    verify_only: args.verify_only,
                },
            )
        }
        online => return keys_online(&online),
    };
    match result {
        Ok(record) => {
            println!(
                "{} {} {}{}",
                record.kid,
                record.alg,
                record.state,
                if record.verify_only {
                    " verify-only"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("signet: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `signet keys ...` against a running server's admin socket.
fn keys_online(command: &KeysCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("signet: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(signet::admin::commands::run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => command_failed(&err),
    }
}

fn command_failed(err: &CommandError) -> ExitCode {
    eprintln!("signet: error: {err}");
    if matches!(err, CommandError::Usage(_)) {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(signet::verify::run(args)),
        Err(err) => {
            eprintln!("signet verify: cannot start the async runtime: {err}");
            ExitCode::from(signet::verify::EXIT_CANNOT_CHECK)
        }
    }
}

/// Reports why `serve` exits with a failure: in the log, or on stderr when the log filter
/// (`RUST_LOG=off`, say) would drop the line, so that a failed start never exits silently.
fn report_failure(what: &str, err: &dyn std::fmt::Display) {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(error = %err, "{what}");
    } else {
        eprintln!("signet serve: {what}: {err}");
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let (config, lifecycle) = match ServeConfig::from_args(args).and_then(|config| {
        // Before the runtime starts: loading keys and generating one are blocking work.
        let lifecycle = signet::server::build_lifecycle(&config)?;
        Ok((config, lifecycle))
    }) {
        Ok(loaded) => loaded,
        Err(err) => {
            report_failure("configuration error", &err);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Keys loaded rather than generated have not used the random generator yet: set it up
    // (~90 ms of CPU on a 2-vCPU VM) beside opening the sockets, not inside the first Sign.
    // Held to the end of this function, so the process never exits while it runs.
    let _rng_warm_up = signet::keys::warm_up_rng();
    let admin_socket =
        match signet::admin::admin_socket_address(args.admin_socket.as_deref(), &config.socket) {
            Ok(address) => address,
            Err(err) => {
                report_failure("configuration error", &err);
                return ExitCode::from(EXIT_CONFIG);
            }
        };
    // One executor thread for all gRPC work, the signing threads (src/api/signing_pool.rs) for
    // slow signatures; `--http-listen` has a thread and runtime of its own, so its requests
    // never queue ahead of a Sign. kube-apiserver opens one HTTP/2 connection, so its calls are read
    // and answered by one task whatever the runtime; a second executor thread only adds
    // cross-thread wake-ups, and with it the busy-poll window cannot keep the socket's
    // readiness from going to whichever thread sleeps in epoll. Measured in BENCHMARKS.md
    // ("Runtime shape").
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            report_failure("cannot start the async runtime", &err);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(signet::server::run(config, lifecycle, admin_socket)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            report_failure("signet stopped with an error", &err);
            ExitCode::FAILURE
        }
    }
}
