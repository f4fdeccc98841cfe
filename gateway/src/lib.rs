//! The streetgate gateway: ingest (MQTT, Modbus) → normalise → rules → cases → notify, with an
//! HTTP API and embedded defaults (broker, SQLite) so one command runs the whole thing.
#![warn(missing_docs)]

pub mod model;
