//! TLS: the API over HTTPS only (`[http] tls_cert`, `tls_key`), MQTT over TLS on the embedded
//! broker's second listener (`[broker] tls_listen`), and mutual TLS for devices
//! (`broker.tls_client_ca`: the certificate must name the client id). Certificates are made
//! for each test: a CA for the gateway's certificates, another for the devices'.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Gateway, INVENTORY, bin_telemetry, eventually, token_in, topic};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde_json::{Value, json};
use streetgate_gateway::app;
use streetgate_gateway::auth::{FIRST_ADMIN, Role};
use streetgate_gateway::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A certificate authority that signs certificates into PEM files of a directory.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM text.
struct Signed {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate with this common name (if any), these SANs and this usage.
    fn sign(&self, cn: Option<&str>, sans: &[SanType], usage: ExtendedKeyUsagePurpose) -> Signed {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans.to_vec();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Signed {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// The gateway's certificate: for localhost and 127.0.0.1.
    fn server(&self) -> Signed {
        self.sign(
            Some("streetgate test gateway"),
            &[
                SanType::DnsName("localhost".try_into().expect("dns name")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A device's certificate with `cn` as its common name.
    fn device(&self, cn: &str) -> Signed {
        self.sign(Some(cn), &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The gateway's CA (whose certificate clients trust), its certificate and key in `dir`.
struct Pki {
    ca: Ca,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let ca = Ca::new("streetgate test CA");
        let server = ca.server();
        let pki = Self {
            ca,
            cert: dir.join("gateway.crt"),
            key: dir.join("gateway.key"),
        };
        std::fs::write(&pki.cert, server.cert).expect("write certificate");
        std::fs::write(&pki.key, server.key).expect("write key");
        pki
    }
}

/// A reqwest client trusting `ca_pem` (and nothing else), sending `token` if given.
fn https_client(ca_pem: &str, token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A gateway serving HTTPS (its store and certificates in a temp dir).
async fn start_https(tweak: impl FnOnce(&mut Config)) -> (app::Running, Pki, tempfile::TempDir) {
    common::init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path());
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.broker.listen = "127.0.0.1:0".parse().expect("addr");
    config.store.path = dir.path().join("data/streetgate.db");
    config.http.tls_cert = Some(pki.cert.clone());
    config.http.tls_key = Some(pki.key.clone());
    tweak(&mut config);
    let running = app::start(config).await.expect("gateway starts");
    (running, pki, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_and_plain_http_is_refused() {
    let (running, pki, _dir) = start_https(|_| {}).await;
    let port = running.http_addr.port();
    let token = token_in(
        running.state.store.as_ref(),
        FIRST_ADMIN,
        Role::Admin,
        None,
        None,
    )
    .await;
    let client = https_client(&pki.ca.cert_pem, Some(&token));
    for host in ["localhost", "127.0.0.1"] {
        let resp = client
            .get(format!("https://{host}:{port}/api/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTPS to {host}: {e}"));
        assert_eq!(resp.status(), 200);
        let health: Value = resp.json().await.expect("health JSON");
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["mqtt"]["connected"], true, "{health}");
    }

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = plain
        .get(format!("http://127.0.0.1:{port}/api/health"))
        .send()
        .await;
    assert!(
        r.is_err(),
        "plain HTTP answered: {:?}",
        r.map(|r| r.status())
    );
    // A client that does not trust the gateway's CA refuses it.
    let r = plain
        .get(format!("https://127.0.0.1:{port}/api/health"))
        .send()
        .await;
    assert!(r.is_err(), "an unknown CA was trusted");

    // The audit log still records the peer address of an HTTPS client.
    let r = client
        .post(format!("https://127.0.0.1:{port}/api/devices/import"))
        .header("content-type", "text/csv")
        .body(INVENTORY)
        .send()
        .await
        .expect("import over HTTPS");
    assert_eq!(r.status(), 200);
    let audit: Value = client
        .get(format!("https://127.0.0.1:{port}/api/audit?method=post"))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("audit JSON");
    let peer = audit["entries"][0]["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "{audit}");

    // With HTTPS the session cookie is Secure, though auth.cookie_secure is not set.
    let password = running
        .first_admin_password
        .clone()
        .expect("first administrator's password");
    let r = https_client(&pki.ca.cert_pem, None)
        .post(format!("https://127.0.0.1:{port}/api/session"))
        .json(&json!({ "username": FIRST_ADMIN, "password": password }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    running.shutdown().await.expect("shutdown");
}

/// Connect to `addr` and send the start of a TLS record one byte every `every`, never
/// finishing it; how long until the server closed the connection.
async fn stalled_handshake(addr: std::net::SocketAddr, every: Duration) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // A handshake record announcing 512 bytes, of which a few arrive.
    let bytes = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut buf = [0u8; 64];
    for b in bytes.iter().cycle().take(200) {
        if s.write_all(&[*b]).await.is_err() {
            return started.elapsed();
        }
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            // An alert before closing.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    panic!(
        "a stalled handshake was still open after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_finishes_is_closed_and_frees_its_slot() {
    let (running, pki, _dir) = start_https(|c| {
        c.http.max_connections = 2;
        c.http.idle_timeout_ms = 600;
    })
    .await;
    let addr = running.http_addr;
    // Two clients take both slots, each sending a byte every 200 ms: never idle, never done.
    let stalled: Vec<_> = (0..2)
        .map(|_| tokio::spawn(stalled_handshake(addr, Duration::from_millis(200))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The API answers once the handshake timeout has closed them.
    let started = Instant::now();
    let r = https_client(&pki.ca.cert_pem, None)
        .get(format!("https://localhost:{}/api/health", addr.port()))
        .send()
        .await
        .expect("health answered after the stalled handshakes were closed");
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for s in stalled {
        let open_for = s.await.expect("stalled client");
        assert!(
            open_for >= Duration::from_millis(500) && open_for < Duration::from_secs(3),
            "a stalled handshake was closed after {open_for:?} (http.idle_timeout_ms = 600)"
        );
    }
    running.shutdown().await.expect("shutdown");
}

/// MQTT options for a client of the TLS listener at `addr` that trusts `ca_pem`, presenting
/// `client_cert` if given.
fn tls_options(
    addr: std::net::SocketAddr,
    client_id: &str,
    ca_pem: &str,
    client_cert: Option<&Signed>,
) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca_pem.as_bytes().to_vec(),
        alpn: None,
        client_auth: client_cert.map(|c| (c.cert.as_bytes().to_vec(), c.key.as_bytes().to_vec())),
    }));
    opts
}

/// Poll until CONNACK (`Ok`) or the connection fails (`Err`).
async fn connected(eventloop: &mut EventLoop) -> Result<(), ConnectionError> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
                return Ok(());
            }
        }
    })
    .await
    .expect("the connection neither succeeded nor failed within 10 s")
}

/// Connect over TLS, publish `payload` on `topic` with QoS 1 and wait for its PUBACK.
async fn publish_tls(opts: MqttOptions, topic: String, payload: String) {
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    connected(&mut eventloop).await.expect("connected over TLS");
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("queue publish");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("TLS publisher failed: {e}"),
            }
        }
    })
    .await
    .expect("PUBACK over TLS");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

/// A reading of `id` is served as its latest, with this fill level.
async fn stored(gw: &Gateway, id: &str, fill: f64) {
    let path = format!("/api/devices/{id}/latest");
    eventually(
        &format!("latest reading of {id}"),
        Duration::from_secs(10),
        || async {
            let (status, body) = gw.http.get(&path).await;
            status == 200 && body["latest"]["data"]["bin"]["fill_pct"] == fill
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_publishes_a_reading_that_is_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path());
    let gw = Gateway::start(|c| {
        c.broker.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.broker.tls_cert = Some(pki.cert.clone());
        c.broker.tls_key = Some(pki.key.clone());
    })
    .await;
    gw.import_inventory().await;
    let tls = gw.running.broker_tls_addr.expect("TLS listener");
    assert_ne!(Some(tls), gw.running.broker_addr);
    publish_tls(
        tls_options(tls, "BN-1", &pki.ca.cert_pem, None),
        topic("BN-1", "telemetry"),
        bin_telemetry("BN-1", 1, 42.5),
    )
    .await;
    stored(&gw, "BN-1", 42.5).await;

    // Plain MQTT to the TLS port does not get a CONNACK.
    let mut opts = MqttOptions::new("plain", tls.ip().to_string(), tls.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (_client, mut eventloop) = AsyncClient::new(opts, 10);
    assert!(connected(&mut eventloop).await.is_err());
    gw.running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_ties_the_device_certificate_to_its_client_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path());
    let devices = Ca::new("streetgate test devices CA");
    let devices_ca = dir.path().join("devices-ca.crt");
    std::fs::write(&devices_ca, &devices.cert_pem).expect("write CA");
    let gw = Gateway::start(|c| {
        c.broker.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.broker.tls_cert = Some(pki.cert.clone());
        c.broker.tls_key = Some(pki.key.clone());
        c.broker.tls_client_ca = Some(devices_ca.clone());
        c.broker.connection_timeout_ms = 2000;
    })
    .await;
    gw.import_inventory().await;
    let tls = gw.running.broker_tls_addr.expect("TLS listener");
    let ca = &pki.ca.cert_pem;

    // The device's certificate names the client id it connects with: it publishes.
    let bn1 = devices.device("BN-1");
    publish_tls(
        tls_options(tls, "BN-1", ca, Some(&bn1)),
        topic("BN-1", "telemetry"),
        bin_telemetry("BN-1", 1, 12.5),
    )
    .await;
    stored(&gw, "BN-1", 12.5).await;
    // Without a common name, the first DNS name counts.
    let wc1 = devices.sign(
        None,
        &[SanType::DnsName("WC-1".try_into().expect("dns name"))],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (client, mut eventloop) = AsyncClient::new(tls_options(tls, "WC-1", ca, Some(&wc1)), 10);
    connected(&mut eventloop)
        .await
        .expect("WC-1 by its DNS name");
    let _ = client.disconnect().await;

    // Another device's certificate: CONNACK "not authorized", counted.
    let (_client, mut eventloop) = AsyncClient::new(
        tls_options(tls, "BN-1", ca, Some(&devices.device("MH-1"))),
        10,
    );
    match connected(&mut eventloop).await {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)) => {}
        other => panic!("a certificate of MH-1 connecting as BN-1: {other:?}"),
    }
    assert_eq!(
        gw.metric("streetgate_broker_refused_total{reason=\"not_authorized\"}")
            .await,
        1.0
    );

    // No certificate, or one of another CA: refused in the handshake, counted.
    let (_client, mut eventloop) = AsyncClient::new(tls_options(tls, "BN-1", ca, None), 10);
    assert!(
        connected(&mut eventloop).await.is_err(),
        "connected without a certificate"
    );
    let rogue = Ca::new("rogue CA").device("BN-1");
    let (_client, mut eventloop) = AsyncClient::new(tls_options(tls, "BN-1", ca, Some(&rogue)), 10);
    assert!(
        connected(&mut eventloop).await.is_err(),
        "connected with another CA's certificate"
    );
    eventually(
        "handshake failures counted",
        Duration::from_secs(5),
        || async {
            gw.metric("streetgate_broker_refused_total{reason=\"tls_handshake\"}")
                .await
                >= 2.0
        },
    )
    .await;

    // A handshake that never finishes is closed after broker.connection_timeout_ms.
    let open_for = stalled_handshake(tls, Duration::from_millis(300)).await;
    assert!(
        open_for >= Duration::from_millis(1800) && open_for < Duration::from_secs(5),
        "closed after {open_for:?} (broker.connection_timeout_ms = 2000)"
    );
    // Nothing of the refused clients was stored.
    let (_, body) = gw.http.get("/api/devices/BN-1/latest").await;
    assert_eq!(body["latest"]["seq"], 1, "{body}");
    gw.running.shutdown().await.expect("shutdown");
}
