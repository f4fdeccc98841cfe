//! The time-series output (`[timeseries]`, InfluxDB v2 write API) against a real server,
//! VictoriaMetrics, and against a local receiver that answers as told.
//!
//! VictoriaMetrics: `STREETGATE_TEST_VM_URL` names a running server (unreachable: the tests
//! fail); otherwise the tests start their own from `STREETGATE_TEST_VM_BIN` (default
//! `/usr/bin/victoria-metrics`) on an ephemeral port with a temporary data directory; with
//! neither they print that they are skipped. The outage test stops and restarts the server, so it
//! always runs its own (it needs the binary). VictoriaMetrics names a series
//! `{measurement}_{field}` and keeps the tags as labels.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::process::free_port;
use common::{Gateway, Msg, eventually, publish, topic};
use serde_json::Value;
use streetgate_gateway::config::Config;

const DEFAULT_VM_BIN: &str = "/usr/bin/victoria-metrics";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A prefix no other run (or test) uses, for device ids on a shared server.
fn unique(tag: &str) -> String {
    format!("ts{tag}{:08x}", rand::random::<u32>())
}

// ---------------------------------------------------------------------------------------------
// VictoriaMetrics

/// A VictoriaMetrics server: one already running, or a child process of the test.
struct Vm {
    url: String,
    own: Option<OwnVm>,
}

struct OwnVm {
    bin: PathBuf,
    data: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn vm_bin() -> Option<PathBuf> {
    match std::env::var("STREETGATE_TEST_VM_BIN") {
        Ok(b) => {
            let p = PathBuf::from(b);
            assert!(
                p.exists(),
                "STREETGATE_TEST_VM_BIN={} does not exist",
                p.display()
            );
            Some(p)
        }
        Err(_) => Some(PathBuf::from(DEFAULT_VM_BIN)).filter(|p| p.exists()),
    }
}

async fn vm_healthy(url: &str) -> bool {
    reqwest::get(format!("{url}/health"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

impl Vm {
    /// The server to test against, or `None` (skipped, said on stderr).
    async fn get(test: &str) -> Option<Self> {
        if let Ok(url) = std::env::var("STREETGATE_TEST_VM_URL") {
            let url = url.trim_end_matches('/').to_owned();
            assert!(
                vm_healthy(&url).await,
                "STREETGATE_TEST_VM_URL={url} is set but {url}/health does not answer OK"
            );
            return Some(Self { url, own: None });
        }
        Self::own(test).await
    }

    /// A server of the test's own (it can be stopped), or `None` without the binary.
    async fn own(test: &str) -> Option<Self> {
        let Some(bin) = vm_bin() else {
            eprintln!(
                "{test}: skipped: no VictoriaMetrics (set STREETGATE_TEST_VM_URL, or install the \
                 victoria-metrics package / set STREETGATE_TEST_VM_BIN)"
            );
            return None;
        };
        let mut own = OwnVm {
            bin,
            data: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            child: None,
        };
        own.start().await;
        Some(Self {
            url: format!("http://127.0.0.1:{}", own.port),
            own: Some(own),
        })
    }

    fn own_mut(&mut self) -> &mut OwnVm {
        self.own
            .as_mut()
            .expect("a VictoriaMetrics of the test's own")
    }

    /// Every sample of the series matching `selector`: labels → (timestamp, value), sorted.
    async fn export(&self, selector: &str) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> {
        let client = reqwest::Client::new();
        let _ = client
            .get(format!("{}/internal/force_flush", self.url))
            .send()
            .await;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/export", self.url),
            &[("match[]", selector), ("start", "0")],
        )
        .expect("export url");
        let text = client
            .get(url)
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("export body");
        let mut out: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("export line is JSON");
            let labels: BTreeMap<String, String> = v["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let ts = v["timestamps"].as_array().expect("timestamps");
            let vals = v["values"].as_array().expect("values");
            let samples = out.entry(labels).or_default();
            for (t, x) in ts.iter().zip(vals) {
                samples.push((t.as_i64().expect("ts"), x.as_f64().unwrap_or(f64::NAN)));
            }
            samples.sort_by_key(|(t, _)| *t);
        }
        out
    }
}

impl OwnVm {
    async fn start(&mut self) {
        let child = Command::new(&self.bin)
            .arg(format!("-storageDataPath={}", self.data.path().display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg("-loggerLevel=ERROR")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}", self.port);
        eventually("VictoriaMetrics healthy", Duration::from_secs(30), || {
            vm_healthy(&url)
        })
        .await;
    }

    /// Stop gracefully (SIGTERM: what it acknowledged is flushed to disk).
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for OwnVm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test

/// A gateway writing to `url` with short batching intervals.
async fn gateway(url: &str, tweak: impl FnOnce(&mut Config)) -> Gateway {
    let url = url.to_owned();
    Gateway::start(move |c| {
        fast(c, &url);
        tweak(c);
    })
    .await
}

fn fast(c: &mut Config, url: &str) {
    c.timeseries.url = Some(url.to_owned());
    c.timeseries.flush_interval_ms = 50;
    c.timeseries.retry_min_ms = 50;
    c.timeseries.retry_max_ms = 500;
    c.timeseries.series_interval_s = 0;
}

async fn import(gw: &Gateway, csv: &str) {
    let (status, body) = gw.http.post_text("/api/devices/import", csv).await;
    assert_eq!(status, 200, "{body}");
}

fn bin_payload(id: &str, seq: u32, ts_ms: i64, fill: f32) -> String {
    format!(
        r#"{{"device_id":"{id}","seq":{seq},"ts_ms":{ts_ms},"data":{{"bin":{{"fill_pct":{fill},"temperature_c":21.5,"battery_pct":88}}}}}}"#
    )
}

// ---------------------------------------------------------------------------------------------
// Tests against VictoriaMetrics

/// Readings of every kind, ingested over MQTT, come back from the server with their tags,
/// fields and device timestamps; absent values make no series; the open-case series is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_arrive_with_tags_fields_and_timestamps() {
    let Some(vm) = Vm::get("readings_arrive_with_tags_fields_and_timestamps").await else {
        return;
    };
    let p = unique("a");
    let gw = gateway(&vm.url, |c| {
        c.timeseries.series_interval_s = 1;
        c.timeseries.token = Some("secret".into());
    })
    .await;
    import(
        &gw,
        &format!(
            "id,kind,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm\n\
             {p}-SL,streetlight,31.3,120.6,320508001001001,S-{p},main,,\n\
             {p}-MH,manhole,31.3,120.6,320508001001001,,,,\n\
             {p}-BN,bin,31.3,120.6,320508001001002,,,,1200\n\
             {p}-WC,toilet,31.3,120.6,320508001001002,,,2,\n"
        ),
    )
    .await;
    let t0 = now_ms() - 60_000;
    let msgs = vec![
        Msg::new(
            topic(&format!("{p}-SL"), "telemetry"),
            format!(
                r#"{{"device_id":"{p}-SL","seq":1,"ts_ms":{t0},"data":{{"streetlight":{{"lamp_on":true,"dim_pct":80,"voltage_v":230.5,"current_a":0.42,"power_w":96.5,"energy_wh":1234}}}}}}"#
            ),
        ),
        Msg::new(
            topic(&format!("{p}-MH"), "telemetry"),
            format!(
                r#"{{"device_id":"{p}-MH","seq":1,"ts_ms":{},"data":{{"manhole":{{"tilt_deg":1.5,"battery_pct":77}}}}}}"#,
                t0 + 1
            ),
        ),
        Msg::new(
            topic(&format!("{p}-BN"), "telemetry"),
            bin_payload(&format!("{p}-BN"), 1, t0 + 2, 42.5),
        ),
        Msg::new(
            topic(&format!("{p}-BN"), "telemetry"),
            bin_payload(&format!("{p}-BN"), 2, t0 + 1002, 43.5),
        ),
        // No device clock: the receive time stands in.
        Msg::new(
            topic(&format!("{p}-WC"), "telemetry"),
            format!(
                r#"{{"device_id":"{p}-WC","seq":1,"data":{{"toilet":{{"nh3_mg_m3":0.25,"h2s_mg_m3":0.01,"humidity_pct":60}}}}}}"#
            ),
        ),
    ];
    let sent_at = now_ms();
    publish(&gw.broker(), msgs).await;

    let selector = format!("{{device=~\"{p}-.*\"}}");
    eventually(
        "every reading in VictoriaMetrics",
        Duration::from_secs(30),
        || async {
            let series = vm.export(&selector).await;
            series.keys().any(|l| l["__name__"] == "toilet_nh3_mg_m3")
                && series
                    .keys()
                    .any(|l| l["__name__"] == "streetlight_power_w")
                && series.keys().any(|l| l["__name__"] == "manhole_tilt_deg")
                && series
                    .iter()
                    .any(|(l, s)| l["__name__"] == "bin_fill_pct" && s.len() == 2)
        },
    )
    .await;
    let series = vm.export(&selector).await;
    let find = |name: &str| {
        series
            .iter()
            .find(|(l, _)| l["__name__"] == name)
            .unwrap_or_else(|| panic!("series {name} in {series:?}"))
    };

    let (labels, samples) = find("bin_fill_pct");
    assert_eq!(labels["device"], format!("{p}-BN"));
    assert_eq!(labels["kind"], "bin");
    assert_eq!(labels["grid"], "320508001001002");
    assert!(!labels.contains_key("segment"), "a bin has no road segment");
    assert_eq!(samples, &[(t0 + 2, 42.5), (t0 + 1002, 43.5)]);
    assert_eq!(
        find("bin_battery_pct").1,
        &[(t0 + 2, 88.0), (t0 + 1002, 88.0)]
    );

    let (labels, samples) = find("streetlight_power_w");
    assert_eq!(labels["segment"], format!("S-{p}"));
    assert_eq!(labels["grid"], "320508001001001");
    assert_eq!(labels["kind"], "streetlight");
    assert_eq!(samples, &[(t0, 96.5)]);
    assert_eq!(find("streetlight_lamp_on").1, &[(t0, 1.0)]);
    assert_eq!(find("streetlight_energy_wh").1, &[(t0, 1234.0)]);
    assert_eq!(find("streetlight_voltage_v").1, &[(t0, 230.5)]);

    assert_eq!(find("manhole_tilt_deg").1, &[(t0 + 1, 1.5)]);
    assert!(
        !series
            .keys()
            .any(|l| l["__name__"] == "manhole_water_level_cm"
                || l["__name__"] == "manhole_temperature_c"),
        "absent values are not written"
    );

    let (_, samples) = find("toilet_nh3_mg_m3");
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].1, 0.25);
    assert!(
        (sent_at - 1000..=now_ms()).contains(&samples[0].0),
        "receive time {} near {sent_at}",
        samples[0].0
    );
    assert_eq!(find("toilet_humidity_pct").1[0].1, 60.0);
    assert!(!series.keys().any(|l| l["__name__"] == "toilet_battery_pct"));

    // Periodic series: open cases by type, zeros included.
    eventually("open case series", Duration::from_secs(30), || async {
        let s = vm
            .export("{__name__=\"open_cases_count\",type=\"bin_full\"}")
            .await;
        !s.is_empty()
    })
    .await;
    assert!(gw.metric("streetgate_timeseries_sent_lines_total").await >= 5.0);
    assert_eq!(
        gw.metric("streetgate_timeseries_failed_lines_total").await,
        0.0
    );
    gw.running.shutdown().await.expect("shutdown");
}

/// The server goes away under load and comes back on the same data directory: every reading
/// is there exactly once (the gateway kept them in its spool meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_every_reading_arrives_exactly_once() {
    let Some(mut vm) = Vm::own("outage_every_reading_arrives_exactly_once").await else {
        return;
    };
    const DEVICES: usize = 20;
    const ROUNDS: u32 = 60;
    let p = unique("o");
    let gw = gateway(&vm.url, |c| {
        c.timeseries.batch_lines = 25;
        c.timeseries.memory_batches = 2;
    })
    .await;
    let mut csv = String::from("id,kind,lat,lon,grid,bin_depth_mm\n");
    for d in 0..DEVICES {
        csv.push_str(&format!("{p}-{d},bin,31.3,120.6,320508001001001,1200\n"));
    }
    import(&gw, &csv).await;
    let t0 = now_ms() - 3_600_000;
    // Load: a round of one reading per device every 50 ms, all through the outage.
    let broker = gw.broker();
    let prefix = p.clone();
    let load = tokio::spawn(async move {
        for round in 1..=ROUNDS {
            let msgs: Vec<Msg> = (0..DEVICES)
                .map(|d| {
                    let id = format!("{prefix}-{d}");
                    let ts = t0 + i64::from(round) * 1000 + d as i64;
                    Msg::new(
                        topic(&id, "telemetry"),
                        bin_payload(&id, round, ts, round as f32),
                    )
                })
                .collect();
            publish(&broker, msgs).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    eventually(
        "the first readings sent",
        Duration::from_secs(20),
        || async { gw.metric("streetgate_timeseries_sent_lines_total").await >= 100.0 },
    )
    .await;
    vm.own_mut().stop().await;
    let sent_before = gw.metric("streetgate_timeseries_sent_lines_total").await;
    eventually(
        "batches spooled during the outage",
        Duration::from_secs(20),
        || async {
            gw.metric("streetgate_timeseries_spooled_batches_total")
                .await
                >= 4.0
        },
    )
    .await;
    assert!(gw.metric("streetgate_timeseries_retries_total").await > 0.0);
    assert!(
        !load.is_finished(),
        "the outage should fall inside the load (make ROUNDS larger)"
    );
    vm.own_mut().start().await;
    load.await.expect("publisher");
    eprintln!(
        "outage: {sent_before} lines sent before it, {} batches spooled, {} retries",
        gw.metric("streetgate_timeseries_spooled_batches_total")
            .await,
        gw.metric("streetgate_timeseries_retries_total").await
    );
    let total = (DEVICES as f64) * f64::from(ROUNDS);
    eventually("every line sent", Duration::from_secs(60), || async {
        gw.metric("streetgate_timeseries_sent_lines_total").await >= total
            && gw.metric("streetgate_timeseries_queued_lines").await == 0.0
    })
    .await;
    assert_eq!(
        gw.metric("streetgate_timeseries_sent_lines_total").await,
        total
    );
    let selector = format!("{{__name__=\"bin_fill_pct\",device=~\"{p}-.*\"}}");
    eventually("every point queryable", Duration::from_secs(30), || async {
        vm.export(&selector)
            .await
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= DEVICES * ROUNDS as usize
    })
    .await;
    let series = vm.export(&selector).await;
    assert_eq!(series.len(), DEVICES);
    for (labels, samples) in &series {
        let d: i64 = labels["device"]
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("device number");
        let expected: Vec<(i64, f64)> = (1..=ROUNDS)
            .map(|r| (t0 + i64::from(r) * 1000 + d, f64::from(r)))
            .collect();
        assert_eq!(samples, &expected, "{labels:?}: each reading exactly once");
    }
    for reason in ["spool_full", "queue_full", "spool_unreadable"] {
        assert_eq!(
            gw.metric(&format!(
                "streetgate_timeseries_dropped_lines_total{{reason=\"{reason}\"}}"
            ))
            .await,
            0.0
        );
    }
    gw.running.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------------
// A local receiver: headers, gzip, 429 with Retry-After, 400

#[derive(Debug, Clone)]
struct Request {
    at: Instant,
    query: String,
    headers: HeaderMap,
    body: String,
}

#[derive(Default)]
struct Receiver {
    requests: Mutex<Vec<Request>>,
    /// Answers to give, in order (status, Retry-After); 204 once empty.
    script: Mutex<VecDeque<(u16, Option<&'static str>)>>,
}

async fn receive(
    State(rx): State<Arc<Receiver>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut text = String::new();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("a gzip body");
    } else {
        text = String::from_utf8_lossy(&body).into_owned();
    }
    rx.requests.lock().expect("lock").push(Request {
        at: Instant::now(),
        query: query.unwrap_or_default(),
        headers,
        body: text,
    });
    let next = rx.script.lock().expect("lock").pop_front();
    match next {
        None => StatusCode::NO_CONTENT.into_response(),
        Some((status, retry_after)) => {
            let status = StatusCode::from_u16(status).expect("status");
            let mut r = (status, r#"{"code":"invalid","message":"as scripted"}"#).into_response();
            if let Some(ra) = retry_after {
                r.headers_mut()
                    .insert("retry-after", ra.parse().expect("header value"));
            }
            r
        }
    }
}

async fn receiver() -> (String, Arc<Receiver>) {
    let rx = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/base/api/v2/write", axum::routing::post(receive))
        .with_state(Arc::clone(&rx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/base"), rx)
}

fn requests(rx: &Receiver) -> Vec<Request> {
    rx.requests.lock().expect("lock").clone()
}

const ONE_BIN: &str =
    "id,kind,lat,lon,grid,bin_depth_mm\nRB-1,bin,31.3,120.6,320508001001001,1200\n";

async fn one_bin_reading(gw: &Gateway, seq: u32) {
    publish(
        &gw.broker(),
        vec![Msg::new(
            topic("RB-1", "telemetry"),
            bin_payload("RB-1", seq, now_ms(), seq as f32),
        )],
    )
    .await;
}

/// Headers and gzip as the write API wants them; 429 waits for its Retry-After and the same
/// batch goes again; 400 refuses that batch for good (counted) and the next batch still goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_sees_gzip_headers_retry_after_and_permanent_refusals() {
    let (url, rx) = receiver().await;
    rx.script
        .lock()
        .expect("lock")
        .extend([(429, Some("1")), (204, None), (400, None)]);
    let gw = gateway(&url, |c| {
        c.timeseries.token = Some("s3cret".into());
        c.timeseries.org = "city works".into();
        c.timeseries.bucket = "street&gate".into();
        c.timeseries.precision = streetgate_gateway::outputs::influx::Precision::Seconds;
    })
    .await;
    import(&gw, ONE_BIN).await;

    one_bin_reading(&gw, 1).await;
    eventually("429 then the retry", Duration::from_secs(20), || async {
        requests(&rx).len() >= 2
    })
    .await;
    let r = requests(&rx);
    assert_eq!(r[0].body, r[1].body, "the same batch again");
    assert!(
        r[1].at.duration_since(r[0].at) >= Duration::from_millis(950),
        "Retry-After: 1 honoured ({:?} between attempts)",
        r[1].at.duration_since(r[0].at)
    );
    let first = &r[0];
    assert_eq!(first.headers["authorization"], "Token s3cret");
    assert_eq!(first.headers["content-encoding"], "gzip");
    assert!(
        first.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    assert_eq!(
        first.query,
        "org=city+works&bucket=street%26gate&precision=s"
    );
    assert!(
        first
            .body
            .starts_with("bin,device=RB-1,grid=320508001001001,kind=bin fill_pct=1,"),
        "{}",
        first.body
    );
    let ts: i64 = first
        .body
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert!((now_ms() / 1000 - ts).abs() < 60, "seconds precision: {ts}");

    // 400: refused for good, counted; the next batch goes.
    one_bin_reading(&gw, 2).await;
    eventually("the refusal counted", Duration::from_secs(20), || async {
        gw.metric("streetgate_timeseries_failed_batches_total")
            .await
            == 1.0
    })
    .await;
    one_bin_reading(&gw, 3).await;
    eventually("the next batch sent", Duration::from_secs(20), || async {
        gw.metric("streetgate_timeseries_sent_lines_total").await == 2.0
    })
    .await;
    let r = requests(&rx);
    assert_eq!(r.len(), 4, "400 is not retried");
    assert!(r[3].body.contains("fill_pct=3"));
    assert_eq!(
        gw.metric("streetgate_timeseries_failed_lines_total").await,
        1.0
    );
    assert_eq!(gw.metric("streetgate_timeseries_retries_total").await, 1.0);
    assert_eq!(
        gw.metric("streetgate_timeseries_sent_batches_total").await,
        2.0
    );
    assert_eq!(gw.metric("streetgate_timeseries_queued_lines").await, 0.0);
    gw.running.shutdown().await.expect("shutdown");
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".lp.gz"))
                .count()
        })
        .unwrap_or(0)
}

/// With the server unreachable, readings wait in the spool; a gateway stopped meanwhile keeps
/// them on disk, and the next start sends them, oldest first, then carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_the_spool() {
    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = gateway(&dead, |_| {}).await;
    import(&gw, ONE_BIN).await;
    for seq in 1..=3 {
        one_bin_reading(&gw, seq).await;
    }
    eventually("three lines waiting", Duration::from_secs(20), || async {
        gw.metric("streetgate_timeseries_queued_lines").await == 3.0
            && gw.metric("streetgate_timeseries_retries_total").await > 0.0
    })
    .await;
    let spool = gw.dir.path().join("data/timeseries-spool");
    let Gateway { running, dir, .. } = gw;
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.broker.listen = "127.0.0.1:0".parse().expect("addr");
    config.broker.auth = streetgate_gateway::broker::AuthMode::Open;
    config.store.path = dir.path().join("data/streetgate.db");
    running.shutdown().await.expect("shutdown");
    assert!(
        spool_files(&spool) >= 1,
        "batches kept in {}",
        spool.display()
    );

    let (url, rx) = receiver().await;
    fast(&mut config, &url);
    let gw = Gateway::start_with(config, dir).await;
    eventually("the spool replayed", Duration::from_secs(20), || async {
        gw.metric("streetgate_timeseries_sent_lines_total").await == 3.0
    })
    .await;
    one_bin_reading(&gw, 4).await;
    eventually("the new reading sent", Duration::from_secs(20), || async {
        gw.metric("streetgate_timeseries_sent_lines_total").await == 4.0
    })
    .await;
    let lines: Vec<String> = requests(&rx)
        .iter()
        .flat_map(|r| r.body.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let fills: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split("fill_pct=").nth(1)?.split(',').next())
        .collect();
    assert_eq!(fills, ["1", "2", "3", "4"], "oldest first, each once");
    assert_eq!(spool_files(&spool), 0, "the spool is empty again");
    gw.running.shutdown().await.expect("shutdown");
}

/// Every PromQL query of every panel of the time-series Grafana dashboard
/// (`dashboards/grafana/dashboards/streetgate-timeseries.json`) returns data from
/// VictoriaMetrics fed by a gateway: readings of every kind, open cases, and the lighting rate
/// (the gateway runs on a clock set to 22:00 in the city, when the lamps should be lit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_timeseries_panel_query_returns_data() {
    let Some(vm) = Vm::get("every_timeseries_panel_query_returns_data").await else {
        return;
    };
    let p = unique("d");
    // The last 14:00 UTC (22:00 in Suzhou) before now, on the gateway's clock.
    let day = 86_400_000;
    let night = (now_ms() - 14 * 3_600_000).div_euclid(day) * day + 14 * 3_600_000;
    let gw = gateway(&vm.url, |c| {
        c.timeseries.series_interval_s = 1;
        c.clock.start_ms = Some(night);
    })
    .await;
    import(
        &gw,
        &format!(
            "id,kind,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm\n\
             {p}-SL,streetlight,31.3,120.6,320508001001001,S-{p},main,,\n\
             {p}-MH,manhole,31.3,120.6,320508001001001,,,,\n\
             {p}-BN,bin,31.3,120.6,320508001001002,,,,1200\n\
             {p}-WC,toilet,31.3,120.6,320508001001002,,,2,\n"
        ),
    )
    .await;
    let msgs = vec![
        Msg::new(
            topic(&format!("{p}-SL"), "telemetry"),
            format!(
                r#"{{"device_id":"{p}-SL","seq":1,"ts_ms":{night},"data":{{"streetlight":{{"lamp_on":true,"dim_pct":100,"voltage_v":230.5,"current_a":0.42,"power_w":96.5,"energy_wh":1234}}}}}}"#
            ),
        ),
        Msg::new(
            topic(&format!("{p}-MH"), "event"),
            format!(
                r#"{{"device_id":"{p}-MH","seq":1,"alarm":"cover_open","state":"raised","value":75.0}}"#
            ),
        ),
        Msg::new(
            topic(&format!("{p}-MH"), "telemetry"),
            format!(
                r#"{{"device_id":"{p}-MH","seq":2,"ts_ms":{night},"data":{{"manhole":{{"tilt_deg":75.0,"battery_pct":77}}}}}}"#
            ),
        ),
        Msg::new(
            topic(&format!("{p}-BN"), "telemetry"),
            bin_payload(&format!("{p}-BN"), 1, night, 42.5),
        ),
        Msg::new(
            topic(&format!("{p}-WC"), "telemetry"),
            format!(
                r#"{{"device_id":"{p}-WC","seq":1,"ts_ms":{night},"data":{{"toilet":{{"nh3_mg_m3":0.25,"h2s_mg_m3":0.01,"humidity_pct":60}}}}}}"#
            ),
        ),
    ];
    publish(&gw.broker(), msgs).await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../dashboards/grafana/dashboards/streetgate-timeseries.json"),
        )
        .expect("dashboard file"),
    )
    .expect("dashboard JSON");
    let queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .map(move |e| (title.clone(), e.replace("$__interval", "5m")))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(queries.len() >= 6, "{queries:?}");
    let client = reqwest::Client::new();
    let query = |expr: String| {
        let client = client.clone();
        let url = vm.url.clone();
        async move {
            let _ = client
                .get(format!("{url}/internal/force_flush"))
                .send()
                .await;
            // At the gateway's clock now (its series carry its time).
            let at = night + 60_000;
            let url = reqwest::Url::parse_with_params(
                &format!("{url}/api/v1/query"),
                &[("query", expr.as_str()), ("time", &(at / 1000).to_string())],
            )
            .expect("query URL");
            let body: Value = client
                .get(url)
                .send()
                .await
                .expect("query VictoriaMetrics")
                .json()
                .await
                .expect("query answer");
            body["data"]["result"].as_array().map_or(0, Vec::len)
        }
    };
    eventually("every panel with data", Duration::from_secs(30), || async {
        for (_, expr) in &queries {
            if query(expr.clone()).await == 0 {
                return false;
            }
        }
        true
    })
    .await;
    gw.running.shutdown().await.expect("shutdown");
}
