//! Chat group robots where Chinese maintenance teams read their alerts: WeCom (企业微信),
//! DingTalk (钉钉) and Feishu / Lark (飞书). Each gets the case event as a readable message
//! ([`super::message`]) in its own request format, signed as it documents, and answers with an
//! error code in a 200 response: a rate limit is retried with back-off, a refusal (bad
//! signature, keyword missing, bad key) fails at once.
//!
//! - WeCom: `POST {url}` `{"msgtype":"markdown","markdown":{"content":…}}`; answer
//!   `{"errcode":0}`; 45009 = rate limited.
//! - DingTalk: `POST {url}&timestamp={ms}&sign={s}` with s = URL-encoded
//!   base64(HMAC-SHA256(key = secret, message = "{ms}\n{secret}")) when a secret is set;
//!   `{"msgtype":"markdown","markdown":{"title":…,"text":…}}`; answer `{"errcode":0}`;
//!   130101 = sending too fast. In keyword mode every message contains the keyword.
//! - Feishu: `POST {url}` `{"timestamp":"{s}","sign":…,"msg_type":"interactive","card":…}` with
//!   sign = base64(HMAC-SHA256(key = "{s}\n{secret}", message = "")) when a secret is set;
//!   answer `{"code":0}`; 9499 and 11232 = rate limited.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::{WebhookConfig, WebhookKind};
use super::message::Message;

/// HMAC-SHA256 of `message` with `key`, base64.
fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(message);
    BASE64.encode(mac.finalize().into_bytes())
}

/// DingTalk's signature for `timestamp_ms` (before URL encoding).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_base64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// Feishu's signature for `timestamp_s`.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    hmac_base64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

/// A request ready to send: URL and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Where to POST.
    pub url: String,
    /// The JSON body.
    pub body: Value,
}

/// The request for `message` to the robot `config`, at `now_ms` (the signatures' time).
pub fn request(
    config: &WebhookConfig,
    message: &Message,
    now_ms: i64,
) -> Result<ChatRequest, String> {
    match config.kind {
        WebhookKind::Generic => Err("a generic webhook takes the event's JSON".to_owned()),
        WebhookKind::Wecom => Ok(ChatRequest {
            url: config.url.clone(),
            body: json!({"msgtype": "markdown", "markdown": {"content": message.markdown}}),
        }),
        WebhookKind::Dingtalk => {
            let mut url =
                reqwest::Url::parse(&config.url).map_err(|e| format!("url {}: {e}", config.url))?;
            if let Some(secret) = &config.secret {
                url.query_pairs_mut()
                    .append_pair("timestamp", &now_ms.to_string())
                    .append_pair("sign", &dingtalk_sign(secret, now_ms));
            }
            let mut text = message.markdown.clone();
            if let Some(keyword) = &config.keyword
                && !text.contains(keyword.as_str())
            {
                text.push_str(&format!("\n\n{keyword}"));
            }
            Ok(ChatRequest {
                url: url.to_string(),
                body: json!({"msgtype": "markdown", "markdown": {"title": message.title, "text": text}}),
            })
        }
        WebhookKind::Feishu => {
            let mut body = json!({
                "msg_type": "interactive",
                "card": {
                    "header": {
                        "title": {"tag": "plain_text", "content": message.title},
                        "template": if message.title.contains("紧急") || message.title.contains("URGENT") { "red" } else { "blue" },
                    },
                    "elements": [{"tag": "markdown", "content": message.markdown}],
                },
            });
            if let Some(secret) = &config.secret {
                let s = now_ms.div_euclid(1000);
                body["timestamp"] = json!(s.to_string());
                body["sign"] = json!(feishu_sign(secret, s));
            }
            Ok(ChatRequest {
                url: config.url.clone(),
                body,
            })
        }
    }
}

/// What the robot's answer (HTTP 200) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Taken.
    Ok,
    /// Rate limited: try again later.
    RateLimited(String),
    /// Refused for good (bad key or signature, keyword missing, bad message).
    Refused(String),
}

/// Read the robot's answer body.
pub fn answer(kind: WebhookKind, body: &str) -> Answer {
    // Generic receivers answer as they like: 2xx is enough.
    if kind == WebhookKind::Generic {
        return Answer::Ok;
    }
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Answer::Refused(format!("unreadable answer: {}", truncate(body)));
    };
    let (code, msg) = match kind {
        WebhookKind::Feishu => (v["code"].as_i64(), v["msg"].as_str()),
        _ => (v["errcode"].as_i64(), v["errmsg"].as_str()),
    };
    let msg = msg.unwrap_or_default();
    match (kind, code) {
        (_, Some(0)) => Answer::Ok,
        (WebhookKind::Wecom, Some(45009))
        | (WebhookKind::Dingtalk, Some(130_101))
        | (WebhookKind::Feishu, Some(9499 | 11232)) => {
            Answer::RateLimited(format!("error code {}: {msg}", code.unwrap_or_default()))
        }
        (_, Some(c)) => Answer::Refused(format!("error code {c}: {msg}")),
        (_, None) => Answer::Refused(format!("answer without an error code: {}", truncate(body))),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently: Python's hmac and base64 modules
    // (`base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest())`).
    #[test]
    fn signatures_as_documented() {
        assert_eq!(
            dingtalk_sign("SECexample", 1_700_000_000_000),
            "uroalHrWHORz59talE1o26b8HuX2kOp8WlAN91F9Pj0="
        );
        assert_eq!(
            feishu_sign("example", 1_700_000_000),
            "IDYtqgwsyU5irwQ/8nvd4ncBjc/KPCpVGkxbLfWDsyg="
        );
    }

    #[test]
    fn answers() {
        assert_eq!(
            answer(WebhookKind::Dingtalk, r#"{"errcode":0,"errmsg":"ok"}"#),
            Answer::Ok
        );
        assert!(matches!(
            answer(
                WebhookKind::Dingtalk,
                r#"{"errcode":130101,"errmsg":"send too fast"}"#
            ),
            Answer::RateLimited(_)
        ));
        assert!(matches!(
            answer(
                WebhookKind::Dingtalk,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            Answer::Refused(_)
        ));
        assert!(matches!(
            answer(
                WebhookKind::Wecom,
                r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            ),
            Answer::RateLimited(_)
        ));
        assert!(matches!(
            answer(
                WebhookKind::Feishu,
                r#"{"code":19021,"msg":"sign match fail"}"#
            ),
            Answer::Refused(_)
        ));
        assert!(matches!(
            answer(
                WebhookKind::Feishu,
                r#"{"code":11232,"msg":"frequency limited"}"#
            ),
            Answer::RateLimited(_)
        ));
        assert_eq!(answer(WebhookKind::Generic, "ok"), Answer::Ok);
        assert!(matches!(
            answer(WebhookKind::Wecom, "<html>"),
            Answer::Refused(_)
        ));
    }
}
