//! Migration from kube-apiserver's in-process signing: a token the apiserver signed with its
//! `sa.key` before the switch must keep verifying against signet's FetchKeys after
//! `signet keys import --file sa.key --verify-only`, under the same kid.
//!
//! The "apiserver" here is an independent implementation: jsonwebtoken signs real recorded
//! claims with the PKCS#1 `sa.key` (the form kubeadm writes), under the in-tree kid computed
//! with RustCrypto; jsonwebtoken verifies with a key built only from FetchKeys' DER.

mod admin_support;
mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use admin_support::{header_kid, published_kids, AdminServer};
use common::RECORDED_ISSUER;

/// PKIX DER as the PEM a JWT library reads (`PUBLIC KEY`).
fn spki_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

#[tokio::test]
async fn a_token_signed_with_sa_key_verifies_after_import_under_the_same_kid() {
    let sa_key_pem =
        std::fs::read(common::key_path("test-rsa2048-pkcs1.pem")).expect("read sa.key");
    // kube-apiserver's kid for its own key: base64url(SHA-256(PKIX DER)).
    let kid = common::expected_kid(&common::fixture_public_key_der(&common::key_path(
        "test-rsa2048-pkcs1.pem",
    )));

    // Before the switch: the "apiserver" signs real claims with sa.key.
    let recorded = &common::recorded_claims()[0];
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&recorded.claims).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.clone());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(&sa_key_pem).expect("jsonwebtoken reads the PKCS#1 sa.key"),
    )
    .expect("sign with sa.key");

    // The switch: signet runs with its own key, then imports sa.key for verification.
    let server = AdminServer::start();
    // kube-apiserver's sa.key, mode 0600 as kubeadm writes it.
    let sa_key = server.private_key_copy("test-rsa2048-pkcs1.pem");
    assert!(!published_kids(&server.fetch_keys().await).contains(&kid));
    let imported = server.keys(&[
        "import",
        "--file",
        sa_key.to_str().unwrap(),
        "--verify-only",
    ]);
    assert!(imported.ok().contains(&kid), "{}", imported.stdout);

    // After: the old token verifies with the key FetchKeys publishes under its kid.
    let fetched = server.fetch_keys().await;
    let published = fetched
        .keys
        .iter()
        .find(|key| key.key_id == kid)
        .unwrap_or_else(|| panic!("FetchKeys does not publish kid {kid}: {fetched:?}"));
    let decoding = DecodingKey::from_rsa_pem(spki_pem(&published.key).as_bytes())
        .expect("jsonwebtoken reads the published key");
    let mut validation = Validation::new(Algorithm::RS256);
    // The recorded claims expired long ago; signature, issuer and audience are what matter.
    validation.validate_exp = false;
    validation.set_issuer(&[RECORDED_ISSUER]);
    let audiences: Vec<String> = claims["aud"]
        .as_array()
        .unwrap()
        .iter()
        .map(|aud| aud.as_str().unwrap().to_owned())
        .collect();
    validation.set_audience(&audiences);
    let verified = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
        .expect("the pre-switch token verifies against signet's FetchKeys");
    assert_eq!(verified.header.kid.as_deref(), Some(kid.as_str()));
    assert_eq!(verified.claims, claims);

    // --verify-only: published, never signing.
    let keys = server.list();
    let entry = keys.iter().find(|key| key["kid"] == kid.as_str()).unwrap();
    assert_eq!(entry["verify_only"], true);
    assert_ne!(entry["state"], "active");
    assert_ne!(header_kid(&server.sign_token().await), kid);
    server
        .keys(&["promote", "--force"])
        .refused(1, "there is no next key to promote");

    // The JWKS export agrees with FetchKeys' discovery flag for the imported key.
    let jwks: serde_json::Value = serde_json::from_str(server.keys(&["export-jwks"]).ok()).unwrap();
    let in_jwks = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|jwk| jwk["kid"] == kid.as_str());
    assert_eq!(in_jwks, !published.exclude_from_oidc_discovery);
}
