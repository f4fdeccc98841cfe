//! Static RAM of each application, as `size_of` of the whole device (node core with its
//! outbox, settings and the application state). Run with `--nocapture` to print the figures
//! recorded in firmware/README.md.

use core::convert::Infallible;
use core::mem::size_of;

use streetgate_firmware::app::bin::Bin;
use streetgate_firmware::app::manhole::Manhole;
use streetgate_firmware::app::streetlight::Streetlight;
use streetgate_firmware::app::toilet::Toilet;
use streetgate_firmware::app::{Device, NoSensor, Node};
use streetgate_firmware::queue::Outbox;
use streetgate_firmware::register_image::RegisterImage;
use streetgate_firmware::sensors::{GasSample, GasSensor, LampDriver, Metering, Thermometer};

/// Zero-sized stand-ins: the figures are the applications' own state, not bus handles.
struct Gas;
impl GasSensor for Gas {
    type Error = Infallible;
    fn read(&mut self) -> Result<GasSample, Infallible> {
        Ok(GasSample {
            nh3_mg_m3: 0.0,
            h2s_mg_m3: 0.0,
        })
    }
}
struct Temp;
impl Thermometer for Temp {
    type Error = Infallible;
    fn temperature_c(&mut self) -> Result<f32, Infallible> {
        Ok(20.0)
    }
}
struct Lamp;
impl LampDriver for Lamp {
    type Error = Infallible;
    fn set_relay(&mut self, _: bool) -> Result<(), Infallible> {
        Ok(())
    }
    fn set_dim_pct(&mut self, _: u8) -> Result<(), Infallible> {
        Ok(())
    }
    fn measure(&mut self) -> Result<Metering, Infallible> {
        Ok(Metering::default())
    }
}

#[test]
fn static_ram_per_application() {
    let rows = [
        ("node core (incl. outbox)", size_of::<Node>()),
        ("  outbox (32 × 512 B)", size_of::<Outbox<32>>()),
        ("streetlight", size_of::<Device<Streetlight<Lamp>>>()),
        (
            "manhole",
            size_of::<Device<Manhole<NoSensor, NoSensor, NoSensor>>>(),
        ),
        (
            "bin",
            size_of::<Device<Bin<NoSensor, Temp, NoSensor, NoSensor>>>(),
        ),
        ("toilet", size_of::<Device<Toilet<Gas, NoSensor>>>()),
        ("Modbus register image", size_of::<RegisterImage>()),
    ];
    for (name, bytes) in rows {
        println!("{name:<28} {bytes:>6} B");
    }
    // The budget of a 64 KiB-RAM Cortex-M4: the device state must leave room for stacks.
    for (name, bytes) in rows {
        assert!(bytes < 24 * 1024, "{name} takes {bytes} B");
    }
}
