//! TI TMP102 digital temperature sensor over I2C (12-bit, 0.0625 °C/LSB).

use core::fmt;

use embedded_hal::i2c::I2c;

use crate::sensors::Thermometer;

/// Temperature register pointer.
pub const TEMPERATURE: u8 = 0x00;
/// Resolution, °C per LSB.
pub const LSB_C: f32 = 0.0625;

/// Errors of the TMP102 driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// Bus error.
    Bus(E),
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "TMP102 bus error: {e:?}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// Temperature register bytes to °C (12-bit two's complement, left-justified).
pub fn raw_to_celsius(bytes: [u8; 2]) -> f32 {
    f32::from(i16::from_be_bytes(bytes) >> 4) * LSB_C
}

/// °C to the register bytes the chip would produce (for simulation), saturating.
pub fn celsius_to_raw(c: f32) -> [u8; 2] {
    let digits = (c / LSB_C).clamp(-2048.0, 2047.0);
    #[allow(clippy::cast_possible_truncation)] // clamped to 12 bits
    let digits = digits as i16;
    (digits << 4).to_be_bytes()
}

/// TMP102 on an I2C bus.
#[derive(Debug)]
pub struct Tmp102<I2C> {
    i2c: I2C,
    address: u8,
}

impl<I2C: I2c> Tmp102<I2C> {
    /// Wrap the bus; `address` is 0x48..=0x4B by the ADD0 pin.
    pub fn new(i2c: I2C, address: u8) -> Self {
        Self { i2c, address }
    }

    /// Release the bus.
    pub fn release(self) -> I2C {
        self.i2c
    }
}

impl<I2C: I2c> Thermometer for Tmp102<I2C> {
    type Error = Error<I2C::Error>;

    fn temperature_c(&mut self) -> Result<f32, Self::Error> {
        let mut buf = [0u8; 2];
        self.i2c
            .write_read(self.address, &[TEMPERATURE], &mut buf)
            .map_err(Error::Bus)?;
        Ok(raw_to_celsius(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    use std::vec;

    #[test]
    fn datasheet_examples() {
        // Table 5 of the datasheet.
        assert_eq!(raw_to_celsius([0x7F, 0xF0]), 127.9375);
        assert_eq!(raw_to_celsius([0x19, 0x00]), 25.0);
        assert_eq!(raw_to_celsius([0x00, 0x10]), 0.0625);
        assert_eq!(raw_to_celsius([0xFF, 0xF0]), -0.0625);
        assert_eq!(raw_to_celsius([0xE7, 0x00]), -25.0);
        assert_eq!(raw_to_celsius([0xC9, 0x00]), -55.0);
        assert_eq!(celsius_to_raw(-25.0), [0xE7, 0x00]);
        assert_eq!(celsius_to_raw(500.0), [0x7F, 0xF0]);
    }

    #[test]
    fn reads_the_temperature_register() {
        let mut i2c = Mock::new(&[Transaction::write_read(0x49, vec![0x00], vec![0x3C, 0x00])]);
        let mut t = Tmp102::new(i2c.clone(), 0x49);
        assert_eq!(t.temperature_c(), Ok(60.0));
        i2c.done();
    }
}
