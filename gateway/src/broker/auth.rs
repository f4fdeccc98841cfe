//! Who may connect to the embedded broker, and what each client may publish and subscribe to.
//!
//! With `broker.auth = "devices"` (the default) a client is one of:
//! - **the gateway** itself: its publisher's client id is reserved and needs the secret the
//!   gateway makes at start (it never leaves the process); it may publish and subscribe to
//!   anything;
//! - **a device**: the client id is a device id, the user name is that id too (or absent), the
//!   password the device's secret ([`issue_secret`]), checked against the hash in the store; or,
//!   on the TLS listener with `broker.tls_client_ca`, a certificate naming the client id. A
//!   device may publish only its own uplink topics (`telemetry`, `event`, `status`, `ack`), its
//!   will only on its own `status`, and subscribe only to its own `config` and `command`.
//!
//! With `broker.auth = "open"` anyone may connect and do anything, except take one of the
//! gateway's client ids, which stays reserved in both modes (a client that connected with it
//! would take the gateway's session over).

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use streetgate_protocols::topic::{Channel, PREFIX};

use crate::auth::same;

/// `broker.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Devices authenticate and are confined to their own topics.
    #[default]
    Devices,
    /// Anyone may connect and publish or subscribe anywhere (a trusted test network).
    Open,
}

/// What an accepted connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Client {
    /// The gateway's own connection.
    Gateway,
    /// The device with this id.
    Device(String),
    /// A client of an open broker.
    Anonymous,
}

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A user name other than the client id, or a wrong or missing password.
    BadCredentials,
    /// No credentials were issued for this device id (or it is not in the inventory).
    UnknownDevice,
    /// One of the gateway's own client ids, without the gateway's secret.
    Reserved,
}

impl Refusal {
    /// What the broker logs.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Self::BadCredentials => {
                "wrong credentials: the user name must be the client id (the device id) and the password the device's secret"
            }
            Self::UnknownDevice => {
                "no credentials issued for this client id: register the device and issue them (streetgate device credentials)"
            }
            Self::Reserved => "the client id is reserved for the gateway's own connection",
        }
    }
}

/// The broker's client authentication and topic rules.
#[derive(Debug)]
pub struct ClientAuth {
    mode: AuthMode,
    reserved: Vec<String>,
    gateway_secret: String,
    devices: RwLock<HashMap<String, String>>,
}

impl ClientAuth {
    /// Authentication in `mode`; `reserved` are the gateway's own client ids.
    pub fn new(mode: AuthMode, reserved: Vec<String>) -> Self {
        Self {
            mode,
            reserved,
            gateway_secret: crate::auth::new_token("").0,
            devices: RwLock::default(),
        }
    }

    /// An open broker with no reserved ids (a bench's broker on its own).
    pub fn open() -> Self {
        Self::new(AuthMode::Open, Vec::new())
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The password of the gateway's own connections (user name = their client id).
    pub fn gateway_secret(&self) -> &str {
        &self.gateway_secret
    }

    /// Replace every device's credential hash (hex SHA-256 of its secret).
    pub fn load(&self, credentials: impl IntoIterator<Item = (String, String)>) {
        let map = credentials.into_iter().collect();
        *self.devices.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Set devices' credential hashes.
    pub fn insert(&self, credentials: impl IntoIterator<Item = (String, String)>) {
        let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
        devices.extend(credentials);
    }

    /// Forget a device (it was removed from the inventory).
    pub fn remove(&self, id: &str) {
        self.devices
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Whether `id` has credentials.
    pub fn has(&self, id: &str) -> bool {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Devices with credentials.
    pub fn devices(&self) -> usize {
        self.devices.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Decide on a CONNECT. `certificate`: the TLS client certificate names `client_id` (checked
    /// before).
    pub(super) fn authenticate(
        &self,
        client_id: &str,
        login: Option<(&str, &str)>,
        certificate: bool,
    ) -> Result<Client, Refusal> {
        let user_ok = |user: &str| user.is_empty() || user == client_id;
        if self.reserved.iter().any(|r| r == client_id) {
            return match login {
                Some((user, password)) if user_ok(user) && same(password, &self.gateway_secret) => {
                    Ok(Client::Gateway)
                }
                _ => Err(Refusal::Reserved),
            };
        }
        match self.mode {
            AuthMode::Open => Ok(Client::Anonymous),
            AuthMode::Devices if certificate => Ok(Client::Device(client_id.to_owned())),
            AuthMode::Devices => {
                let stored = self
                    .devices
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(client_id)
                    .cloned();
                let Some(stored) = stored else {
                    return Err(Refusal::UnknownDevice);
                };
                match login {
                    Some((user, password))
                        if user_ok(user) && same(&secret_hash(password), &stored) =>
                    {
                        Ok(Client::Device(client_id.to_owned()))
                    }
                    _ => Err(Refusal::BadCredentials),
                }
            }
        }
    }
}

impl Client {
    /// May this client publish on `topic` (a valid topic name)?
    pub(super) fn may_publish(&self, topic: &str) -> bool {
        match self {
            Self::Gateway | Self::Anonymous => true,
            Self::Device(id) => own_channel(id, topic).is_some_and(Channel::is_uplink),
        }
    }

    /// May this client leave a will on `topic`?
    pub(super) fn may_will(&self, topic: &str) -> bool {
        match self {
            Self::Gateway | Self::Anonymous => true,
            Self::Device(id) => own_channel(id, topic) == Some(Channel::Status),
        }
    }

    /// May this client subscribe to `filter` (a valid filter)?
    pub(super) fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Self::Gateway | Self::Anonymous => true,
            Self::Device(id) => own_channel(id, filter)
                .is_some_and(|c| matches!(c, Channel::Config | Channel::Command)),
        }
    }
}

/// The channel of `topic` when it is exactly `streetgate/v1/{id}/{channel}` (no wildcard).
fn own_channel(id: &str, topic: &str) -> Option<Channel> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let channel = rest.strip_prefix(id)?.strip_prefix('/')?;
    Channel::ALL.into_iter().find(|c| c.as_str() == channel)
}

/// A new device secret: 20 characters without look-alikes (about 115 bits), shown once.
pub fn issue_secret() -> String {
    crate::auth::random_password()
}

/// What the store keeps of a device secret: its hex SHA-256. The secrets are random and long, so
/// a fast hash is as safe as a slow one, and a reconnect storm of a whole fleet costs nothing.
pub fn secret_hash(secret: &str) -> String {
    crate::auth::token_hash(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(mode: AuthMode) -> ClientAuth {
        let a = ClientAuth::new(mode, vec!["streetgate-gw".into()]);
        a.load([("MH-1".to_owned(), secret_hash("s3cret-s3cret"))]);
        a
    }

    #[test]
    fn devices_need_their_own_secret() {
        let a = auth(AuthMode::Devices);
        let ok = Ok(Client::Device("MH-1".into()));
        assert_eq!(
            a.authenticate("MH-1", Some(("MH-1", "s3cret-s3cret")), false),
            ok
        );
        assert_eq!(
            a.authenticate("MH-1", Some(("", "s3cret-s3cret")), false),
            ok
        );
        assert_eq!(
            a.authenticate("MH-1", Some(("MH-2", "s3cret-s3cret")), false),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate("MH-1", Some(("MH-1", "wrong")), false),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate("MH-1", None, false),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate("MH-2", Some(("MH-2", "s3cret-s3cret")), false),
            Err(Refusal::UnknownDevice)
        );
        assert_eq!(
            a.authenticate("MH-2", None, true),
            Ok(Client::Device("MH-2".into()))
        );
        a.remove("MH-1");
        assert_eq!(
            a.authenticate("MH-1", Some(("MH-1", "s3cret-s3cret")), false),
            Err(Refusal::UnknownDevice)
        );
    }

    #[test]
    fn the_gateway_ids_are_reserved_in_both_modes() {
        for mode in [AuthMode::Devices, AuthMode::Open] {
            let a = auth(mode);
            let secret = a.gateway_secret().to_owned();
            assert_eq!(
                a.authenticate("streetgate-gw", Some(("streetgate-gw", &secret)), false),
                Ok(Client::Gateway)
            );
            assert_eq!(
                a.authenticate("streetgate-gw", None, false),
                Err(Refusal::Reserved)
            );
            assert_eq!(
                a.authenticate("streetgate-gw", Some(("streetgate-gw", "guess")), true),
                Err(Refusal::Reserved)
            );
        }
        let open = auth(AuthMode::Open);
        assert_eq!(
            open.authenticate("anyone", None, false),
            Ok(Client::Anonymous)
        );
    }

    #[test]
    fn a_device_is_confined_to_its_own_topics() {
        let d = Client::Device("MH-1".into());
        for ok in ["telemetry", "event", "status", "ack"] {
            assert!(d.may_publish(&format!("streetgate/v1/MH-1/{ok}")), "{ok}");
        }
        for bad in [
            "streetgate/v1/MH-1/command",
            "streetgate/v1/MH-1/config",
            "streetgate/v1/MH-2/telemetry",
            "streetgate/v1/MH-10/telemetry",
            "streetgate/v1/MH-1/telemetry/x",
            "streetgate/v1/_alerts/manhole_cover",
            "other/MH-1/telemetry",
        ] {
            assert!(!d.may_publish(bad), "{bad}");
        }
        assert!(d.may_will("streetgate/v1/MH-1/status"));
        assert!(!d.may_will("streetgate/v1/MH-2/status"));
        assert!(!d.may_will("streetgate/v1/MH-1/event"));
        assert!(d.may_subscribe("streetgate/v1/MH-1/command"));
        assert!(d.may_subscribe("streetgate/v1/MH-1/config"));
        for bad in [
            "#",
            "streetgate/v1/+/command",
            "streetgate/v1/MH-1/#",
            "streetgate/v1/MH-2/command",
            "streetgate/v1/MH-1/telemetry",
            "streetgate/v1/_alerts/#",
        ] {
            assert!(!d.may_subscribe(bad), "{bad}");
        }
        assert!(Client::Gateway.may_publish("streetgate/v1/MH-1/command"));
        assert!(Client::Anonymous.may_subscribe("#"));
    }
}
