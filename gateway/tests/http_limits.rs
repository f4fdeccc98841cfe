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
