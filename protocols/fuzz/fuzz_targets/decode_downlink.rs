#![no_main]
//! Any bytes as a config or command: decoding never panics.

use libfuzzer_sys::fuzz_target;
use streetgate_protocols::codec::{self, Limits};
use streetgate_protocols::Channel;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else { return };
    let channel = if selector & 1 == 0 { Channel::Config } else { Channel::Command };
    let _ = codec::decode_downlink(channel, payload, &Limits::default());
});
