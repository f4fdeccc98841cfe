//! Every JSON example and every `mosquitto_pub` payload in protocols/README.md decodes with the
//! real decoder, for the topic the document gives it.
#![allow(clippy::unwrap_used)]

use streetgate_protocols::codec::{self, Limits};
use streetgate_protocols::{Channel, Topic};

const README: &str = include_str!("../README.md");

fn check(topic: &str, payload: &str) {
    let topic = Topic::parse(topic).unwrap_or_else(|e| panic!("{topic}: {e}"));
    let result = if topic.channel.is_uplink() {
        codec::decode_uplink(&topic, payload.as_bytes(), &Limits::default()).map(drop)
    } else {
        codec::decode_downlink(topic.channel, payload.as_bytes(), &Limits::default()).map(drop)
    };
    if let Err(e) = result {
        panic!("example for {topic} does not decode: {e}\n{payload}");
    }
}

#[test]
fn json_examples_decode() {
    let mut topic: Option<String> = None;
    let mut checked = 0;
    let mut lines = README.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.split("`streetgate/v1/").nth(1) {
            topic = rest.split('`').next().map(|t| format!("streetgate/v1/{t}"));
        }
        if line.trim() == "```json" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            let t = topic
                .take()
                .expect("a Topic: line precedes every JSON example");
            check(&t, &body.join("\n"));
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} examples found");
}

#[test]
fn mosquitto_pub_examples_decode() {
    let mut kinds = std::collections::BTreeSet::new();
    for line in README.lines().filter(|l| l.starts_with("mosquitto_pub")) {
        let topic = line
            .split("-t '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap();
        let payload = line
            .split("-m '")
            .nth(1)
            .and_then(|r| r.rsplit_once('\''))
            .unwrap()
            .0;
        check(topic, payload);
        if Topic::parse(topic).unwrap().channel == Channel::Telemetry {
            kinds.insert(
                payload
                    .split("\"data\":{\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["bin", "manhole", "streetlight", "toilet"]
    );
}
