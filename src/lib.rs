//! signet: an external service-account token signer for kube-apiserver.
//!
//! kube-apiserver (1.32+, KEP-740) dials a Unix socket and calls the gRPC service
//! `ExternalJWTSigner` to sign service-account tokens and to fetch the keys that verify them.
//! The modules, from the wire inwards:
//!
//! - [`api`]: generated code for `v1` and `v1alpha1` and the thin adapter that serves both;
//! - [`server`]: the socket, peer checks, shutdown;
//! - [`signer`]: Sign/FetchKeys/Metadata in domain terms;
//! - [`keyring`]: the published key set and the active key, swapped atomically;
//! - [`jws`]: header, signing input, claims checks;
//! - [`keys`]: a key as an object (kid, algorithm, public key, sign), PEM loading, the provider;
//! - [`loadgen`]: `signet bench`, a load generator for any ExternalJWTSigner.

pub mod api;
pub mod cli;
pub mod config;
pub mod jws;
pub mod keyring;
pub mod keys;
pub mod loadgen;
pub mod logging;
pub mod server;
pub mod signer;
