//! Generates the gRPC code for both API packages from `proto/` without a `protoc` binary:
//! protox compiles the files (it embeds the well-known types), tonic-prost-build emits Rust.
//!
//! The `v1alpha1` messages are mapped onto the `v1` Rust types: the two packages are identical
//! on the wire, so one set of message types lets one implementation serve both services.
//!
//! `signet.admin.v1` (the admin socket's `KeyAdmin` service) is compiled in the same pass.

const MESSAGES: &[&str] = &[
    "SignJWTRequest",
    "SignJWTResponse",
    "FetchKeysRequest",
    "FetchKeysResponse",
    "Key",
    "MetadataRequest",
    "MetadataResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(
        ["v1/api.proto", "v1alpha1/api.proto", "admin/v1/admin.proto"],
        ["proto"],
    )?;
    let mut config = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A prepared FetchKeys snapshot clones cheaply when key bytes are reference-counted.
        .bytes(".v1.Key.key")
        // An import request carries a private key and a Sign request the raw claims: their
        // Debug is written by hand, redacted.
        .skip_debug([".signet.admin.v1.ImportRequest", ".v1.SignJWTRequest"]);
    for message in MESSAGES {
        let rust_name = rust_message_name(message);
        config = config.extern_path(
            format!(".v1alpha1.{message}"),
            format!("crate::api::v1::{rust_name}"),
        );
    }
    config.compile_fds(files)?;
    Ok(())
}

/// prost's type name for a proto message: `SignJWTRequest` becomes `SignJwtRequest`.
fn rust_message_name(message: &str) -> String {
    message.replace("JWT", "Jwt")
}
