//! `streetgate-sim bench` in miniature: every section runs against a real gateway and finds
//! every message stored, every alarm a case and the Modbus units polled. Guards the command
//! itself; the figures are not checked (a debug build on a shared machine).

use streetgate_simulators::bench::{self, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_section_runs_and_loses_nothing() {
    let opts = BenchOptions {
        messages: 2000,
        publishers: 2,
        devices: 100,
        load_rate: 200,
        alarms: 5,
        lamps: 3000,
        modbus_units: 40,
        converters: 2,
        modbus_secs: 2,
        mosquitto_bin: std::env::var_os("STREETGATE_TEST_MOSQUITTO_BIN").map(Into::into),
        ..BenchOptions::default()
    };
    bench::run(&opts)
        .await
        .expect("the bench ran and lost nothing");
}
