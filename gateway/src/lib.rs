//! The streetgate gateway: ingest (MQTT, Modbus) → normalise → rules → cases → store and
//! outputs → API and alerts, with embedded defaults (broker, SQLite) so one command runs the
//! whole thing.
//!
//! The modules, in the order data flows through them:
//!
//! | step | modules |
//! |---|---|
//! | transports | [`broker`] (embedded MQTT broker), [`mqtt`] (client of an external broker), [`ingest`] (decode, validate, sequence numbers; Modbus polling) |
//! | readings → conditions | [`pipeline`] (the task chain and the store writer), [`rules`] (thresholds, holds, offline timers), [`lighting`] (lighting rate) |
//! | conditions → cases | [`automation`] (rules and incidents against the store), [`cases`] (the case machine, incidents, and the case service the automation and the API share) |
//! | persistence and outputs | [`store`] (one trait per entity; SQLite and PostgreSQL), [`outputs`] (committed readings to a time-series database), [`ha`] (active/standby lease) |
//! | people and systems | [`api`] (HTTP), [`console`] (the web console the API serves), [`alerts`] (case events to MQTT and webhooks), [`publisher`] and [`commands`] (downlink to lamps) |
//! | evaluation | [`evaluation`] (monthly figures per grid, team and case type, rankings, lighting compliance, the bulletin) |
//!
//! [`app`] wires them; [`config`] assembles the sections each module defines and checks
//! ([`settings`]); [`tls`] serves the API and the broker's second listener over TLS; [`model`], [`clock`], [`inventory`] and [`metrics`] are shared by all.
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
pub mod console;
pub mod evaluation;
pub mod ha;
pub mod ingest;
pub mod inventory;
pub mod lighting;
pub mod limits;
pub mod metrics;
pub mod mqtt;
pub mod outputs;
pub mod pipeline;
pub mod publisher;
pub mod rules;
pub mod settings;
pub mod store;
pub mod tls;
