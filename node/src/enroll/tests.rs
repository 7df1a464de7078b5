//! Enrollment: bundle checks, the stored file, the pool switch-over, and the refusals.

use std::net::SocketAddr;

use super::*;
use crate::store::test_support::{create_event, decl};
use crate::sync_driver::test_central::{Pki, SERVER_NAME, bundle_json};

const ADDR: &str = "127.0.0.1:7443";

fn central_id() -> NodeId {
    NodeSecretKey::from_bytes(&[0xce; 32]).node_id()
}

/// A data directory after `crvs-node init` (stand-alone pool filled).
async fn initialised() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&dir);
    crate::init(&config, None).await.unwrap();
    (dir, config)
}

fn config_for(dir: &tempfile::TempDir) -> Config {
    crate::config::ConfigFile {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn node_id(config: &Config) -> NodeId {
    crate::keys::load_key_file(&config.node_key_path())
        .unwrap()
        .node_id()
}

fn bundle_for(pki: &Pki, node: NodeId) -> String {
    let (pem, _) = pki.node_cert(node);
    bundle_json(
        node,
        central_id(),
        ADDR.parse::<SocketAddr>().unwrap(),
        SERVER_NAME,
        &pki.ca_pem,
        &pem,
    )
}

fn with(bundle: &str, field: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(bundle).unwrap();
    v[field] = value;
    v.to_string()
}

#[test]
fn bundle_checks() {
    let pki = Pki::new("CA");
    let node = NodeSecretKey::from_bytes(&[1; 32]).node_id();
    let good = bundle_for(&pki, node);
    let enrollment = Enrollment::parse(&good).unwrap();
    assert_eq!(enrollment.node_id(), node);
    assert_eq!(enrollment.central_id(), central_id());
    enrollment.check_for(node).unwrap();
    let other = NodeSecretKey::from_bytes(&[2; 32]).node_id();
    assert!(matches!(
        enrollment.check_for(other),
        Err(EnrollError::WrongNode { .. })
    ));

    let cases: [(&str, serde_json::Value, &str); 9] = [
        ("version", 2.into(), "version 2"),
        ("nodeId", "abc".into(), "nodeId"),
        ("centralId", "not hex".into(), "centralId"),
        ("locationId", "nowhere".into(), "locationId"),
        ("centralQuicAddr", "central".into(), "centralQuicAddr"),
        ("centralHttpUrl", "ftp://x".into(), "centralHttpUrl"),
        ("serverName", "not a name!".into(), "serverName"),
        (
            "caCertPem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            "caCertPem",
        ),
        ("nodeCertPem", "".into(), "nodeCertPem"),
    ];
    for (field, value, expected) in cases {
        let err = Enrollment::parse(&with(&good, field, value)).unwrap_err();
        assert!(err.to_string().contains(expected), "{field}: {err}");
    }
    // A host name is a valid address too (resolved when dialling).
    Enrollment::parse(&with(
        &good,
        "centralQuicAddr",
        "central.example.org:7443".into(),
    ))
    .unwrap();
    // Unknown fields are refused, so a typo is not silently ignored.
    assert!(Enrollment::parse(&with(&good, "extra", 1.into())).is_err());

    // A certificate for another key, or from another CA.
    let (foreign_pem, _) = pki.node_cert(other);
    let err = Enrollment::parse(&with(&good, "nodeCertPem", foreign_pem.into())).unwrap_err();
    assert!(err.to_string().contains("not issued for"), "{err}");
    let elsewhere = Pki::new("another CA");
    let (pem, _) = elsewhere.node_cert(node);
    let mixed = Enrollment::parse(&with(&good, "nodeCertPem", pem.into())).unwrap();
    assert!(
        mixed.check_for(node).is_err(),
        "a certificate from another CA is refused"
    );
}

#[tokio::test]
async fn enrolling_stores_the_bundle_and_turns_the_standalone_pool_off() {
    let (_dir, config) = initialised().await;
    assert!(config.standalone_pool());
    let pki = Pki::new("CA");
    let bundle = bundle_for(&pki, node_id(&config));
    let report = enroll(&config, &bundle).await.unwrap();
    assert!(!report.renewed);
    assert_eq!(
        report.discarded_pool_ids, 1000,
        "init filled the stand-alone pool"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(config.enrollment_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The next start sees the file: enrolled, and the pool is never filled locally again.
    let config = config.file.clone().validate().unwrap();
    assert!(config.enrollment.is_some());
    assert!(!config.standalone_pool());
    crate::init(&config, None).await.unwrap();
    let key = crate::keys::load_key_file(&config.node_key_path()).unwrap();
    let store = crate::open_store(&config, key).unwrap();
    assert_eq!(store.read(|r| r.pool_free()).await.unwrap(), 0);
    let none = store.write(|ctx| ctx.take_tracking_id()).await.unwrap();
    assert_eq!(none, None, "an enrolled node waits for central's lease");
    drop(store);

    // A new bundle from the same central (certificate renewal) replaces the file.
    let renewed = enroll(&config, &bundle).await.unwrap();
    assert!(renewed.renewed);
    // A bundle from another central is refused.
    let other_central = with(
        &bundle,
        "centralId",
        NodeSecretKey::from_bytes(&[0xcf; 32])
            .node_id()
            .to_string()
            .into(),
    );
    let err = enroll(&config, &other_central).await.unwrap_err();
    assert!(err.to_string().contains("already enrolled"), "{err}");
}

#[tokio::test]
async fn a_node_with_standalone_records_is_refused() {
    let (_dir, config) = initialised().await;
    {
        let key = crate::keys::load_key_file(&config.node_key_path()).unwrap();
        let store = crate::open_store(&config, key).unwrap();
        create_event(&store, "t1", decl(serde_json::json!({}))).await;
    }
    let pki = Pki::new("CA");
    let err = enroll(&config, &bundle_for(&pki, node_id(&config)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stand-alone mode"), "{err}");
    assert!(!config.enrollment_path().exists());
}

#[tokio::test]
async fn a_bundle_for_another_node_is_refused() {
    let (_dir, config) = initialised().await;
    let pki = Pki::new("CA");
    let other = NodeSecretKey::from_bytes(&[9; 32]).node_id();
    let err = enroll(&config, &bundle_for(&pki, other)).await.unwrap_err();
    assert!(err.to_string().contains("this node is"), "{err}");
    assert!(!config.enrollment_path().exists());
}
