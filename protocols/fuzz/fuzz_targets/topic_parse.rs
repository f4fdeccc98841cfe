#![no_main]
//! Topic parsing never panics and what parses formats back to the same text.

use libfuzzer_sys::fuzz_target;
use streetgate_protocols::Topic;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    if let Ok(topic) = Topic::parse(text) {
        assert_eq!(topic.format().as_str(), text);
    }
});
