#![no_main]
//! Any register contents: identification, telemetry of every kind, config, command and ack
//! decoding never panic.

use libfuzzer_sys::fuzz_target;
use streetgate_protocols::DeviceKind;
use streetgate_protocols::modbus;

fuzz_target!(|data: &[u8]| {
    let regs: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    let _ = modbus::decode_identification(&regs);
    for kind in DeviceKind::ALL {
        let _ = modbus::decode_telemetry(kind, &regs);
    }
    let _ = modbus::decode_config(&regs);
    let _ = modbus::decode_command(&regs);
    let _ = modbus::decode_ack(&regs);
});
