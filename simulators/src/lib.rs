//! Simulated street devices that *are* the firmware: each node runs the `streetgate-firmware`
//! application and drivers unchanged, over simulated buses whose chips answer with the real
//! register bytes and frames a physical model implies (a tilted cover gives the LIS3DH output
//! of that pose, a filling bin the A02YYUW frames of its distance).
//!
//! * [`physics`] — the world: cover pose and traffic vibration, bin filling and collection,
//!   toilet gases, lamp electrics, batteries;
//! * [`chips`] — simulated parts on simulated buses, speaking each datasheet's protocol;
//! * [`node`] — a firmware device assembled from real drivers over those chips;
//! * [`mqtt`] and [`modbus`] — how nodes reach the gateway: an MQTT connection each, or units
//!   on RS-485 lines behind Modbus TCP converters (and Modbus RTU on a serial port).
#![warn(missing_docs)]

pub mod battery;
pub mod bench;
pub mod chips;
pub mod city;
pub mod demo;
pub mod fleet;
pub mod modbus;
pub mod mqtt;
pub mod node;
pub mod physics;
pub mod scenario;
pub mod teams;
