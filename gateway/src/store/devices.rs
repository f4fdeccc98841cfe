//! The inventory as stored, and devices that published without being in it.

use async_trait::async_trait;
use serde::Serialize;

use super::StoreResult;
use crate::model::{Device, UnixMs};

/// An unregistered device as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnregisteredDevice {
    /// Device id.
    pub id: String,
    /// Kind claimed by its status message.
    pub claimed_kind: Option<String>,
    /// First message.
    pub first_seen_ms: UnixMs,
    /// Latest message.
    pub last_seen_ms: UnixMs,
    /// Topic of the latest message.
    pub last_topic: String,
    /// Messages received.
    pub message_count: u64,
}

/// Devices: the inventory and the unregistered list.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Every device, by id.
    async fn list_devices(&self) -> StoreResult<Vec<Device>>;
    /// One device.
    async fn get_device(&self, id: &str) -> StoreResult<Option<Device>>;
    /// Insert or replace devices in one transaction; they leave the unregistered list.
    async fn upsert_devices(&self, devices: &[Device], now_ms: UnixMs) -> StoreResult<()>;
    /// Delete a device and its readings; `false` if it did not exist.
    async fn delete_device(&self, id: &str) -> StoreResult<bool>;
    /// Store devices' MQTT credentials, `(device id, hex SHA-256 of the secret)`, replacing
    /// earlier ones; ids not in the inventory are skipped. Returns how many were stored.
    async fn set_device_credentials(
        &self,
        credentials: &[(String, String)],
        now_ms: UnixMs,
    ) -> StoreResult<u64>;
    /// Every device's credential hash, `(device id, hex SHA-256)`, by id.
    async fn device_credentials(&self) -> StoreResult<Vec<(String, String)>>;
    /// Number of devices.
    async fn count_devices(&self) -> StoreResult<u64>;

    /// Unregistered devices, most recently seen first.
    async fn list_unregistered(&self, limit: u32) -> StoreResult<Vec<UnregisteredDevice>>;
    /// Number of distinct unregistered devices.
    async fn count_unregistered(&self) -> StoreResult<u64>;
    /// Forget unregistered devices last seen before `seen_before_ms`, then all but the `keep`
    /// most recently seen; returns how many were removed.
    async fn trim_unregistered(&self, keep: u64, seen_before_ms: UnixMs) -> StoreResult<u64>;
}
