//! The `signet` binary: parse flags, check configuration before binding (exit 64 on a
//! mistake), then run the chosen command.

use std::process::ExitCode;

use clap::Parser as _;

use signet::cli::{Cli, Command, ServeArgs};
use signet::config::{ServeConfig, EXIT_CONFIG};

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
        Command::Bench(args) => signet::loadgen::main(&args),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let (config, keys) = match ServeConfig::from_args(args).and_then(|config| {
        let keys = config.load_keys()?;
        Ok((config, keys))
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
    match runtime.block_on(signet::server::run(config, keys)) {
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
