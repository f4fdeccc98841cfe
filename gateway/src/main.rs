//! `streetgate` command-line entry point.
fn main() {}
