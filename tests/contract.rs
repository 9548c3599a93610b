mod common;

#[tokio::test]
async fn smoke() {
    let signer = common::InProcessSigner::start(&[]).await;
    let mut clients = signer.clients().await;
    let keys = clients.fetch_keys(common::Api::V1).await.unwrap();
    let v = common::verifier::IndependentVerifier::from_fetch_keys(
        &keys,
        common::RECORDED_ISSUER,
        &["x"],
    )
    .unwrap();
    println!("{:?}", v.jwks);
}
