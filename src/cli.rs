//! Command-line surface: `signet serve` and the flags an operator meets. Parsing only; what the
//! flags mean is checked in [`crate::config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admin::{OutputFormat, DEFAULT_ADMIN_SOCKET};
use crate::keys::Algorithm;
use crate::server::SocketAddress;

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
    /// Manage signing keys: on a running server through its admin socket (--admin-socket),
    /// or offline on a stopped server's key directory (--key-dir, where supported).
    Keys(KeysArgs),
    /// Check a token against the keys a running signer publishes (FetchKeys over its socket).
    /// Exit 0: verified; 1: does not verify; 2: cannot be checked.
    Verify(VerifyArgs),
    /// Load a running ExternalJWTSigner (signet or any other) over its socket and report
    /// throughput and latency percentiles.
    Bench(crate::loadgen::BenchArgs),
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `signet keys <command>`. Online (the default), each talks to a running `signet serve` over
/// its admin socket. `init`, and `rotate`/`import` with `--key-dir`, work offline on a stopped
/// server's store (the directory is locked while the command runs).
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new key store with one active key (offline; the directory must be new or empty).
    Init(KeysInitArgs),
    /// List every key: kid, algorithm, state and its lifecycle times.
    List(KeysListArgs),
    /// Show the active and next key, the next automatic rotation and the last error.
    Status(KeysStatusArgs),
    /// Prepare a next key: published now, signing only once promoted.
    Rotate(KeysRotateArgs),
    /// Make the next key the signing key; the previous one is retired.
    Promote(KeysPromoteArgs),
    /// Stop a next key from ever signing; it stays published until its removal is due.
    Retire(KeysRetireArgs),
    /// Remove a retired key from FetchKeys and from the store.
    Remove(KeysRemoveArgs),
    /// Import a PEM private key (e.g. kube-apiserver's sa.key) under the in-tree kid.
    Import(KeysImportArgs),
    /// Print the published JWK Set (what /openid/v1/jwks serves).
    ExportJwks(KeysExportJwksArgs),
}

/// Where the running server's admin API listens.
#[derive(Debug, Clone, Args)]
pub struct AdminSocketArgs {
    /// The admin socket of the running `signet serve` (its --admin-socket).
    #[arg(long = "admin-socket", value_name = "PATH", default_value = DEFAULT_ADMIN_SOCKET,
          env = "SIGNET_ADMIN_SOCKET", value_parser = parse_socket_address)]
    pub admin_socket: SocketAddress,
}

#[derive(Debug, Clone, Args)]
pub struct KeysInitArgs {
    /// The key store directory to create (mode 0700).
    #[arg(long, value_name = "DIR")]
    pub key_dir: PathBuf,

    /// Algorithm of the first key.
    #[arg(long, default_value = "ES256", value_parser = parse_algorithm)]
    pub alg: Algorithm,

    /// RSA modulus size for RS256: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048, value_parser = parse_rsa_bits)]
    pub rsa_bits: usize,
}

#[derive(Debug, Clone, Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    pub target: AdminSocketArgs,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Args)]
pub struct KeysStatusArgs {
    #[command(flatten)]
    pub target: AdminSocketArgs,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Args)]
pub struct KeysRotateArgs {
    #[command(flatten)]
    pub target: AdminSocketArgs,

    /// Work offline on this key store instead of through the admin socket (the server using
    /// it must be stopped).
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,

    /// Algorithm of the new key (default: the active key's). A rotation may change it, e.g.
    /// from an imported RSA sa.key to ES256.
    #[arg(long, value_parser = parse_algorithm)]
    pub alg: Option<Algorithm>,

    /// RSA modulus size when the new key is RS256, offline: 2048, 3072 or 4096 (a running
    /// server uses its own --rsa-bits).
    #[arg(long, default_value_t = 2048, value_parser = parse_rsa_bits)]
    pub rsa_bits: usize,

    /// Promote the new key at once, skipping the publish lead (needs --force): verifiers
    /// that have not refreshed their keys reject its tokens until they do.
    #[arg(long)]
    pub promote_now: bool,

    /// Confirm that --promote-now skips the publish lead.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KeysPromoteArgs {
    #[command(flatten)]
    pub target: AdminSocketArgs,

    /// Promote even if the next key has not been published for the whole lead time.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KeysRetireArgs {
    #[command(flatten)]
    pub target: AdminSocketArgs,

    /// The key to retire. A kid may start with `-` (base64url), so one is taken as a kid here.
    #[arg(allow_hyphen_values = true)]
    pub kid: String,
}

#[derive(Debug, Clone, Args)]
pub struct KeysRemoveArgs {
    #[command(flatten)]
    pub target: AdminSocketArgs,

    /// The key to remove. A kid may start with `-` (base64url), so one is taken as a kid here.
    #[arg(allow_hyphen_values = true)]
    pub kid: String,

    /// Remove even while tokens it signed may still be valid (they will fail verification).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KeysImportArgs {
    #[command(flatten)]
    pub target: AdminSocketArgs,

    /// Work offline on this key store instead of through the admin socket (the server using
    /// it must be stopped).
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,

    /// PEM private key: PKCS#8, PKCS#1 RSA (kubeadm's sa.key, >= 2048 bits) or SEC1 EC.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,

    /// Publish the key for verification only; never sign with it (e.g. the apiserver's old
    /// sa.key).
    #[arg(long)]
    pub verify_only: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KeysExportJwksArgs {
    #[command(flatten)]
    pub target: AdminSocketArgs,

    /// Write the JWK Set to this file (atomically, mode 0644) instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
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
    /// published. Without it and without --key-dir, a key is generated in memory at start.
    #[arg(long = "key-file", value_name = "PATH")]
    pub key_files: Vec<PathBuf>,

    /// Keep keys and their lifecycle state in this directory (create it with `signet keys
    /// init`). Without it (and without --key-file), keys live in memory and die with the
    /// process.
    #[arg(long, value_name = "DIR", conflicts_with = "key_files")]
    pub key_dir: Option<PathBuf>,

    /// With --key-dir: move removed keys into DIR/archive/ (mode 0700) instead of deleting
    /// them, so which key signed an old token can still be proven. They are neither published
    /// nor loaded again.
    #[arg(long, requires = "key_dir")]
    pub archive_removed_keys: bool,

    /// How long a new key is published before it signs [default: 2 x --refresh-hint].
    #[arg(long, value_parser = parse_duration)]
    pub publish_lead: Option<Duration>,

    /// Automatic rotation period; 0 disables automatic rotation [default: 30d; off, and any
    /// other value refused, with --key-file].
    #[arg(long, value_parser = parse_duration)]
    pub rotation_period: Option<Duration>,

    /// Algorithm of the in-memory key generated when neither --key-dir nor --key-file is
    /// given.
    #[arg(long, default_value = "ES256", value_parser = parse_algorithm)]
    pub generate_alg: Algorithm,

    /// RSA modulus size for a generated RS256 key: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048, value_parser = parse_rsa_bits)]
    pub rsa_bits: usize,

    /// Longest token lifetime this signer accepts and reports in Metadata (at least 600s).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub max_token_expiration: Duration,

    /// How often kube-apiserver should re-fetch the keys (FetchKeys refresh_hint_seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub refresh_hint: Duration,

    /// Admin socket for `signet keys ...` (mode 0600, owner only; never the --socket).
    /// Default: admin.sock beside --socket, i.e. /run/signet/admin.sock by default
    /// (`@NAME.admin` for an abstract --socket @NAME).
    #[arg(long, value_name = "PATH", env = "SIGNET_ADMIN_SOCKET")]
    pub admin_socket: Option<String>,

    /// After the last call in flight ends, keep polling the socket this long before the
    /// executor thread sleeps, so the next call of a burst is read without a wake-up (on a VM,
    /// waking a halted vCPU costs about as much as an empty call; 200us is also KVM's default
    /// halt-polling window). Costs at most this much of one core per idle gap; 0 disables
    /// it. At most 10ms.
    #[arg(long, default_value = "200us", value_parser = parse_duration)]
    pub busy_poll: Duration,

    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before signet exits.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Serve the OIDC discovery documents (/openid/v1/jwks, /.well-known/openid-configuration)
    /// and /healthz over plain HTTP on this address, e.g. 127.0.0.1:8080. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,

    /// The issuer named in the discovery document: kube-apiserver's first
    /// --service-account-issuer. An https URL without query or fragment. Required with
    /// --http-listen.
    #[arg(long, value_name = "URL", requires = "http_listen")]
    pub issuer: Option<String>,

    /// The jwks_uri named in the discovery document (kube-apiserver's
    /// --service-account-jwks-uri). An https URL. Default: <issuer>/openid/v1/jwks.
    #[arg(long, value_name = "URL", requires = "http_listen")]
    pub jwks_uri: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("token_source").required(true).args(["token", "token_file"])))]
pub struct VerifyArgs {
    /// Socket of the running signer, as given to `signet serve --socket`.
    #[arg(long, default_value = "/run/signet/signet.sock", env = "SIGNET_SOCKET")]
    pub socket: String,

    /// The token to check. Other users can see it in the process list: prefer --token-file.
    #[arg(long, value_name = "TOKEN", value_parser = parse_token)]
    pub token: Option<TokenArg>,

    /// A file holding the token, or `-` for standard input. Surrounding whitespace is ignored.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Require this audience in `aud` (repeatable: any one matches). Without it, `aud` is not
    /// checked.
    #[arg(long = "audience", value_name = "AUD")]
    pub audiences: Vec<String>,

    /// Require this `iss`.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// Check the signature and other claims of a token whose exp has passed, or that has none
    /// (a legacy Secret-based token), or whose nbf or iat has not come.
    #[arg(long)]
    pub allow_expired: bool,

    /// Anything else on the command line, refused without being shown: a token pasted
    /// without --token lands here, and clap's own "unexpected argument" error would print it.
    #[arg(hide = true, value_name = "UNEXPECTED", value_parser = parse_token)]
    pub unexpected: Vec<TokenArg>,
}

/// A token given on the command line. Its Debug form never shows it.
#[derive(Clone)]
pub struct TokenArg(zeroize::Zeroizing<String>);

impl TokenArg {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenArg(<redacted>)")
    }
}

fn parse_token(s: &str) -> Result<TokenArg, String> {
    Ok(TokenArg(zeroize::Zeroizing::new(s.trim().to_owned())))
}

/// A duration such as `24h`, `90m`, `3600s` or `1h30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let duration = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|err| format!("{err} (use e.g. 24h, 90m, 3600s)"))?,
    };
    if duration > MAX_DURATION {
        return Err(format!(
            "{s} is longer than the longest accepted duration, 100 years"
        ));
    }
    Ok(duration)
}

/// The longest duration a flag accepts. Durations are added to timestamps and to each other
/// (a rotation period to an activation time, twice the refresh hint as the publish lead), and
/// times are shown in RFC 3339, which ends with year 9999: a bound keeps all of that from
/// overflowing, and no signer setting needs more than a century (a year of 365.25 days, as
/// humantime counts `1y`).
const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// An RSA modulus size signet generates, checked when the flag is parsed, so that a command
/// refused for its size has created nothing (a key directory included).
fn parse_rsa_bits(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(bits @ (2048 | 3072 | 4096)) => Ok(bits),
        Ok(bits) if bits < 2048 => Err(format!(
            "{bits}-bit RSA keys are too small: choose 2048, 3072 or 4096"
        )),
        _ => Err(format!(
            "{s} is not an RSA key size signet generates: choose 2048, 3072 or 4096"
        )),
    }
}

fn parse_socket_address(s: &str) -> Result<SocketAddress, String> {
    SocketAddress::parse(s)
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
    fn durations_beyond_a_century_are_refused_not_overflowed() {
        assert_eq!(parse_duration("100y").unwrap(), MAX_DURATION);
        for long in ["101y", "10000y", "18446744073709551615"] {
            let err = parse_duration(long).unwrap_err();
            assert!(err.contains("100 years"), "{long}: {err}");
        }
    }

    #[test]
    fn rsa_sizes_are_checked_when_parsed() {
        for bits in ["2048", "3072", "4096"] {
            assert_eq!(
                parse_rsa_bits(bits).unwrap(),
                bits.parse::<usize>().unwrap()
            );
        }
        for bad in ["1000", "1024", "8192", "big"] {
            assert!(parse_rsa_bits(bad)
                .unwrap_err()
                .contains("2048, 3072 or 4096"));
        }
    }

    #[test]
    fn kids_may_start_with_a_hyphen() {
        let kid_of = |argv: &[&str]| match Cli::try_parse_from(argv).unwrap().command {
            Command::Keys(KeysArgs {
                command: KeysCommand::Remove(args),
            }) => (args.kid, args.force),
            Command::Keys(KeysArgs {
                command: KeysCommand::Retire(args),
            }) => (args.kid, false),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kid_of(&["signet", "keys", "retire", "-bX_1"]),
            ("-bX_1".to_owned(), false)
        );
        assert_eq!(
            kid_of(&["signet", "keys", "remove", "--aZ9", "--force"]),
            ("--aZ9".to_owned(), true)
        );
        assert_eq!(
            kid_of(&["signet", "keys", "remove", "--force", "-q"]),
            ("-q".to_owned(), true)
        );
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
