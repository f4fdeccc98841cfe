//! Devices' MQTT credentials: issued when a device is registered (or on demand), kept in the
//! store as hashes, shown once, and exported for provisioning and for an external broker
//! (a Mosquitto password file and ACL).
//!
//! A device connects with its id as client id and user name and its secret as password. The
//! embedded broker checks it ([`crate::broker::auth`]); for Mosquitto,
//! [`mosquitto_password_line`] writes the same secret in Mosquitto's own format and
//! [`MOSQUITTO_ACL`] confines each device to its topics.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha512;

use crate::broker::ClientAuth;
use crate::broker::auth::{issue_secret, secret_hash};
use crate::model::{Device, Transport, UnixMs};
use crate::store::{Store, StoreResult};

/// A credential as handed to whoever provisions the device: shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedCredential {
    /// Device id, also the MQTT client id.
    pub id: String,
    /// MQTT user name (the device id).
    pub username: String,
    /// MQTT password (the device's secret).
    pub password: String,
}

/// Which of `devices` talk MQTT and have no credential yet.
pub fn without_credentials<'a>(auth: &ClientAuth, devices: &'a [Device]) -> Vec<&'a Device> {
    devices
        .iter()
        .filter(|d| d.transport == Transport::Mqtt && !auth.has(d.id.as_str()))
        .collect()
}

/// Issue new secrets to `ids` (replacing any they had), store their hashes and let the broker
/// know. Ids not in the inventory get nothing. Returns the credentials, to be shown once.
pub async fn issue(
    store: &dyn Store,
    auth: &ClientAuth,
    ids: &[String],
    now_ms: UnixMs,
) -> StoreResult<Vec<IssuedCredential>> {
    let mut unique = HashSet::new();
    let issued: Vec<IssuedCredential> = ids
        .iter()
        .filter(|id| unique.insert(id.as_str()))
        .map(|id| IssuedCredential {
            id: id.clone(),
            username: id.clone(),
            password: issue_secret(),
        })
        .collect();
    let hashes: Vec<(String, String)> = issued
        .iter()
        .map(|c| (c.id.clone(), secret_hash(&c.password)))
        .collect();
    store.set_device_credentials(&hashes, now_ms).await?;
    // Only what the store kept (a device deleted meanwhile is skipped there).
    let kept: HashSet<String> = store
        .device_credentials()
        .await?
        .into_iter()
        .filter(|(id, hash)| hashes.iter().any(|(i, h)| i == id && h == hash))
        .map(|(id, _)| id)
        .collect();
    auth.insert(hashes.into_iter().filter(|(id, _)| kept.contains(id)));
    Ok(issued
        .into_iter()
        .filter(|c| kept.contains(&c.id))
        .collect())
}

/// The credentials as CSV (`id,username,password`), for provisioning.
pub fn to_csv(credentials: &[IssuedCredential]) -> String {
    let mut out = String::from("id,username,password\n");
    for c in credentials {
        // Device ids and secrets have no commas, quotes or line breaks.
        out.push_str(&format!("{},{},{}\n", c.id, c.username, c.password));
    }
    out
}

/// Iterations of PBKDF2-SHA512 in a Mosquitto 2 password file (`mosquitto_passwd`'s default).
const MOSQUITTO_PBKDF2_ITERATIONS: u32 = 101;

/// One line of a Mosquitto 2 password file: `user:$7$iterations$salt$hash`, PBKDF2-HMAC-SHA512
/// with a 12-byte salt, both base64, as `mosquitto_passwd` writes it.
pub fn mosquitto_password_line(username: &str, password: &str) -> String {
    let salt: [u8; 12] = rand::random();
    let hash = pbkdf2_sha512(password.as_bytes(), &salt, MOSQUITTO_PBKDF2_ITERATIONS);
    format!(
        "{username}:$7${MOSQUITTO_PBKDF2_ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// PBKDF2-HMAC-SHA512 with a 64-byte output (one block, RFC 8018 §5.2).
fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let mac = |data: &[&[u8]]| -> [u8; 64] {
        // HMAC takes a key of any length.
        let mut m = <Hmac<Sha512> as Mac>::new_from_slice(password)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for d in data {
            m.update(d);
        }
        m.finalize().into_bytes().into()
    };
    let mut u = mac(&[salt, &1u32.to_be_bytes()]);
    let mut t = u;
    for _ in 1..iterations {
        u = mac(&[&u]);
        for (t, u) in t.iter_mut().zip(u.iter()) {
            *t ^= u;
        }
    }
    t
}

/// Mosquitto ACL confining each device to its own topics, for a listener with
/// `use_username_as_clientid true` (so `%c`, the client id, is the authenticated user name).
/// The gateway's user (`mqtt.username`) gets the whole tree; add it above with
/// [`mosquitto_acl`].
pub const MOSQUITTO_ACL: &str = "\
# Devices: client id = user name = device id (listener option use_username_as_clientid true).
# Each publishes only its own uplink topics and reads only its own config and command.
pattern write streetgate/v1/%c/telemetry
pattern write streetgate/v1/%c/event
pattern write streetgate/v1/%c/status
pattern write streetgate/v1/%c/ack
pattern read streetgate/v1/%c/config
pattern read streetgate/v1/%c/command
";

/// The whole ACL file: the gateway's users (ingest and publisher) may read and write
/// everything under `streetgate/v1/`, devices only their own topics.
pub fn mosquitto_acl(gateway_users: &[&str]) -> String {
    let mut out = String::from(
        "# streetgate: written by `streetgate device credentials --mosquitto-acl`.\n\
         # The gateway: reads every device's uplinks, writes config, command and alerts.\n",
    );
    for user in gateway_users {
        out.push_str(&format!("user {user}\ntopic readwrite streetgate/v1/#\n"));
    }
    out.push('\n');
    out.push_str(MOSQUITTO_ACL);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_line_is_what_mosquitto_passwd_writes() {
        // `mosquitto_passwd -b pw dev1 secret` wrote this line (Mosquitto 2.0.11).
        let line = "dev1:$7$101$Wdt+4hXcG2jk7nh3$XvsopV9pgGN2hAF8q93WrW/yxpGx2/EXNUHq9y8d/gJJjalChV9crcADmcVOIheupOhY9J8x3y/EMpf8QKnYog==";
        let salt = STANDARD.decode("Wdt+4hXcG2jk7nh3").unwrap();
        let hash = pbkdf2_sha512(b"secret", &salt, 101);
        assert_eq!(
            format!("dev1:$7$101$Wdt+4hXcG2jk7nh3${}", STANDARD.encode(hash)),
            line
        );
        let ours = mosquitto_password_line("MH-1", "pw");
        let parts: Vec<&str> = ours.split('$').collect();
        assert_eq!(parts[0], "MH-1:");
        assert_eq!(parts[1..3], ["7", "101"]);
        assert_eq!(STANDARD.decode(parts[3]).unwrap().len(), 12);
        assert_eq!(STANDARD.decode(parts[4]).unwrap().len(), 64);
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_device() {
        let c = IssuedCredential {
            id: "MH-1".into(),
            username: "MH-1".into(),
            password: "abc".into(),
        };
        assert_eq!(to_csv(&[c]), "id,username,password\nMH-1,MH-1,abc\n");
    }
}
