//! Electrochemical NH3 and H2S cells read through an ADS1115, with zero and span calibration.
//!
//! Each cell's transimpedance amplifier gives a voltage linear in concentration:
//! `v = zero_v + sensitivity_v_per_mg_m3 × c`. Zero calibration in clean air stores `zero_v`;
//! span calibration against a known gas stores the sensitivity. Readings below zero (drift,
//! noise) are reported as 0.
//!
//! Resolution: with ±0.256 V full scale the ADS1115 resolves 7.8 µV; a typical H2S cell
//! front end gives about 1 mV per ppm (≈ 0.7 mV per mg/m³), so one ADC step is ≈ 0.011 mg/m³,
//! the same as the GB/T 17217 H2S limit of 0.01 mg/m³ (≈ 0.007 ppm). The cell's own noise floor
//! (often 0.01–0.05 ppm) dominates, which is why the H2S limit is configurable and judged on a
//! moving average.

use core::fmt;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::ads1115::{self, Ads1115, Channel, Gain};
use crate::sensors::{GasSample, GasSensor};

/// Calibration of one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Output in clean air, V.
    pub zero_v: f32,
    /// Output change per mg/m³, V.
    pub sensitivity_v_per_mg_m3: f32,
}

/// One cell on one ADC input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// ADC input.
    pub channel: Channel,
    /// ADC range.
    pub gain: Gain,
    /// Calibration.
    pub calibration: Calibration,
}

impl Cell {
    /// Concentration for a cell output voltage, clamped at 0.
    pub fn concentration(&self, volts: f32) -> f32 {
        let c = (volts - self.calibration.zero_v) / self.calibration.sensitivity_v_per_mg_m3;
        if c.is_finite() { c.max(0.0) } else { 0.0 }
    }

    /// Output voltage for a concentration (for simulation).
    pub fn volts(&self, mg_m3: f32) -> f32 {
        self.calibration.zero_v + self.calibration.sensitivity_v_per_mg_m3 * mg_m3
    }
}

/// Default front end: NH3 cell on AIN0, H2S cell on AIN1, both on ±0.256 V.
pub const DEFAULT_NH3: Cell = Cell {
    channel: Channel::Ain0,
    gain: Gain::Fs0_512,
    calibration: Calibration {
        zero_v: 0.050,
        sensitivity_v_per_mg_m3: 0.010,
    },
};
/// See [`DEFAULT_NH3`].
pub const DEFAULT_H2S: Cell = Cell {
    channel: Channel::Ain1,
    gain: Gain::Fs0_256,
    calibration: Calibration {
        zero_v: 0.020,
        sensitivity_v_per_mg_m3: 0.0007,
    },
};

/// Errors of the gas front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// ADC error.
    Adc(ads1115::Error<E>),
    /// Span calibration with a non-positive known concentration or no response.
    BadSpan,
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Adc(e) => write!(f, "gas front end: {e}"),
            Self::BadSpan => f.write_str("gas span calibration: no response to the span gas"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// Which cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gas {
    /// Ammonia.
    Nh3,
    /// Hydrogen sulphide.
    H2s,
}

/// NH3 and H2S cells behind one ADS1115.
#[derive(Debug)]
pub struct GasFrontEnd<I2C, D> {
    adc: Ads1115<I2C, D>,
    nh3: Cell,
    h2s: Cell,
}

impl<I2C: I2c, D: DelayNs> GasFrontEnd<I2C, D> {
    /// Both cells on one ADC.
    pub fn new(adc: Ads1115<I2C, D>, nh3: Cell, h2s: Cell) -> Self {
        Self { adc, nh3, h2s }
    }

    fn cell(&mut self, gas: Gas) -> &mut Cell {
        match gas {
            Gas::Nh3 => &mut self.nh3,
            Gas::H2s => &mut self.h2s,
        }
    }

    fn volts(&mut self, gas: Gas) -> Result<f32, Error<I2C::Error>> {
        let cell = *self.cell(gas);
        self.adc
            .read_volts(cell.channel, cell.gain)
            .map_err(Error::Adc)
    }

    /// In clean air: take the present output as zero.
    pub fn calibrate_zero(&mut self, gas: Gas) -> Result<(), Error<I2C::Error>> {
        let v = self.volts(gas)?;
        self.cell(gas).calibration.zero_v = v;
        Ok(())
    }

    /// In a known concentration: derive the sensitivity. The old one is kept on failure.
    pub fn calibrate_span(&mut self, gas: Gas, known_mg_m3: f32) -> Result<(), Error<I2C::Error>> {
        let v = self.volts(gas)?;
        let cell = self.cell(gas);
        let sensitivity = (v - cell.calibration.zero_v) / known_mg_m3;
        if !(sensitivity.is_finite() && sensitivity > 0.0) {
            return Err(Error::BadSpan);
        }
        cell.calibration.sensitivity_v_per_mg_m3 = sensitivity;
        Ok(())
    }

    /// Current calibration of a cell (to persist).
    pub fn calibration(&self, gas: Gas) -> Calibration {
        match gas {
            Gas::Nh3 => self.nh3.calibration,
            Gas::H2s => self.h2s.calibration,
        }
    }
}

impl<I2C: I2c, D: DelayNs> GasSensor for GasFrontEnd<I2C, D> {
    type Error = Error<I2C::Error>;

    fn read(&mut self) -> Result<GasSample, Self::Error> {
        let nh3 = self.volts(Gas::Nh3)?;
        let h2s = self.volts(Gas::H2s)?;
        Ok(GasSample {
            nh3_mg_m3: self.nh3.concentration(nh3),
            h2s_mg_m3: self.h2s.concentration(h2s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::ads1115::{Config, DataRate, config_word, volts_to_raw};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    use std::vec;
    use std::vec::Vec;

    fn conversion(cell: &Cell, volts: f32) -> Vec<Transaction> {
        let [hi, lo] = config_word(cell.channel, cell.gain, DataRate::Sps128).to_be_bytes();
        vec![
            Transaction::write(0x48, vec![0x01, hi, lo]),
            Transaction::write_read(0x48, vec![0x01], vec![hi, lo]),
            Transaction::write_read(
                0x48,
                vec![0x00],
                volts_to_raw(volts, cell.gain).to_be_bytes().to_vec(),
            ),
        ]
    }

    #[test]
    fn reads_both_cells() {
        let mut t = conversion(&DEFAULT_NH3, DEFAULT_NH3.volts(1.5));
        t.extend(conversion(&DEFAULT_H2S, DEFAULT_H2S.volts(0.10)));
        let mut i2c = Mock::new(&t);
        let adc = Ads1115::new(i2c.clone(), NoopDelay::new(), Config::default());
        let mut gas = GasFrontEnd::new(adc, DEFAULT_NH3, DEFAULT_H2S);
        let s = gas.read().unwrap();
        assert!((s.nh3_mg_m3 - 1.5).abs() < 0.01, "{s:?}");
        // One ADC step at ±0.256 V is 7.8 µV ≈ 0.011 mg/m³ of H2S: the resolution limit.
        assert!((s.h2s_mg_m3 - 0.10).abs() <= 0.012, "{s:?}");
        i2c.done();
    }

    #[test]
    fn zero_and_span_calibration() {
        let mut t = conversion(&DEFAULT_NH3, 0.062); // clean air reads 62 mV
        t.extend(conversion(&DEFAULT_NH3, 0.062 + 0.024)); // 2 mg/m³ span gas: +24 mV
        t.extend(conversion(&DEFAULT_NH3, 0.062 + 0.012));
        t.extend(conversion(&DEFAULT_H2S, 0.0)); // below zero
        t.extend(conversion(&DEFAULT_NH3, 0.062)); // span gas that gives no response
        let mut i2c = Mock::new(&t);
        let adc = Ads1115::new(i2c.clone(), NoopDelay::new(), Config::default());
        let mut gas = GasFrontEnd::new(adc, DEFAULT_NH3, DEFAULT_H2S);
        gas.calibrate_zero(Gas::Nh3).unwrap();
        gas.calibrate_span(Gas::Nh3, 2.0).unwrap();
        let cal = gas.calibration(Gas::Nh3);
        assert!(
            (cal.sensitivity_v_per_mg_m3 - 0.012).abs() < 1e-4,
            "{cal:?}"
        );
        let s = gas.read().unwrap();
        assert!((s.nh3_mg_m3 - 1.0).abs() < 0.02, "{s:?}");
        assert_eq!(s.h2s_mg_m3, 0.0);
        assert_eq!(gas.calibrate_span(Gas::Nh3, 2.0), Err(Error::BadSpan));
        assert_eq!(gas.calibration(Gas::Nh3), cal);
        i2c.done();
    }
}
