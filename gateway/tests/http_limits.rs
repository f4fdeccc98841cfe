//! The HTTP listener's limits: idle and slow clients are closed after `http.idle_timeout_ms`,
//! and at most `http.max_connections` are served at once, so a crowd of idle connections cannot
//! keep the API from answering.

mod common;

use std::time::{Duration, Instant};

use common::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_closed_and_cannot_crowd_out_the_api() {
    let gw = Gateway::start(|c| {
        c.http.max_connections = 8;
        c.http.idle_timeout_ms = 500;
    })
    .await;
    let addr = gw.running.http_addr;
    // Eight clients fill every slot: four never send a byte, four stop in the middle of their
    // headers (a slow-header attack).
    let mut idle = Vec::new();
    for i in 0..8 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 1 {
            s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("partial headers");
        }
        idle.push(s);
    }
    // The API still answers: the idle clients are closed and free their slots.
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), gw.http.get("/api/health"))
        .await
        .expect("health answered while idle clients held every slot");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for (i, mut s) in idle.into_iter().enumerate() {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "idle client {i} still open after 5 s");
    }
    gw.running.shutdown().await.expect("shutdown");
}

/// At most `inventory.max_concurrent_imports` CSV imports run at once, upload included: while
/// one is still uploading, another is answered 429 `too_many_imports` naming the setting; once
/// it has finished, imports are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_imports_beyond_the_limit_are_refused() {
    let gw = Gateway::start(|c| c.inventory.max_concurrent_imports = 1).await;
    let token = common::token_in(
        gw.running.state.store.as_ref(),
        "importer",
        streetgate_gateway::auth::Role::Admin,
        None,
        None,
    )
    .await;
    let body = common::INVENTORY.as_bytes();
    let (head, tail) = body.split_at(body.len() / 2);
    // A slow upload: headers and half the body, then a pause.
    let mut slow = TcpStream::connect(gw.running.http_addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /api/devices/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(request.as_bytes()).await.expect("headers");
    slow.write_all(head).await.expect("half the body");
    // The slow import takes the only slot as soon as its headers are in; give it time first (a
    // quick import running at that moment would take the slot and the slow one be refused).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut refused = None;
    for _ in 0..20 {
        let (status, answer) = gw
            .http
            .post_text("/api/devices/import", common::INVENTORY)
            .await;
        if status == 429 {
            refused = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = refused.expect("a second import was refused while the first was uploading");
    assert_eq!(refused["code"], "too_many_imports", "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("inventory.max_concurrent_imports = 1"),
        "{message}"
    );
    // The slow one completes and is imported.
    slow.write_all(tail).await.expect("the rest of the body");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_string(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"imported\":4"), "{answer}");
    // The slot is free again.
    let (status, body) = gw
        .http
        .post_text("/api/devices/import", common::INVENTORY)
        .await;
    assert_eq!(status, 200, "{body}");
}
