//! The OpenAPI document and the router stay in step: every route the router declares is
//! documented with its methods, and every documented operation is served (the request reaches
//! a handler, not the "no such route" or "method not allowed" fallback).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::Gateway;
use serde_json::Value;

/// (method, path) pairs declared in the router's source.
fn router_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/api/mod.rs");
    let mut routes = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        let Some(rest) = chunk.trim_start().strip_prefix('"') else {
            continue;
        };
        let Some((path, handlers)) = rest.split_once('"') else {
            continue;
        };
        // The handler expression runs to the closing parenthesis of `.route(`.
        let mut depth = 1;
        let end = handlers
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(handlers.len(), |(i, _)| i);
        let expr = &handlers[..end];
        for method in ["get", "post", "delete", "put", "patch"] {
            if expr.contains(&format!("{method}(")) {
                routes.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    routes
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_some() {
                ops.insert((method.to_owned(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn document_and_router_agree() {
    let doc: Value = serde_json::from_str(streetgate_gateway::api::OPENAPI).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = router_routes();
    assert!(routes.len() >= 20, "parsed the router: {routes:?}");
    let ops = documented(&doc);
    let undocumented: Vec<_> = routes.difference(&ops).collect();
    let unrouted: Vec<_> = ops.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    // Every `$ref` resolves.
    let text = streetgate_gateway::api::OPENAPI;
    for r in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }

    // Served, and every operation reaches a handler.
    let gw = Gateway::start(|_| {}).await;
    let (status, served) = gw.http.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, doc);
    let client = reqwest::Client::new();
    for (method, path) in &ops {
        let concrete = path.replace("{id}", "X-1").replace("{segment}", "S-1");
        let url = format!("http://{}{concrete}", gw.running.http_addr);
        let req = match method.as_str() {
            "get" => client.get(&url),
            "delete" => client.delete(&url),
            _ => client
                .post(&url)
                .header("content-type", "application/json")
                .body("{}"),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.contains("\"no_route\"") && !body.contains("\"method_not_allowed\""),
            "{method} {path}: {status} {body}"
        );
        let documented_status = &doc["paths"][path][method]["responses"][status.to_string()];
        assert!(
            !documented_status.is_null(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
    }
    gw.running.shutdown().await.unwrap();
}
