//! The battery report runs the real firmware: a shorter heartbeat sends more messages and
//! shortens the projected life; the figures are finite and positive.

use streetgate_protocols::DeviceKind;
use streetgate_simulators::battery;

#[test]
fn heartbeat_drives_messages_and_life() {
    for kind in [DeviceKind::Manhole, DeviceKind::Bin] {
        let default = battery::run(kind, None, 3, 10);
        let chatty = battery::run(kind, Some(600), 3, 10);
        for r in [&default, &chatty] {
            assert!(
                r.mah_per_day.is_finite() && r.mah_per_day > 0.0,
                "{}",
                r.render()
            );
            assert!(
                r.life_days.is_finite() && r.life_days > 0.0,
                "{}",
                r.render()
            );
        }
        assert!(
            chatty.messages_per_day > default.messages_per_day + 100.0,
            "{}\n{}",
            default.render(),
            chatty.render()
        );
        assert!(
            chatty.life_days < default.life_days,
            "{}\n{}",
            default.render(),
            chatty.render()
        );
    }
}
