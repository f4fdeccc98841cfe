//! TI ADS1115 16-bit I2C ADC, single-shot conversions on single-ended inputs.

use core::fmt;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

/// Register pointers and config bits from the ADS1115 datasheet (SBAS444).
pub mod regs {
    /// Conversion result register.
    pub const CONVERSION: u8 = 0x00;
    /// Config register.
    pub const CONFIG: u8 = 0x01;
    /// Config: start a single conversion (write) / conversion done (read).
    pub const OS: u16 = 1 << 15;
    /// Config: single-shot mode.
    pub const MODE_SINGLE: u16 = 1 << 8;
    /// Config: comparator disabled.
    pub const COMP_DISABLE: u16 = 0b11;
}

/// Single-ended input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// AIN0 against GND.
    Ain0 = 0b100,
    /// AIN1 against GND.
    Ain1 = 0b101,
    /// AIN2 against GND.
    Ain2 = 0b110,
    /// AIN3 against GND.
    Ain3 = 0b111,
}

/// Programmable-gain full-scale range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gain {
    /// ±6.144 V.
    Fs6_144 = 0b000,
    /// ±4.096 V.
    Fs4_096 = 0b001,
    /// ±2.048 V (power-on default).
    Fs2_048 = 0b010,
    /// ±1.024 V.
    Fs1_024 = 0b011,
    /// ±0.512 V.
    Fs0_512 = 0b100,
    /// ±0.256 V.
    Fs0_256 = 0b101,
}

impl Gain {
    /// Full-scale voltage.
    pub const fn full_scale_v(self) -> f32 {
        match self {
            Self::Fs6_144 => 6.144,
            Self::Fs4_096 => 4.096,
            Self::Fs2_048 => 2.048,
            Self::Fs1_024 => 1.024,
            Self::Fs0_512 => 0.512,
            Self::Fs0_256 => 0.256,
        }
    }
}

/// Data rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRate {
    /// 8 samples/s: lowest noise.
    Sps8 = 0b000,
    /// 128 samples/s (default).
    Sps128 = 0b100,
    /// 860 samples/s.
    Sps860 = 0b111,
}

impl DataRate {
    /// Time of one conversion, µs (rounded up).
    pub const fn conversion_us(self) -> u32 {
        match self {
            Self::Sps8 => 125_000,
            Self::Sps128 => 7_813,
            Self::Sps860 => 1_163,
        }
    }
}

/// Driver configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// I2C address (0x48..=0x4B by the ADDR pin).
    pub address: u8,
    /// Data rate.
    pub data_rate: DataRate,
    /// Polls of the OS bit before giving up on a conversion.
    pub max_polls: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            address: 0x48,
            data_rate: DataRate::Sps128,
            max_polls: 10,
        }
    }
}

/// Errors of the ADS1115 driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// Bus error.
    Bus(E),
    /// The conversion did not finish within the configured polls.
    NotReady,
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "ADS1115 bus error: {e:?}"),
            Self::NotReady => f.write_str("ADS1115: conversion not ready"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// The config word that starts a single-shot conversion.
pub fn config_word(channel: Channel, gain: Gain, rate: DataRate) -> u16 {
    regs::OS
        | ((channel as u16) << 12)
        | ((gain as u16) << 9)
        | regs::MODE_SINGLE
        | ((rate as u16) << 5)
        | regs::COMP_DISABLE
}

/// Raw conversion result to volts.
pub fn raw_to_volts(raw: i16, gain: Gain) -> f32 {
    f32::from(raw) * gain.full_scale_v() / 32_768.0
}

/// Volts to the raw result the chip would produce (for simulation), saturating.
pub fn volts_to_raw(volts: f32, gain: Gain) -> i16 {
    let raw = (volts / gain.full_scale_v() * 32_768.0).clamp(-32_768.0, 32_767.0);
    #[allow(clippy::cast_possible_truncation)] // clamped
    let raw = raw as i16;
    raw
}

/// ADS1115 on an I2C bus.
#[derive(Debug)]
pub struct Ads1115<I2C, D> {
    i2c: I2C,
    delay: D,
    config: Config,
}

impl<I2C: I2c, D: DelayNs> Ads1115<I2C, D> {
    /// Wrap the bus and a delay.
    pub fn new(i2c: I2C, delay: D, config: Config) -> Self {
        Self { i2c, delay, config }
    }

    /// One single-shot conversion, in volts.
    pub fn read_volts(&mut self, channel: Channel, gain: Gain) -> Result<f32, Error<I2C::Error>> {
        let addr = self.config.address;
        let [hi, lo] = config_word(channel, gain, self.config.data_rate).to_be_bytes();
        self.i2c
            .write(addr, &[regs::CONFIG, hi, lo])
            .map_err(Error::Bus)?;
        let mut ready = false;
        for _ in 0..self.config.max_polls {
            self.delay.delay_us(self.config.data_rate.conversion_us());
            let mut cfg = [0u8; 2];
            self.i2c
                .write_read(addr, &[regs::CONFIG], &mut cfg)
                .map_err(Error::Bus)?;
            if u16::from_be_bytes(cfg) & regs::OS != 0 {
                ready = true;
                break;
            }
        }
        if !ready {
            return Err(Error::NotReady);
        }
        let mut out = [0u8; 2];
        self.i2c
            .write_read(addr, &[regs::CONVERSION], &mut out)
            .map_err(Error::Bus)?;
        Ok(raw_to_volts(i16::from_be_bytes(out), gain))
    }

    /// Release the bus and delay.
    pub fn release(self) -> (I2C, D) {
        (self.i2c, self.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    use std::vec;

    #[test]
    fn config_word_matches_datasheet() {
        // AIN0, ±2.048 V, single shot, 128 SPS, comparator off: 0xC583.
        assert_eq!(
            config_word(Channel::Ain0, Gain::Fs2_048, DataRate::Sps128),
            0xC583
        );
        assert_eq!(
            config_word(Channel::Ain3, Gain::Fs4_096, DataRate::Sps8),
            0xF303
        );
    }

    #[test]
    fn single_shot_read() {
        let expectations = [
            Transaction::write(0x48, vec![0x01, 0xD5, 0x83]),
            Transaction::write_read(0x48, vec![0x01], vec![0x55, 0x83]), // busy
            Transaction::write_read(0x48, vec![0x01], vec![0xD5, 0x83]), // done
            Transaction::write_read(0x48, vec![0x00], vec![0x40, 0x00]), // 16384
        ];
        let mut i2c = Mock::new(&expectations);
        let mut adc = Ads1115::new(i2c.clone(), NoopDelay::new(), Config::default());
        let v = adc.read_volts(Channel::Ain1, Gain::Fs2_048).unwrap();
        assert!((v - 1.024).abs() < 1e-6);
        i2c.done();
    }

    #[test]
    fn conversion_that_never_finishes() {
        let mut expectations = vec![Transaction::write(0x48, vec![0x01, 0xC5, 0x83])];
        for _ in 0..3 {
            expectations.push(Transaction::write_read(0x48, vec![0x01], vec![0x45, 0x83]));
        }
        let mut i2c = Mock::new(&expectations);
        let mut adc = Ads1115::new(
            i2c.clone(),
            NoopDelay::new(),
            Config {
                max_polls: 3,
                ..Config::default()
            },
        );
        assert_eq!(
            adc.read_volts(Channel::Ain0, Gain::Fs2_048),
            Err(Error::NotReady)
        );
        i2c.done();
    }

    #[test]
    fn conversions() {
        assert_eq!(volts_to_raw(1.024, Gain::Fs2_048), 16_384);
        assert_eq!(volts_to_raw(10.0, Gain::Fs2_048), 32_767);
        assert!((raw_to_volts(-32_768, Gain::Fs0_256) + 0.256).abs() < 1e-6);
    }
}
