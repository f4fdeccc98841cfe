//! People's access over a real socket: anonymous callers are refused, roles and scopes limit
//! what a caller does, the actor of a case transition is the caller, tokens and sessions end,
//! cookie requests need the CSRF header, passwords are hashed, every mutating call is audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Gateway, Msg, publish, topic};
use serde_json::{Value, json};
use streetgate_gateway::auth::Role;

/// A dispatched patrol case in grid ...001 (routed to the `municipal` team by default).
async fn patrol_case(gw: &Gateway) -> i64 {
    let (status, case) = gw
        .http
        .post_json(
            "/api/cases",
            &json!({"type": "other", "grid": "320508001001001", "detail": "graffiti",
                    "location": "Renmin Rd 12", "source": "patrol"}),
        )
        .await;
    assert_eq!(status, 200, "{case}");
    case["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_are_refused_and_health_says_little() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    let id = patrol_case(&gw).await;
    let anon = gw.anonymous();
    for path in [
        "/api/cases",
        "/api/devices/export",
        "/api/devices",
        "/metrics",
    ] {
        let (status, body) = anon.get(path).await;
        assert_eq!(status, 401, "GET {path}: {body}");
        assert_eq!(body["code"], "unauthenticated", "{body}");
        assert!(body["message"].is_string());
    }
    let (status, body) = anon
        .post_json(
            &format!("/api/cases/{id}/transitions"),
            &json!({"action": "accept", "actor": "mayor"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, body) = anon.post_text("/api/devices/import", "x").await;
    assert_eq!(status, 401, "{body}");
    // Liveness only.
    let (status, health) = anon.get("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(health, json!({"status": "ok"}));
    let (_, full) = gw.http.get("/api/health").await;
    assert!(full["store"]["path"].is_string(), "{full}");
    // No answer is sniffed into markup.
    let r = reqwest::get(format!(
        "http://{}/api/cases?grid=<script>",
        gw.running.http_addr
    ))
    .await
    .unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    // A made-up token is refused, naming why.
    let forged = common::Http::new(gw.running.http_addr).with_token("sgt_0000");
    let (status, body) = forged.get("/api/cases").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_members_work_their_team_cases_as_themselves() {
    let gw = Gateway::start(|_| {}).await;
    gw.import_inventory().await;
    let id = patrol_case(&gw).await;
    let (_, case) = gw.http.get(&format!("/api/cases/{id}")).await;
    let team = case["team"].as_str().expect("dispatched").to_owned();
    let ours = gw
        .http_as("li.wei", Role::TeamMember, Some(&team), None)
        .await;
    let theirs = gw
        .http_as("zhao.lei", Role::TeamMember, Some("not-this-team"), None)
        .await;
    let path = format!("/api/cases/{id}/transitions");

    // Another team's member neither sees nor acts on it.
    let (status, body) = theirs.post_json(&path, &json!({"action": "accept"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(theirs.get(&format!("/api/cases/{id}")).await.0, 403);
    let (_, listed) = theirs.get("/api/cases").await;
    assert_eq!(listed["total"], 0, "{listed}");
    assert_eq!(theirs.get(&format!("/api/cases?team={team}")).await.0, 403);

    // The team's member accepts it; the history names them, whatever the body says.
    let (status, body) = ours
        .post_json(&path, &json!({"action": "accept", "actor": "mayor"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let last = body["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "li.wei", "{body}");
    assert!(!body.to_string().contains("mayor"));
    let (_, listed) = ours.get("/api/cases").await;
    assert_eq!(listed["total"], 1, "{listed}");
    // The centre's part is not theirs.
    let (status, _) = ours
        .post_json(&path, &json!({"action": "void", "reason": "dup"}))
        .await;
    assert_eq!(status, 403);
    // A control character in a note is refused.
    let (status, body) = ours
        .post_json(&path, &json!({"action": "resolve", "note": "done\u{7}"}))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_text")));
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_a_caller_does() {
    let gw = Gateway::start(|c| c.commands.ack_timeout_ms = 200).await;
    gw.import_inventory().await;
    let viewer = gw.http_as("wang.fang", Role::Viewer, None, None).await;
    let lamps = gw.http_as("chen.jie", Role::LampOperator, None, None).await;
    let grid_viewer = gw
        .http_as("grid.two", Role::Viewer, None, Some("320508001001002"))
        .await;

    // A viewer reads but changes nothing.
    assert_eq!(viewer.get("/api/cases").await.0, 200);
    assert_eq!(viewer.get("/api/devices/export").await.0, 200);
    let (status, body) = viewer
        .post_json(
            "/api/cases",
            &json!({"type": "other", "grid": "320508001001001", "detail": "x", "location": "y", "source": "hotline"}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    assert!(
        body["message"].as_str().unwrap().contains("cases_report"),
        "{body}"
    );
    assert_eq!(viewer.delete("/api/devices/SL-1").await.0, 403);
    let dim = json!({"action": "dim", "dim_pct": 40});
    assert_eq!(
        viewer.post_json("/api/segments/S-1/command", &dim).await.0,
        403
    );

    // A lamp operator commands a segment (the lamps do not answer here: timed out), and the
    // command log names them.
    let (status, body) = lamps
        .post_json(
            "/api/segments/S-1/command",
            &json!({"action": "dim", "dim_pct": 40, "actor": "mayor"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
    let (_, log) = lamps.get("/api/commands").await;
    assert_eq!(log["commands"][0]["actor"], "chen.jie", "{log}");
    // ...but manages no device and no user.
    assert_eq!(
        lamps
            .post_text("/api/devices/import", common::INVENTORY)
            .await
            .0,
        403
    );
    assert_eq!(lamps.get("/api/users").await.0, 403);
    assert_eq!(lamps.get("/api/audit").await.0, 403);

    // A grid viewer sees their grid only.
    let (_, devices) = grid_viewer.get("/api/devices").await;
    assert_eq!(devices["total"], 2, "{devices}");
    assert_eq!(grid_viewer.get("/api/devices/SL-1").await.0, 403);
    assert_eq!(grid_viewer.get("/api/devices/BN-1").await.0, 200);
    let (status, lighting) = grid_viewer.get("/api/lighting").await;
    assert_eq!(
        (status, &lighting["city"]),
        (200, &Value::Null),
        "{lighting}"
    );
    assert_eq!(grid_viewer.get("/api/lighting?segment=S-1").await.0, 403);
    assert_eq!(
        grid_viewer
            .get("/api/lighting?grid=320508001001001")
            .await
            .0,
        403
    );
    let csv = grid_viewer.get_text("/api/devices/export").await;
    assert!(csv.contains("BN-1") && !csv.contains("SL-1"), "{csv}");
    // The segment command went to grid ...001's lamps: not in grid ...002's command log.
    let (status, log) = grid_viewer.get("/api/commands").await;
    assert_eq!(
        (status, log["commands"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{log}"
    );
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_stop_working() {
    let gw = Gateway::start(|_| {}).await;
    gw.http_as("scada", Role::Viewer, None, None).await;
    let (status, token) = gw
        .http
        .post_json("/api/tokens", &json!({"user": "scada", "name": "export"}))
        .await;
    assert_eq!(status, 200, "{token}");
    let secret = token["token"].as_str().unwrap();
    let scada = common::Http::new(gw.running.http_addr).with_token(secret);
    assert_eq!(scada.get("/api/cases").await.0, 200);
    // Listed without the secret.
    let (_, list) = gw.http.get("/api/tokens").await;
    assert!(!list.to_string().contains(secret));
    assert_eq!(
        gw.http
            .delete(&format!("/api/tokens/{}", token["id"]))
            .await
            .0,
        204
    );
    let (status, body) = scada.get("/api/cases").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );

    let (_, short) = gw
        .http
        .post_json(
            "/api/tokens",
            &json!({"user": "scada", "name": "short", "expires_in_s": 1}),
        )
        .await;
    let short =
        common::Http::new(gw.running.http_addr).with_token(short["token"].as_str().unwrap());
    assert_eq!(short.get("/api/cases").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(short.get("/api/cases").await.0, 401);

    // Disabling a user revokes their tokens.
    let other = gw.http_as("ops.bot", Role::Dispatcher, None, None).await;
    assert_eq!(other.get("/api/cases").await.0, 200);
    assert_eq!(gw.http.delete("/api/users/ops.bot").await.0, 204);
    assert_eq!(other.get("/api/cases").await.0, 401);
    // Enabled again, the user signs in anew; the revoked token stays revoked.
    assert_eq!(
        gw.http
            .post_json("/api/users/ops.bot/enable", &json!({}))
            .await
            .0,
        204
    );
    assert_eq!(other.get("/api/cases").await.0, 401);
    let again = gw.http_as("ops.bot", Role::Dispatcher, None, None).await;
    assert_eq!(again.get("/api/cases").await.0, 200);
    gw.running.shutdown().await.unwrap();
}

/// A cookie client: signs in, keeps the cookie, sends the CSRF header when told.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn sign_in(gw: &Gateway, user: &str, password: &str) -> (u16, Value, Option<Self>) {
        let base = format!("http://{}", gw.running.http_addr);
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{base}/api/session"))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        if status != 200 {
            return (status, body, None);
        }
        let cookie = cookie.expect("Set-Cookie");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        let csrf = body["csrf_token"].as_str().unwrap().to_owned();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        assert!(cookie.starts_with("streetgate_session="), "{cookie}");
        (
            status,
            body,
            Some(Self {
                base,
                client,
                cookie,
                csrf,
            }),
        )
    }

    async fn send(&self, req: reqwest::RequestBuilder, csrf: bool) -> (u16, Value) {
        let req = req.header("cookie", &self.cookie);
        let req = if csrf {
            req.header("X-CSRF-Token", &self.csrf)
        } else {
            req
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)), false)
            .await
    }

    async fn post(&self, path: &str, body: &Value, csrf: bool) -> (u16, Value) {
        self.send(
            self.client.post(format!("{}{path}", self.base)).json(body),
            csrf,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_need_the_csrf_header_and_expire() {
    let gw = Gateway::start(|c| {
        c.auth.session_idle_s = 1;
        c.auth.session_absolute_s = 60;
    })
    .await;
    gw.import_inventory().await;
    let (status, added) = gw
        .http
        .post_json(
            "/api/users",
            &json!({"name": "centre.1", "role": "dispatcher", "password": "a long enough password"}),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    assert!(added["password"].is_null());

    // Wrong password and unknown user: the same answer.
    let (s1, b1, _) = Browser::sign_in(&gw, "centre.1", "wrong password!").await;
    let (s2, b2, _) = Browser::sign_in(&gw, "nobody", "wrong password!").await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(b1["code"], "invalid_credentials");

    let (_, me, browser) = Browser::sign_in(&gw, "centre.1", "a long enough password").await;
    let browser = browser.unwrap();
    assert_eq!(me["user"], "centre.1");
    assert_eq!(me["role"], "dispatcher");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("cases_report"))
    );
    let (status, whoami) = browser.get("/api/session").await;
    assert_eq!((status, &whoami["csrf_token"]), (200, &me["csrf_token"]));

    let report = json!({"type": "other", "grid": "320508001001001", "detail": "pothole", "location": "Gate 3", "source": "hotline"});
    let (status, body) = browser.post("/api/cases", &report, false).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("csrf_token_required"))
    );
    let (status, case) = browser.post("/api/cases", &report, true).await;
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["history"][0]["actor"], "centre.1");

    // Idle for longer than auth.session_idle_s: signed out.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = browser.get("/api/cases").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("session_ended"))
    );
    // Liveness answers whatever cookie comes with it.
    let (status, body) = browser.get("/api/health").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    // Sign-out ends the session for good.
    let (_, _, browser) = Browser::sign_in(&gw, "centre.1", "a long enough password").await;
    let browser = browser.unwrap();
    let (status, _) = browser
        .send(
            browser
                .client
                .delete(format!("{}/api/session", browser.base)),
            false,
        )
        .await;
    assert_eq!(
        status, 403,
        "signing out by cookie needs the CSRF header too"
    );
    let (status, _) = browser
        .send(
            browser
                .client
                .delete(format!("{}/api/session", browser.base)),
            true,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(browser.get("/api/session").await.0, 401);
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_checked_passwords_hashed_and_calls_audited() {
    let gw = Gateway::start(|_| {}).await;
    // A first start made the administrator, with a password printed once.
    assert!(gw.running.first_admin_password.is_some());
    for bad in ["<script>", "a b", "x\u{1}"] {
        let (status, body) = gw
            .http
            .post_json("/api/users", &json!({"name": bad, "role": "viewer"}))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_field")),
            "{bad:?}: {body}"
        );
        assert!(!body.to_string().contains("<script>"), "{body}");
    }
    let (status, body) = gw
        .http
        .post_json(
            "/api/users",
            &json!({"name": "zhou.min", "role": "team_member", "password": "plain text password"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_field")),
        "a team member needs a team: {body}"
    );
    let (status, _) = gw
        .http
        .post_json(
            "/api/users",
            &json!({"name": "zhou.min", "role": "team_member", "team": "sanitation", "password": "plain text password"}),
        )
        .await;
    assert_eq!(status, 200);

    // The password is nowhere in the database file, its Argon2id hash is.
    gw.running.state.store.ping().await.unwrap();
    let user = gw
        .running
        .state
        .store
        .user_by_name("zhou.min")
        .await
        .unwrap()
        .unwrap();
    assert!(
        user.password_hash.starts_with("$argon2id$"),
        "{}",
        user.password_hash
    );
    let db = gw.dir.path().join("data");
    let mut raw = Vec::new();
    for f in std::fs::read_dir(&db).unwrap() {
        raw.extend(std::fs::read(f.unwrap().path()).unwrap());
    }
    let needle = b"plain text password";
    assert!(!raw.windows(needle.len()).any(|w| w == needle));
    // Nor is it served.
    let (_, users) = gw.http.get("/api/users").await;
    assert!(!users.to_string().contains("argon2"), "{users}");

    // Every mutating call is recorded with who, what, from where and the outcome.
    publish(&gw.broker(), vec![Msg::new(topic("X-1", "status"), "{}")]).await;
    let viewer = gw.http_as("audit.viewer", Role::Viewer, None, None).await;
    assert_eq!(viewer.delete("/api/devices/SL-9").await.0, 403);
    assert_eq!(gw.anonymous().delete("/api/devices/SL-9").await.0, 401);
    // Recorded before the answer leaves.
    let (_, entries) = gw.http.get("/api/audit?route=/api/devices/{id}").await;
    assert_eq!(entries["total"], 2, "{entries}");
    let newest = &entries["entries"][0];
    assert_eq!(newest["actor"], Value::Null, "{entries}");
    assert_eq!(newest["status"], 401);
    let viewer_entry = &entries["entries"][1];
    assert_eq!(viewer_entry["actor"], "audit.viewer");
    assert_eq!(viewer_entry["auth"], "token");
    assert_eq!(viewer_entry["method"], "DELETE");
    assert_eq!(viewer_entry["target"], "SL-9");
    assert_eq!(viewer_entry["status"], 403);
    assert!(
        viewer_entry["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{viewer_entry}"
    );
    let (_, by_actor) = gw.http.get("/api/audit?actor=admin&method=post").await;
    assert!(by_actor["total"].as_u64().unwrap() >= 3, "{by_actor}");
    let (_, page) = gw.http.get("/api/audit?limit=1&offset=1").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["offset"], 1);
    // Reads are not audited.
    let (_, reads) = gw.http.get("/api/audit?method=GET").await;
    assert_eq!(reads["total"], 0);
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_take_a_token_unless_public() {
    let gw = Gateway::start(|c| c.auth.metrics_public = true).await;
    let text = gw.anonymous().get_text("/metrics").await;
    assert!(text.contains("streetgate_"), "{text}");
    gw.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_sign_ins_are_throttled_per_name() {
    let gw = Gateway::start(|_| {}).await;
    let body = json!({"name": "centre.2", "role": "dispatcher", "password": "the right password"});
    assert_eq!(gw.http.post_json("/api/users", &body).await.0, 200);
    let anon = gw.anonymous();
    let attempt = |password: &'static str| {
        let anon = anon.clone();
        async move {
            anon.post_json(
                "/api/session",
                &json!({"username": "centre.2", "password": password}),
            )
            .await
        }
    };
    // A success clears the count.
    for _ in 0..9 {
        assert_eq!(attempt("a wrong password").await.0, 401);
    }
    assert_eq!(attempt("the right password").await.0, 200);
    for _ in 0..10 {
        assert_eq!(attempt("a wrong password").await.0, 401);
    }
    let (status, body) = attempt("the right password").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_attempts")),
        "{body}"
    );
    // Other names are not held back, and an unknown name is throttled alike.
    let (status, _) = anon
        .post_json(
            "/api/session",
            &json!({"username": "admin", "password": "not it at all"}),
        )
        .await;
    assert_eq!(status, 401);
    for _ in 0..10 {
        let (status, _) = anon
            .post_json(
                "/api/session",
                &json!({"username": "ghost", "password": "whatever it is"}),
            )
            .await;
        assert_eq!(status, 401);
    }
    let (status, _) = anon
        .post_json(
            "/api/session",
            &json!({"username": "ghost", "password": "whatever it is"}),
        )
        .await;
    assert_eq!(status, 429);
    gw.running.shutdown().await.unwrap();
}
