#![no_main]
//! Any bytes on any uplink channel: decoding never panics, and what decodes is valid.

use libfuzzer_sys::fuzz_target;
use streetgate_protocols::codec::{self, Limits};
use streetgate_protocols::{Channel, DeviceId, Topic, Validate};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else { return };
    let channel = Channel::ALL[usize::from(selector) % Channel::ALL.len()];
    let Ok(id) = DeviceId::new("FUZZ-1") else { return };
    let topic = Topic::new(id, channel);
    if let Ok(msg) = codec::decode_uplink(&topic, payload, &Limits::default()) {
        assert_eq!(msg.validate(), Ok(()));
        assert_eq!(msg.device_id(), &topic.device_id);
    }
});
