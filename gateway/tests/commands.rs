//! Lamp commands over real sockets. Three MQTT lamps (MQTT clients on the embedded broker: one
//! applies every command, one refuses with a reason, one never answers) and one Modbus TCP lamp
//! (a tokio-modbus server that applies the command block and fills the acknowledgement block)
//! share a road segment. One lamp is commanded, then the whole segment; each outcome is
//! reported (acked, rejected with the device's reason, timed out) and recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Gateway, eventually};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use streetgate_protocols::modbus as map;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

/// How a simulated MQTT lamp answers.
#[derive(Clone, Copy)]
enum Answer {
    Apply,
    Refuse,
    Silent,
}

/// An MQTT lamp: subscribes to its command topic, records what it gets and answers.
async fn mqtt_lamp(
    broker: &(String, u16),
    id: &'static str,
    answer: Answer,
) -> Arc<Mutex<Vec<Value>>> {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let mut opts = MqttOptions::new(id, broker.0.clone(), broker.1);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client
        .subscribe(format!("streetgate/v1/{id}/command"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let sink = Arc::clone(&got);
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut seq = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let cmd: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    sink.lock().unwrap().push(cmd.clone());
                    seq += 1;
                    let ref_id = cmd["cmd_id"].as_u64().unwrap_or(0);
                    let ack = match answer {
                        Answer::Apply => {
                            json!({"device_id": id, "seq": seq, "ref_id": ref_id, "ok": true})
                        }
                        Answer::Refuse => {
                            json!({"device_id": id, "seq": seq, "ref_id": ref_id, "ok": false, "reason": "relay: contacts welded"})
                        }
                        Answer::Silent => continue,
                    };
                    client
                        .publish(
                            format!("streetgate/v1/{id}/ack"),
                            QoS::AtLeastOnce,
                            false,
                            ack.to_string(),
                        )
                        .await
                        .unwrap();
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("lamp subscribed")
        .unwrap();
    got
}

/// A Modbus lamp: identification and telemetry of a streetlight, a command block that applies
/// what is written to it and an acknowledgement block that answers it.
#[derive(Clone)]
struct ModbusLamp {
    regs: Arc<Mutex<HashMap<u16, u16>>>,
    commands: Arc<Mutex<Vec<streetgate_protocols::Command>>>,
}

impl tokio_modbus::server::Service for ModbusLamp {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if req.slave != 7 {
            return future::ready(Ok(None));
        }
        let mut regs = self.regs.lock().unwrap();
        future::ready(match req.request {
            Request::ReadInputRegisters(addr, count) => (addr..addr + count)
                .map(|a| {
                    regs.get(&a)
                        .copied()
                        .ok_or(ExceptionCode::IllegalDataAddress)
                })
                .collect::<Result<Vec<u16>, _>>()
                .map(|v| Some(Response::ReadInputRegisters(v))),
            Request::WriteMultipleRegisters(addr, values) if addr == map::COMMAND_START => {
                match map::decode_command(&values) {
                    Ok(cmd) => {
                        for (i, v) in map::encode_ack(map::AckResult::Applied(cmd.cmd_id))
                            .into_iter()
                            .enumerate()
                        {
                            regs.insert(map::ACK_START + u16::try_from(i).unwrap(), v);
                        }
                        self.commands.lock().unwrap().push(cmd);
                        Ok(Some(Response::WriteMultipleRegisters(
                            addr,
                            u16::try_from(values.len()).unwrap(),
                        )))
                    }
                    Err(_) => Err(ExceptionCode::IllegalDataValue),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

async fn modbus_lamp() -> (u16, ModbusLamp) {
    let mut regs: HashMap<u16, u16> = HashMap::new();
    let telemetry = streetgate_protocols::TelemetryData::Streetlight(
        streetgate_protocols::StreetlightTelemetry {
            lamp_on: true,
            ..Default::default()
        },
    );
    for (i, v) in
        map::encode_identification(streetgate_protocols::DeviceKind::Streetlight, (1, 0, 0))
            .into_iter()
            .enumerate()
    {
        regs.insert(u16::try_from(i).unwrap(), v);
    }
    let mut t = [0u16; map::TELEMETRY_MAX_LEN];
    let n = map::encode_telemetry(&telemetry, &mut t).unwrap();
    for (i, v) in t[..n].iter().enumerate() {
        regs.insert(map::TELEMETRY_START + u16::try_from(i).unwrap(), *v);
    }
    for (i, v) in map::encode_ack(map::AckResult::None)
        .into_iter()
        .enumerate()
    {
        regs.insert(map::ACK_START + u16::try_from(i).unwrap(), v);
    }
    let lamp = ModbusLamp {
        regs: Arc::new(Mutex::new(regs)),
        commands: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::new(listener);
    let service = lamp.clone();
    let on_connected = move |stream, addr| {
        let service = service.clone();
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(service.clone()))) }
    };
    tokio::spawn(async move {
        server
            .serve(&on_connected, |e| eprintln!("server: {e}"))
            .await
    });
    (port, lamp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lamps_and_segments_are_commanded_over_mqtt_and_modbus() {
    let gw = Gateway::start(|c| {
        c.commands.ack_timeout_ms = 1500;
        c.modbus.poll_interval_ms = 200;
        c.modbus.request_timeout_ms = 300;
        // The simulated lamp listens on loopback, which is not allowed by default.
        c.modbus.allowed_endpoints = vec!["127.0.0.1/32".into()];
    })
    .await;
    let broker = gw.broker();
    let (port, modbus) = modbus_lamp().await;
    let csv = format!(
        "id,kind,lat,lon,grid,road_segment,road_class,transport\n\
         SL-1,streetlight,31.3,120.6,320508001001001,S-9,main,mqtt\n\
         SL-2,streetlight,31.3,120.6,320508001001001,S-9,main,mqtt\n\
         SL-3,streetlight,31.3,120.6,320508001001001,S-9,main,mqtt\n\
         SL-4,streetlight,31.3,120.6,320508001001001,S-9,main,modbus-tcp 127.0.0.1:{port} 7\n\
         SL-5,streetlight,31.3,120.6,320508001001001,S-8,main,mqtt\n\
         MH-1,manhole,31.3,120.6,320508001001001,,,mqtt\n"
    );
    let (status, body) = gw.http.post_text("/api/devices/import", &csv).await;
    assert_eq!(status, 200, "{body}");
    let sl1 = mqtt_lamp(&broker, "SL-1", Answer::Apply).await;
    let sl2 = mqtt_lamp(&broker, "SL-2", Answer::Refuse).await;
    let sl3 = mqtt_lamp(&broker, "SL-3", Answer::Silent).await;
    // The Modbus lamp was added after start: its poller starts within a second or so.
    eventually("Modbus lamp polled", Duration::from_secs(10), || async {
        let (_, latest) = gw.http.get("/api/devices/SL-4/latest").await;
        latest.to_string().contains("modbus-tcp")
    })
    .await;

    // One lamp.
    // By the lamp operator ops-li (an actor in the body is ignored).
    let ops_li = gw
        .http_as(
            "ops-li",
            streetgate_gateway::auth::Role::LampOperator,
            None,
            None,
        )
        .await;
    let (status, r) = ops_li
        .post_json(
            "/api/devices/SL-1/command",
            &json!({"action": "dim", "dim_pct": 40, "actor": "mayor"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["acked"], 1, "{r}");
    let res = &r["results"][0];
    assert_eq!(res["state"], "acked");
    assert!(res["latency_ms"].as_u64().is_some());
    let wire = sl1.lock().unwrap()[0].clone();
    assert_eq!(wire["cmd_id"], res["command_id"]);
    assert_eq!(
        wire["action"],
        json!({"dim": {"pct": 40, "expires_s": null}})
    );

    // The whole segment: every outcome at once.
    let (status, r) = gw
        .http
        .post_json(
            "/api/segments/S-9/command",
            &json!({"action": "off", "expires_s": 600}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["segment"], "S-9");
    assert_eq!(
        (r["total"].as_u64(), r["acked"].as_u64()),
        (Some(4), Some(2)),
        "{r}"
    );
    let by_id: HashMap<String, Value> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["device_id"].as_str().unwrap().to_owned(), x.clone()))
        .collect();
    assert_eq!(by_id["SL-1"]["state"], "acked");
    assert_eq!(by_id["SL-2"]["state"], "rejected");
    assert_eq!(by_id["SL-2"]["detail"], "relay: contacts welded");
    assert_eq!(by_id["SL-3"]["state"], "timed_out");
    assert_eq!(by_id["SL-4"]["state"], "acked", "{r}");
    assert!(!by_id.contains_key("SL-5"), "another segment");
    assert_eq!(sl2.lock().unwrap().len(), 1);
    assert_eq!(sl3.lock().unwrap().len(), 1, "sent, never answered");
    let written = modbus.commands.lock().unwrap().clone();
    assert_eq!(written.len(), 1);
    assert_eq!(
        written[0].action,
        streetgate_protocols::Action::LampOff {
            expires_s: Some(600)
        }
    );

    // Recorded.
    let (_, list) = gw.http.get("/api/commands?device=SL-2").await;
    let rec = &list["commands"][0];
    assert_eq!(rec["state"], "rejected");
    assert_eq!(rec["actor"], "admin");
    assert_eq!(rec["transport"], "mqtt");
    let (_, list) = gw.http.get("/api/commands").await;
    assert_eq!(list["commands"].as_array().unwrap().len(), 5);
    assert_eq!(list["commands"][4]["actor"], "ops-li");
    assert_eq!(gw.metric("streetgate_commands_acked_total").await, 3.0);
    assert_eq!(gw.metric("streetgate_commands_failed_total").await, 2.0);

    // Bad requests name what is wrong.
    for (path, body, status, code) in [
        (
            "/api/devices/SL-1/command",
            json!({"action": "dim"}),
            400,
            "invalid_command",
        ),
        (
            "/api/devices/SL-1/command",
            json!({"action": "blink"}),
            422,
            "invalid_body",
        ),
        (
            "/api/devices/SL-1/command",
            json!({"action": "on", "dim_pct": 140}),
            400,
            "invalid_command",
        ),
        (
            "/api/devices/NOPE/command",
            json!({"action": "on"}),
            404,
            "device_not_found",
        ),
        (
            "/api/devices/MH-1/command",
            json!({"action": "on"}),
            400,
            "not_a_lamp",
        ),
        (
            "/api/segments/S-404/command",
            json!({"action": "on"}),
            404,
            "segment_not_found",
        ),
    ] {
        let (s, e) = gw.http.post_json(path, &body).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {e}"
        );
    }
    gw.running.shutdown().await.unwrap();
}
