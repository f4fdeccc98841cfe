//! DFRobot A02YYUW waterproof ultrasonic ranger (30–4500 mm) over UART, 9600 8N1.
//!
//! In processed-output mode the sensor streams 4-byte frames: `0xFF`, distance high byte,
//! distance low byte, checksum `(0xFF + H + L) & 0xFF`. The driver resynchronises on the
//! header and never reads more than [`MAX_SCAN`] bytes per measurement, so junk on the line can
//! never block it.

use core::fmt;

use embedded_io::Read;

use crate::sensors::Ranger;

/// Frame header.
pub const HEADER: u8 = 0xFF;
/// Bytes examined per measurement before giving up.
pub const MAX_SCAN: usize = 32;
/// Blind zone: anything closer is not a valid echo.
pub const MIN_MM: u16 = 30;
/// Longest range.
pub const MAX_MM: u16 = 4500;

/// A frame as the sensor sends it (for simulators and tests).
pub fn encode_frame(mm: u16) -> [u8; 4] {
    let [hi, lo] = mm.to_be_bytes();
    let sum = HEADER.wrapping_add(hi).wrapping_add(lo);
    [HEADER, hi, lo, sum]
}

/// Errors of the A02YYUW driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// UART error.
    Uart(E),
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uart(e) => write!(f, "A02YYUW UART error: {e:?}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// The ranger on a UART.
#[derive(Debug)]
pub struct A02yyuw<U> {
    uart: U,
}

impl<U: Read> A02yyuw<U> {
    /// Wrap the UART.
    pub fn new(uart: U) -> Self {
        Self { uart }
    }

    /// Release the UART.
    pub fn release(self) -> U {
        self.uart
    }

    fn byte(&mut self) -> Result<Option<u8>, Error<U::Error>> {
        let mut b = [0u8];
        match self.uart.read(&mut b).map_err(Error::Uart)? {
            0 => Ok(None),
            _ => Ok(Some(b[0])),
        }
    }
}

impl<U: Read> Ranger for A02yyuw<U> {
    type Error = Error<U::Error>;
    const BLIND_ZONE_MM: u16 = MIN_MM;

    /// The next valid frame's distance (blind-zone readings as [`MIN_MM`]); `None` for no echo,
    /// out of range, a line with no valid frame within [`MAX_SCAN`] bytes, or no data.
    fn distance_mm(&mut self) -> Result<Option<u16>, Self::Error> {
        let mut window = [0u8; 4];
        let mut filled = 0;
        for _ in 0..MAX_SCAN {
            let Some(b) = self.byte()? else {
                return Ok(None);
            };
            if filled == 0 && b != HEADER {
                continue;
            }
            window[filled] = b;
            filled += 1;
            if filled == 4 {
                let [h, hi, lo, sum] = window;
                if h.wrapping_add(hi).wrapping_add(lo) == sum {
                    let mm = u16::from_be_bytes([hi, lo]);
                    // 0 is "no echo"; inside the blind zone the target is at the sensor.
                    return Ok((1..=MAX_MM).contains(&mm).then_some(mm.max(MIN_MM)));
                }
                // Bad checksum: resynchronise on the next header inside the window.
                let next = window[1..]
                    .iter()
                    .position(|&b| b == HEADER)
                    .map_or(0, |p| p + 1);
                window.copy_within(next.., 0);
                filled = if next == 0 { 0 } else { 4 - next };
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::test_serial::FakeSerial;

    #[test]
    fn frames() {
        assert_eq!(encode_frame(0x07A1), [0xFF, 0x07, 0xA1, 0xA7]);
        let mut r = A02yyuw::new(FakeSerial::with_rx(&encode_frame(1953)));
        assert_eq!(r.distance_mm(), Ok(Some(1953)));
        assert_eq!(r.distance_mm(), Ok(None)); // no more data
    }

    #[test]
    fn resynchronises_on_garbage_and_bad_checksums() {
        let mut bytes = std::vec![0x12, 0x34, 0xFF, 0x01, 0x02, 0x00]; // bad checksum
        bytes.extend_from_slice(&encode_frame(812));
        let mut r = A02yyuw::new(FakeSerial::with_rx(&bytes));
        assert_eq!(r.distance_mm(), Ok(Some(812)));
    }

    #[test]
    fn header_inside_a_bad_frame() {
        // 0xFF 0xFF 0x03 0x20 ... : the first header is junk, the second starts the frame.
        let mut bytes = std::vec![0xFF];
        bytes.extend_from_slice(&encode_frame(800));
        let mut r = A02yyuw::new(FakeSerial::with_rx(&bytes));
        assert_eq!(r.distance_mm(), Ok(Some(800)));
    }

    #[test]
    fn blind_zone_no_echo_and_junk() {
        let mut r = A02yyuw::new(FakeSerial::with_rx(&encode_frame(10)));
        assert_eq!(
            r.distance_mm(),
            Ok(Some(MIN_MM)),
            "blind zone: at the sensor"
        );
        let mut r = A02yyuw::new(FakeSerial::with_rx(&encode_frame(0)));
        assert_eq!(r.distance_mm(), Ok(None), "no echo");
        let junk = [0x55u8; 100];
        let mut uart = FakeSerial::with_rx(&junk);
        let mut r = A02yyuw::new(&mut uart);
        assert_eq!(r.distance_mm(), Ok(None));
        // Bounded: only MAX_SCAN bytes consumed.
        assert_eq!(uart.rx.len(), 100 - MAX_SCAN);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut r = A02yyuw::new(FakeSerial::with_rx(&bytes));
            for _ in 0..10 {
                let _ = r.distance_mm();
            }
        }
    }
}
