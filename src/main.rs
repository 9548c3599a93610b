//! The `signet` binary: parse flags, check configuration before binding (exit 64 on a
//! mistake), then run the chosen command.

use std::process::ExitCode;

use clap::Parser as _;

use signet::cli::{Cli, Command, KeysCommand, ServeArgs};
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
        Command::Keys(command) => keys(&command),
    }
}

/// `signet keys ...` against a running server's admin socket. Errors are one line on stderr:
/// the server's own message for a refused call, exit 1 (64 for a refused command line).
fn keys(command: &KeysCommand) -> ExitCode {
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
        Err(err) => {
            eprintln!("signet: error: {err}");
            if matches!(err, signet::admin::commands::CommandError::Usage(_)) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let (config, lifecycle) = match ServeConfig::from_args(args).and_then(|config| {
        let lifecycle = interim_lifecycle(&config)?;
        Ok((config, lifecycle))
    }) {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::error!(error = %err, "configuration error");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let admin_socket =
        match signet::admin::admin_socket_address(args.admin_socket.as_deref(), &config.socket) {
            Ok(address) => address,
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
    match runtime.block_on(signet::server::run(config, lifecycle, admin_socket)) {
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

/// INTERIM until wt-life's `server::build_lifecycle` lands: the configured keys in an
/// in-memory lifecycle (first active, the others verify-only).
fn interim_lifecycle(
    config: &ServeConfig,
) -> Result<std::sync::Arc<signet::lifecycle::KeyLifecycle>, signet::config::ConfigError> {
    use signet::lifecycle::{InitialKeys, KeyLifecycle, MemoryStateStore, RotationPolicy};
    let initial = match &config.key_source {
        signet::config::KeySource::Generated { alg } => InitialKeys::Generate(*alg),
        signet::config::KeySource::Files(paths) => {
            let mut keys = Vec::new();
            for path in paths {
                let pem = std::fs::read(path).map_err(|source| {
                    signet::config::ConfigError::ReadKeyFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                keys.push(signet::keys::pkcs8_from_pem(&pem).map_err(|source| {
                    signet::config::ConfigError::KeyFile {
                        path: path.clone(),
                        source,
                    }
                })?);
            }
            InitialKeys::Import(keys)
        }
    };
    let lifecycle = KeyLifecycle::create(
        std::sync::Arc::new(signet::backend::MemoryBackend::new()),
        std::sync::Arc::new(MemoryStateStore::new()),
        RotationPolicy::new(config.refresh_hint, config.max_token_expiration),
        std::sync::Arc::new(signet::lifecycle::SystemClock),
        initial,
    )
    .unwrap_or_else(|err| panic!("interim lifecycle: {err}"));
    Ok(std::sync::Arc::new(lifecycle))
}
