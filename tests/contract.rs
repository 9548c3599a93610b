//! The wire contract kube-apiserver enforces (spec §3–§4), checked for every algorithm and key
//! form over both `v1` and `v1alpha1`, with the claims a real kube-apiserver sent, verbatim.
//! Every token is verified by the independent verifier in `common::verifier`, fed only the
//! FetchKeys keys; altered tokens must fail it.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use der::Decode as _;
use serde_json::Value;

use common::verifier::{self, IndependentVerifier};
use common::{Api, InProcessSigner, RECORDED_ISSUER};
use signet::api::v1::FetchKeysResponse;

/// The algorithms kube-apiserver's `validateJWTHeader` allows.
const ALLOWED_ALGS: [&str; 4] = ["RS256", "ES256", "ES384", "ES512"];

/// protobuf `Timestamp.CheckValid` bounds: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
const MIN_VALID_SECONDS: i64 = -62_135_596_800;
const MAX_VALID_SECONDS: i64 = 253_402_300_799;

/// Every audience in the recorded claims.
fn recorded_audiences() -> Vec<String> {
    let mut audiences = BTreeSet::new();
    for case in common::recorded_claims() {
        let claims = decode_json(&case.claims);
        for aud in claims["aud"].as_array().expect("aud is an array") {
            audiences.insert(aud.as_str().unwrap().to_owned());
        }
    }
    audiences.into_iter().collect()
}

fn decode_json(segment: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|err| panic!("{segment:?} is not base64url without padding: {err}"));
    serde_json::from_slice(&bytes).expect("segment is JSON")
}

fn is_base64url_no_pad(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The FetchKeys rules of kube-apiserver's key cache (spec §4), plus what the keys must be.
fn check_fetch_keys(response: &FetchKeysResponse, expected_ders: &[Vec<u8>], started: SystemTime) {
    assert!(
        response.refresh_hint_seconds > 0,
        "refresh_hint_seconds must be > 0"
    );
    assert_eq!(
        response.refresh_hint_seconds, 60,
        "the default --refresh-hint"
    );
    assert!(!response.keys.is_empty(), "FetchKeys must never be empty");
    assert_eq!(response.keys.len(), expected_ders.len());

    let ts = response
        .data_timestamp
        .as_ref()
        .expect("data_timestamp is set");
    assert!(
        (MIN_VALID_SECONDS..=MAX_VALID_SECONDS).contains(&ts.seconds),
        "data_timestamp seconds {} outside years 0001..9999",
        ts.seconds
    );
    assert!(
        (0..1_000_000_000).contains(&ts.nanos),
        "data_timestamp nanos {} outside [0, 1e9)",
        ts.nanos
    );
    // The keys were loaded while the test ran: the timestamp says when, not some fixed value.
    let changed_at = UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos as u32);
    assert!(
        changed_at + Duration::from_secs(1) >= started && changed_at <= SystemTime::now(),
        "data_timestamp {changed_at:?} is not the time the keys were loaded"
    );

    let mut kids = BTreeSet::new();
    for (key, expected_der) in response.keys.iter().zip(expected_ders) {
        assert!(
            (1..=1024).contains(&key.key_id.len()),
            "key_id length {}",
            key.key_id.len()
        );
        assert!(kids.insert(key.key_id.clone()), "kid published twice");
        assert!(!key.key.is_empty());
        spki::SubjectPublicKeyInfoRef::from_der(&key.key).expect("key is PKIX DER");
        verifier::algorithm_of_spki(&key.key).expect("a key type kube-apiserver can publish");
        assert_eq!(
            key.key.as_ref(),
            expected_der.as_slice(),
            "published key differs from the fixture's public key (or the order changed)"
        );
        assert_eq!(
            key.key_id,
            common::expected_kid(&key.key),
            "kid must be base64url(sha256(PKIX DER)), kube-apiserver's rule for its own keys"
        );
        assert!(
            !key.exclude_from_oidc_discovery,
            "key files are published for OIDC discovery"
        );
    }
}

/// Checks one Sign response as kube-apiserver's plugin does, then verifies the token it makes.
fn check_signed_token(
    header: &str,
    signature: &str,
    claims: &str,
    keys: &FetchKeysResponse,
    signing_alg: &str,
    verifier: &IndependentVerifier,
) {
    // Header: base64url without padding (Go RawURLEncoding) of exactly {alg, kid, typ}.
    assert!(!header.is_empty());
    assert!(!header.contains('='), "header carries padding");
    assert!(is_base64url_no_pad(header), "header is not base64url");
    let header_json = decode_json(header);
    let fields: BTreeSet<&str> = header_json
        .as_object()
        .expect("header is a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, BTreeSet::from(["alg", "kid", "typ"]));
    assert_eq!(header_json["typ"], "JWT");
    let kid = header_json["kid"].as_str().expect("kid is a string");
    assert!((1..=1024).contains(&kid.len()), "kid length {}", kid.len());
    let alg = header_json["alg"].as_str().expect("alg is a string");
    assert!(ALLOWED_ALGS.contains(&alg), "alg {alg} not allowed");
    assert_eq!(alg, signing_alg);

    // The kid is published and not excluded (else kube-apiserver refuses to issue the token).
    let published = keys
        .keys
        .iter()
        .find(|key| key.key_id == kid)
        .expect("signing kid is in FetchKeys");
    assert!(!published.exclude_from_oidc_discovery);
    assert_eq!(
        verifier::algorithm_of_spki(&published.key).unwrap(),
        alg,
        "alg must match the published key's type"
    );

    // Signature: base64url without padding; ECDSA in raw R||S of the fixed width.
    assert!(!signature.is_empty());
    assert!(!signature.contains('='), "signature carries padding");
    assert!(is_base64url_no_pad(signature));
    let raw = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url signature");
    match alg {
        "ES256" => assert_eq!(raw.len(), 64),
        "ES384" => assert_eq!(raw.len(), 96),
        "ES512" => assert_eq!(raw.len(), 132),
        "RS256" => {
            use rsa::traits::PublicKeyParts as _;
            use spki::DecodePublicKey as _;
            let key = rsa::RsaPublicKey::from_public_key_der(&published.key).unwrap();
            assert_eq!(raw.len(), key.size(), "RSA signature is modulus-sized");
        }
        _ => unreachable!(),
    }

    // The token kube-apiserver assembles verifies independently and carries its own claims.
    let token = verifier::assemble(header, claims, signature);
    let verified = verifier
        .verify(&token)
        .unwrap_or_else(|err| panic!("{alg} token does not verify: {err}"));
    assert_eq!(verified.claims, decode_json(claims));
    assert_eq!(verified.header, header_json);

    let forged = verifier::tamper_signature(&token);
    assert!(
        verifier.verify(&forged).is_err(),
        "{alg}: a token with an altered signature verified"
    );
    let forged = verifier::tamper_payload(&token);
    assert!(
        verifier.verify(&forged).is_err(),
        "{alg}: a token with an altered payload verified"
    );
}

/// The whole contract for a signer started with `key_files` (the first signs).
async fn check_contract(key_files: &[&str], signing_alg: &str) {
    let expected_ders: Vec<Vec<u8>> = key_files
        .iter()
        .map(|name| common::fixture_public_key_der(&common::key_path(name)))
        .collect();
    let paths: Vec<String> = key_files
        .iter()
        .map(|name| common::key_path(name).to_str().unwrap().to_owned())
        .collect();
    let mut flags = Vec::new();
    for path in &paths {
        flags.extend(["--key-file", path.as_str()]);
    }

    let started = SystemTime::now();
    let signer = InProcessSigner::start(&flags).await;
    let mut clients = signer.clients().await;
    let audiences = recorded_audiences();
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let cases = common::recorded_claims();

    let mut first_timestamp = None;
    for api in Api::BOTH {
        let metadata = clients.metadata(api).await.expect("Metadata");
        assert!(metadata.max_token_expiration_seconds >= 600);
        assert_eq!(metadata.max_token_expiration_seconds, 86_400, "default 24h");

        let keys = clients.fetch_keys(api).await.expect("FetchKeys");
        check_fetch_keys(&keys, &expected_ders, started);
        // Stable while the keys do not change: across calls and across both API versions.
        let again = clients.fetch_keys(api).await.expect("FetchKeys again");
        assert_eq!(again, keys, "FetchKeys changed while the keys did not");
        let first = first_timestamp.get_or_insert(keys.data_timestamp);
        assert_eq!(*first, keys.data_timestamp);

        let verifier = IndependentVerifier::from_fetch_keys(&keys, RECORDED_ISSUER, &audiences)
            .expect("the published keys make a JWK set");
        assert_eq!(verifier.jwks.keys.len(), key_files.len());
        for case in &cases {
            let signed = clients
                .sign(api, &case.claims)
                .await
                .unwrap_or_else(|status| panic!("Sign {} over {api:?}: {status:?}", case.name));
            check_signed_token(
                &signed.header,
                &signed.signature,
                &case.claims,
                &keys,
                signing_alg,
                &verifier,
            );
            assert_eq!(
                decode_json(&signed.header)["kid"],
                keys.keys[0].key_id,
                "the first key file signs"
            );
        }
    }
    signer.stop().await.expect("clean stop");
}

#[tokio::test]
async fn es256_sec1_with_ec_parameters_block() {
    check_contract(&["test-ec256-sec1.pem"], "ES256").await;
}

#[tokio::test]
async fn es256_pkcs8() {
    check_contract(&["test-ec256-pkcs8.pem"], "ES256").await;
}

#[tokio::test]
async fn es384_sec1() {
    check_contract(&["test-ec384-sec1.pem"], "ES384").await;
}

#[cfg(feature = "aws-lc-rs")]
#[tokio::test]
async fn es512_pkcs8() {
    check_contract(&["test-ec521-pkcs8.pem"], "ES512").await;
}

#[cfg(feature = "aws-lc-rs")]
#[tokio::test]
async fn es512_sec1() {
    check_contract(&["test-ec521-sec1.pem"], "ES512").await;
}

/// On the ring build, a P-521 key is refused with a message that says why.
#[cfg(not(feature = "aws-lc-rs"))]
#[tokio::test]
async fn es512_is_refused_on_the_ring_provider() {
    for name in ["test-ec521-pkcs8.pem", "test-ec521-sec1.pem"] {
        let path = common::key_path(name);
        let err = InProcessSigner::try_start(&["--key-file", path.to_str().unwrap()])
            .await
            .expect_err("P-521 must not load on ring");
        assert!(
            err.contains("not supported with the ring provider"),
            "unexpected error: {err}"
        );
        assert!(err.contains(name), "error does not name the file: {err}");
    }
}

#[tokio::test]
async fn rs256_2048_pkcs1_as_kubeadm_writes_it() {
    check_contract(&["test-rsa2048-pkcs1.pem"], "RS256").await;
}

#[tokio::test]
async fn rs256_3072_pkcs8() {
    check_contract(&["test-rsa3072-pkcs8.pem"], "RS256").await;
}

#[tokio::test]
async fn rs256_4096_pkcs1() {
    check_contract(&["test-rsa4096-pkcs1.pem"], "RS256").await;
}

/// Several key files: all are published in the given order, the first signs.
#[tokio::test]
async fn several_key_files_publish_all_and_the_first_signs() {
    check_contract(
        &[
            "test-ec384-sec1.pem",
            "test-rsa2048-pkcs1.pem",
            "test-ec256-pkcs8.pem",
        ],
        "ES384",
    )
    .await;
}

/// Key files as operators have them: a certificate and comment lines before the key (a
/// cert+key bundle), and Windows line endings. The published key is still the key's own.
#[tokio::test]
async fn key_files_with_other_pem_blocks_or_crlf_line_endings_load() {
    let bundle = common::key_path("test-ec256-pkcs8-with-cert.pem");
    let dir = tempfile::tempdir().unwrap();
    let crlf = dir.path().join("sa-crlf.key");
    let original = common::key_path("test-rsa2048-pkcs1.pem");
    let text = std::fs::read_to_string(&original).unwrap();
    std::fs::write(&crlf, text.replace('\n', "\r\n")).unwrap();

    for (path, same_key_as, alg) in [
        (bundle, common::key_path("test-ec256-pkcs8.pem"), "ES256"),
        (crlf, original, "RS256"),
    ] {
        let signer = InProcessSigner::start(&["--key-file", path.to_str().unwrap()]).await;
        let mut clients = signer.clients().await;
        let keys = clients.fetch_keys(Api::V1).await.unwrap();
        check_fetch_keys(
            &keys,
            &[common::fixture_public_key_der(&same_key_as)],
            SystemTime::now() - Duration::from_secs(60),
        );
        let audiences = recorded_audiences();
        let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
        let verifier =
            IndependentVerifier::from_fetch_keys(&keys, RECORDED_ISSUER, &audiences).unwrap();
        let case = &common::recorded_claims()[0];
        let signed = clients.sign(Api::V1, &case.claims).await.unwrap();
        check_signed_token(
            &signed.header,
            &signed.signature,
            &case.claims,
            &keys,
            alg,
            &verifier,
        );
    }
}

/// The generated in-memory default (no key options): one ES256 key, and the contract holds.
/// The claims built into `signet bench` and the benchmarks' fixture are copies of a recorded
/// kube-apiserver request: they must not drift from it.
#[test]
fn embedded_claims_are_a_recorded_request_verbatim() {
    let recorded = common::recorded_claims()
        .into_iter()
        .find(|case| case.name == "pod-bound-extended-to-signer-max")
        .expect("the recorded claims hold pod-bound-extended-to-signer-max")
        .claims;
    assert_eq!(signet::loadgen::DEFAULT_CLAIMS, recorded);
    let fixture = common::repo_root().join("benches/fixtures/apiserver-claims-pod-bound.txt");
    assert_eq!(std::fs::read_to_string(fixture).unwrap(), recorded);
}

#[tokio::test]
async fn in_memory_default_is_es256_and_signs() {
    check_generated(&[], "ES256").await;
}

#[tokio::test]
async fn in_memory_es384_with_generate_alg() {
    check_generated(&["--generate-alg", "ES384"], "ES384").await;
}

#[cfg(feature = "aws-lc-rs")]
#[tokio::test]
async fn in_memory_es512_with_generate_alg() {
    check_generated(&["--generate-alg", "ES512"], "ES512").await;
}

#[cfg(not(feature = "aws-lc-rs"))]
#[tokio::test]
async fn in_memory_es512_is_refused_on_the_ring_provider() {
    let err = InProcessSigner::try_start(&["--generate-alg", "ES512"])
        .await
        .expect_err("P-521 generation must fail on ring");
    assert!(
        err.contains("not supported with the ring provider"),
        "unexpected error: {err}"
    );
}

async fn check_generated(flags: &[&str], alg: &str) {
    let started = SystemTime::now();
    let signer = InProcessSigner::start(flags).await;
    let mut clients = signer.clients().await;
    let audiences = recorded_audiences();
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let case = &common::recorded_claims()[0];
    // A generated key has no file to compare with: each package must publish the key the
    // first one published (and `check_fetch_keys` checks its kid against its DER).
    let mut generated: Option<Vec<u8>> = None;
    for api in Api::BOTH {
        let keys = clients.fetch_keys(api).await.expect("FetchKeys");
        assert_eq!(keys.keys.len(), 1, "one generated key");
        let der = generated
            .get_or_insert_with(|| keys.keys[0].key.to_vec())
            .clone();
        check_fetch_keys(&keys, &[der], started);
        let verifier =
            IndependentVerifier::from_fetch_keys(&keys, RECORDED_ISSUER, &audiences).unwrap();
        let signed = clients.sign(api, &case.claims).await.expect("Sign");
        check_signed_token(
            &signed.header,
            &signed.signature,
            &case.claims,
            &keys,
            alg,
            &verifier,
        );
    }
}

/// Claims longer than a real token's, around the sizes where the Sign path's stack buffers
/// (2 KiB for the decoded claims and for the signing input) give way to the heap, and near the
/// 64 KiB limit: every one signs, and the token verifies independently, on every algorithm.
#[tokio::test]
async fn claims_past_the_sign_paths_stack_buffers_sign_and_verify() {
    let recorded = &common::recorded_claims()[0];
    let mut json = decode_json(&recorded.claims);
    let base_len = serde_json::to_vec(&json).unwrap().len();
    let audiences = recorded_audiences();
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let mut algs = vec![
        ("ES256", "test-ec256-pkcs8.pem"),
        ("RS256", "test-rsa2048-pkcs1.pem"),
    ];
    if cfg!(feature = "aws-lc-rs") {
        algs.push(("ES512", "test-ec521-pkcs8.pem"));
    }
    for (alg, key_file) in algs {
        let path = common::key_path(key_file);
        let signer = InProcessSigner::start(&["--key-file", path.to_str().unwrap()]).await;
        let mut clients = signer.clients().await;
        let keys = clients.fetch_keys(Api::V1).await.expect("FetchKeys");
        let verifier =
            IndependentVerifier::from_fetch_keys(&keys, RECORDED_ISSUER, &audiences).unwrap();
        // JSON bytes: a signing input (header, '.', base64 claims) just under and over 2048
        // bytes (1,400 and 1,500), base64 claims of exactly 2048 characters (1,536), decoded
        // claims just under and over 2048 bytes (2,040 and 2,056), and claims of exactly the
        // 64 KiB limit (48 KiB of JSON).
        for json_len in [1400, 1500, 1536, 2040, 2056, 48 * 1024] {
            let pad = json_len - base_len - r#","pad":"""#.len();
            json["pad"] = Value::String("p".repeat(pad));
            let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap());
            assert_eq!(URL_SAFE_NO_PAD.decode(&claims).unwrap().len(), json_len);
            let signed = clients
                .sign(Api::V1, &claims)
                .await
                .unwrap_or_else(|status| panic!("{alg}, {json_len} bytes: {status:?}"));
            check_signed_token(
                &signed.header,
                &signed.signature,
                &claims,
                &keys,
                alg,
                &verifier,
            );
        }
        signer.stop().await.expect("clean stop");
    }
}

/// Metadata and FetchKeys report exactly what the flags say; 600 s is the smallest maximum.
#[tokio::test]
async fn metadata_and_refresh_hint_follow_the_flags() {
    for (flags, max, hint) in [
        (&["--max-token-expiration", "600s"][..], 600, 60),
        (
            &["--max-token-expiration", "90m", "--refresh-hint", "5s"][..],
            5_400,
            5,
        ),
        (
            &["--max-token-expiration", "48h", "--refresh-hint", "1h"][..],
            172_800,
            3_600,
        ),
    ] {
        let signer = InProcessSigner::start(flags).await;
        let mut clients = signer.clients().await;
        for api in Api::BOTH {
            let metadata = clients.metadata(api).await.unwrap();
            assert_eq!(metadata.max_token_expiration_seconds, max, "{flags:?}");
            let keys = clients.fetch_keys(api).await.unwrap();
            assert_eq!(keys.refresh_hint_seconds, hint, "{flags:?}");
        }
    }
    let err = InProcessSigner::try_start(&["--max-token-expiration", "599s"])
        .await
        .expect_err("599 s is below what kube-apiserver accepts");
    assert!(err.contains("600"), "{err}");
}

/// Many Signs in flight at once, over both packages and several connections, as a busy
/// apiserver sends them: every token verifies, and each carries its own claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signs_all_verify() {
    let signer = InProcessSigner::start(&[
        "--key-file",
        common::key_path("test-rsa2048-pkcs1.pem").to_str().unwrap(),
    ])
    .await;
    let audiences = recorded_audiences();
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let mut first = signer.clients().await;
    let keys = first.fetch_keys(Api::V1).await.unwrap();
    let verifier =
        IndependentVerifier::from_fetch_keys(&keys, RECORDED_ISSUER, &audiences).unwrap();
    let connections = [first, signer.clients().await, signer.clients().await];
    let cases = common::recorded_claims();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..96 {
        let mut clients = connections[i % connections.len()].clone();
        let claims = cases[i % cases.len()].claims.clone();
        let api = Api::BOTH[i % 2];
        tasks.spawn(async move {
            let mut request = tonic::Request::new(signet::api::v1::SignJwtRequest {
                claims: claims.clone(),
            });
            // kube-apiserver always sends a deadline (grpc-timeout).
            request.set_timeout(Duration::from_secs(30));
            let signed = match api {
                Api::V1 => clients.v1.sign(request).await,
                Api::V1Alpha1 => clients.v1alpha1.sign(request).await,
            }
            .expect("Sign")
            .into_inner();
            verifier::assemble(&signed.header, &claims, &signed.signature)
        });
    }
    let mut verified = 0;
    while let Some(token) = tasks.join_next().await {
        let token = token.expect("task");
        verifier
            .verify(&token)
            .unwrap_or_else(|err| panic!("{err}"));
        verified += 1;
    }
    assert_eq!(verified, 96);
}

/// A token signed by one signet does not verify against another's keys: the verifier really
/// looks at the key, not only at the kid or the format.
#[tokio::test]
async fn a_token_does_not_verify_under_another_signers_keys() {
    let audiences = recorded_audiences();
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let case = &common::recorded_claims()[0];
    let a = InProcessSigner::start(&[]).await;
    let b = InProcessSigner::start(&[]).await;
    let mut a_clients = a.clients().await;
    let mut b_clients = b.clients().await;
    let signed = a_clients.sign(Api::V1, &case.claims).await.unwrap();
    let token = verifier::assemble(&signed.header, &case.claims, &signed.signature);

    let mut b_keys = b_clients.fetch_keys(Api::V1).await.unwrap();
    let b_verifier =
        IndependentVerifier::from_fetch_keys(&b_keys, RECORDED_ISSUER, &audiences).unwrap();
    assert!(b_verifier.verify(&token).is_err(), "unknown kid accepted");
    // Even under A's kid, B's key must not verify A's signature.
    let a_keys = a_clients.fetch_keys(Api::V1).await.unwrap();
    b_keys.keys[0].key_id = a_keys.keys[0].key_id.clone();
    let b_verifier =
        IndependentVerifier::from_fetch_keys(&b_keys, RECORDED_ISSUER, &audiences).unwrap();
    assert!(b_verifier.verify(&token).is_err(), "wrong key accepted");
}

/// The wire itself, typed from the spec's §2 table (package names, method paths, field numbers)
/// rather than from signet's generated code, for both packages.
mod wire {
    use super::*;
    use tonic::codegen::http::uri::PathAndQuery;

    #[derive(Clone, PartialEq, prost::Message)]
    struct SignJwtRequest {
        #[prost(string, tag = "1")]
        claims: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct SignJwtResponse {
        #[prost(string, tag = "1")]
        header: String,
        #[prost(string, tag = "2")]
        signature: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Empty {}
    #[derive(Clone, PartialEq, prost::Message)]
    struct Key {
        #[prost(string, tag = "1")]
        key_id: String,
        #[prost(bytes = "vec", tag = "2")]
        key: Vec<u8>,
        #[prost(bool, tag = "3")]
        exclude_from_oidc_discovery: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct FetchKeysResponse {
        #[prost(message, repeated, tag = "1")]
        keys: Vec<Key>,
        #[prost(message, optional, tag = "2")]
        data_timestamp: Option<prost_types::Timestamp>,
        #[prost(int64, tag = "3")]
        refresh_hint_seconds: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct MetadataResponse {
        #[prost(int64, tag = "1")]
        max_token_expiration_seconds: i64,
    }

    async fn call<Req, Resp>(
        channel: tonic::transport::Channel,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(
            tonic::Request::new(request),
            PathAndQuery::from_static(path),
            codec,
        )
        .await
        .map(tonic::Response::into_inner)
    }

    #[tokio::test]
    async fn both_packages_answer_on_the_spec_method_paths_with_the_spec_field_numbers() {
        let signer = InProcessSigner::start(&[]).await;
        let channel = common::channel_to_path(&signer.socket).await;
        let case = &common::recorded_claims()[0];
        let audiences = recorded_audiences();
        let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();

        for package in ["v1", "v1alpha1"] {
            let path = |method: &str| -> &'static str {
                Box::leak(format!("/{package}.ExternalJWTSigner/{method}").into_boxed_str())
            };
            let metadata: MetadataResponse = call(channel.clone(), path("Metadata"), Empty {})
                .await
                .unwrap_or_else(|status| panic!("{package} Metadata: {status:?}"));
            assert_eq!(metadata.max_token_expiration_seconds, 86_400);

            let keys: FetchKeysResponse = call(channel.clone(), path("FetchKeys"), Empty {})
                .await
                .unwrap_or_else(|status| panic!("{package} FetchKeys: {status:?}"));
            assert_eq!(keys.keys.len(), 1);
            assert!(keys.refresh_hint_seconds > 0);
            assert!(keys.data_timestamp.is_some());

            let signed: SignJwtResponse = call(
                channel.clone(),
                path("Sign"),
                SignJwtRequest {
                    claims: case.claims.clone(),
                },
            )
            .await
            .unwrap_or_else(|status| panic!("{package} Sign: {status:?}"));

            // Re-express the spec-typed keys in signet's type only to feed the verifier.
            let as_signet = signet::api::v1::FetchKeysResponse {
                keys: keys
                    .keys
                    .iter()
                    .map(|key| signet::api::v1::Key {
                        key_id: key.key_id.clone(),
                        key: key.key.clone().into(),
                        exclude_from_oidc_discovery: key.exclude_from_oidc_discovery,
                    })
                    .collect(),
                data_timestamp: keys.data_timestamp,
                refresh_hint_seconds: keys.refresh_hint_seconds,
            };
            let verifier =
                IndependentVerifier::from_fetch_keys(&as_signet, RECORDED_ISSUER, &audiences)
                    .unwrap();
            let token = verifier::assemble(&signed.header, &case.claims, &signed.signature);
            verifier
                .verify(&token)
                .unwrap_or_else(|err| panic!("{package}: {err}"));
        }

        // A package the apiserver never calls is not served.
        let status = call::<Empty, MetadataResponse>(
            channel.clone(),
            "/v2.ExternalJWTSigner/Metadata",
            Empty {},
        )
        .await
        .expect_err("unknown package");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
}

#[tokio::test]
async fn a_key_excluded_from_oidc_discovery_is_flagged_on_the_wire_and_never_signs() {
    use signet::lifecycle::offline;
    // A store whose old key is retired, then marked excluded by hand (signet never sets the
    // flag itself; `state.json` is where an operator would).
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("keys");
    // The offline commands run their own runtime: off this one.
    let (old, active) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let old = offline::init(&store, signet::keys::Algorithm::ES256, 2048).unwrap();
            let active = offline::rotate(&store, None, 2048, true).unwrap();
            (old.kid, active.kid)
        })
        .await
        .unwrap()
    };
    let state_path = store.join(signet::lifecycle::STATE_FILE);
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    for key in state["keys"].as_array_mut().unwrap() {
        if key["kid"] == old.as_str() {
            key["exclude_from_oidc_discovery"] = Value::Bool(true);
        }
    }
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    let signer = InProcessSigner::start(&["--key-dir", store.to_str().unwrap()]).await;
    let mut clients = signer.clients().await;
    let claims = &common::recorded_claims()[0].claims;
    for api in Api::BOTH {
        let keys = clients.fetch_keys(api).await.expect("FetchKeys");
        let flags: Vec<(String, bool)> = keys
            .keys
            .iter()
            .map(|key| (key.key_id.clone(), key.exclude_from_oidc_discovery))
            .collect();
        assert_eq!(
            flags,
            vec![(old.clone(), true), (active.clone(), false)],
            "{api:?}"
        );
        let signed = clients.sign(api, claims).await.expect("Sign");
        assert_eq!(
            decode_json(&signed.header)["kid"],
            active.as_str(),
            "{api:?}"
        );
    }
    signer.stop().await.expect("clean stop");
}
