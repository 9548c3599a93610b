//! Command-line surface: `signet serve` and the flags an operator meets. Parsing only; what the
//! flags mean is checked in [`crate::config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::keys::Algorithm;

#[derive(Debug, Parser)]
#[command(
    name = "signet",
    version,
    about = "External service-account token signer for kube-apiserver"
)]
pub struct Cli {
    /// Log line format (filter with RUST_LOG, e.g. RUST_LOG=signet=debug).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "SIGNET_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve ExternalJWTSigner (v1 and v1alpha1) on a Unix socket.
    Serve(ServeArgs),
    /// Load a running ExternalJWTSigner (signet or any other) over its socket and report
    /// throughput and latency percentiles.
    Bench(crate::loadgen::BenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Socket kube-apiserver dials (--service-account-signing-endpoint): an absolute path, or
    /// `@name` for a Linux abstract socket.
    #[arg(long, default_value = "/run/signet/signet.sock", env = "SIGNET_SOCKET")]
    pub socket: String,

    /// Permission bits of the socket file (octal). 0600 lets only the owner connect; 0660
    /// admits a group. Never world-accessible.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    pub socket_mode: u32,

    /// For an abstract socket (which has no file permissions): a peer UID allowed to connect,
    /// besides signet's own UID and root. Repeatable.
    #[arg(long = "allowed-uid", value_name = "UID")]
    pub allowed_uids: Vec<u32>,

    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC). Repeatable: the first signs, all are
    /// published. Without it, a key is generated in memory at start.
    #[arg(long = "key-file", value_name = "PATH")]
    pub key_files: Vec<PathBuf>,

    /// Algorithm of the in-memory key generated when no --key-file is given.
    #[arg(long, default_value = "ES256", value_parser = parse_algorithm)]
    pub generate_alg: Algorithm,

    /// RSA modulus size for a generated RS256 key: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048)]
    pub rsa_bits: usize,

    /// Longest token lifetime this signer accepts and reports in Metadata (at least 600s).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub max_token_expiration: Duration,

    /// How often kube-apiserver should re-fetch the keys (FetchKeys refresh_hint_seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub refresh_hint: Duration,

    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before signet exits.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// A duration such as `24h`, `90m`, `3600s` or `1h30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|err| format!("{err} (use e.g. 24h, 90m, 3600s)"))
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse()
        .map_err(|err: crate::keys::ParseAlgorithmError| err.to_string())
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 0600"))?;
    if mode & 0o007 != 0 {
        return Err(format!(
            "mode {mode:04o} gives access to every user: the socket signs tokens for the whole cluster"
        ));
    }
    if mode & !0o770 != 0 {
        return Err(format!(
            "mode {mode:04o} has bits other than read/write/execute for owner and group"
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("3600s").unwrap(), Duration::from_secs(3_600));
        assert_eq!(parse_duration("3600").unwrap(), Duration::from_secs(3_600));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn socket_mode_refuses_world_access() {
        assert_eq!(parse_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert!(parse_mode("0666").is_err());
        assert!(parse_mode("0601").is_err());
        assert!(parse_mode("4600").is_err());
        assert!(parse_mode("rw").is_err());
    }
}
