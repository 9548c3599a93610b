//! The `signet` binary: parse flags, check configuration before binding (exit 64 on a
//! mistake), then run the chosen command.

use std::process::ExitCode;

use clap::Parser as _;

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

/// `signet keys ...` offline on a key directory.
fn keys(command: KeysCommand) -> ExitCode {
    let result: Result<KeyRecord, LifecycleError> = match command {
        KeysCommand::Init(args) => offline::init(&args.key_dir, args.alg, args.rsa_bits),
        KeysCommand::Rotate(args) => {
            let Some(dir) = args.key_dir else {
                return missing_store_flag("rotate");
            };
            offline::rotate(&dir, args.alg, args.rsa_bits, args.promote_now)
        }
        KeysCommand::Import(args) => {
            let Some(dir) = args.key_dir else {
                return missing_store_flag("import");
            };
            let pem = match signet::backend::read_private_key_file(&args.file) {
                Ok(pem) => pem,
                Err(err) => {
                    eprintln!("error: {err}");
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
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn missing_store_flag(command: &str) -> ExitCode {
    eprintln!("error: `signet keys {command}` needs --key-dir DIR (offline, server stopped)");
    ExitCode::from(EXIT_CONFIG)
}

fn serve(args: &ServeArgs) -> ExitCode {
    let (config, lifecycle) = match ServeConfig::from_args(args).and_then(|config| {
        // Before the runtime starts: loading keys and generating one are blocking work.
        let lifecycle = signet::server::build_lifecycle(&config)?;
        Ok((config, lifecycle))
    }) {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::error!(error = %err, "configuration error");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(signet::server::run(config, lifecycle)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, "signet stopped with an error");
            ExitCode::FAILURE
        }
    }
}
