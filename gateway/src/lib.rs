//! The streetgate gateway: ingest (MQTT, Modbus) → normalise → rules → cases → notify, with an
//! HTTP API and embedded defaults (broker, SQLite) so one command runs the whole thing.
//!
//! Modules follow the data flow: [`ingest`] (transports → readings), [`pipeline`] (readings →
//! rules → store writes), [`store`], [`api`]; [`app`] wires them, [`config`] configures them,
//! [`broker`] is the embedded MQTT broker.
#![warn(missing_docs)]

pub mod model;

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod automation;
pub mod broker;
pub mod cases;
pub mod clock;
pub mod commands;
pub mod config;
pub mod ingest;
pub mod inventory;
pub mod lighting;
pub mod metrics;
pub mod pipeline;
pub mod publisher;
pub mod rules;
pub mod store;
