//! Device logic for streetgate sensor nodes, as it runs on a microcontroller.
//!
//! `#![no_std]` and allocation-free: drivers are generic over `embedded-hal` 1.0 bus traits,
//! applications are state machines driven by `tick(now)`, and transport, clock and persistent
//! settings are traits so that the same code runs on a board, in host tests and in the simulators.
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod app;
pub mod drivers;
pub mod filter;
pub mod platform;
pub mod queue;
pub mod register_image;
pub mod sensors;
pub mod settings;
