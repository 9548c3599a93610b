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
//! - [`jwks`]: the OIDC discovery documents (JWK Set, openid-configuration) for relying parties;
//! - [`jws`]: header, signing input, claims checks;
//! - [`keys`]: a key as an object (kid, algorithm, public key, sign), PEM loading, the provider;
//! - [`verify`]: `signet verify`, an operator's token check against a running signer;
//! - [`lifecycle`]: next → active → retired → removed, rotation policy and clock;
//! - [`backend`]: where keys are stored and signed (memory, directory), behind one trait;
//! - [`admin`]: the admin socket's `KeyAdmin` service and the `signet keys` client;
//! - [`loadgen`]: `signet bench`, a load generator for any ExternalJWTSigner;
//! - [`timestamp`]: times shown to operators, in RFC 3339, written even when out of range.

pub mod admin;
pub mod api;
pub mod backend;
mod busy_poll;
pub mod cli;
pub mod config;
pub mod jwks;
pub mod jws;
pub mod keyring;
pub mod keys;
pub mod lifecycle;
pub mod loadgen;
pub mod logging;
pub mod server;
pub mod signer;
pub mod timestamp;
pub mod verify;
