//! Battery gauge: remaining charge from the cell voltage, read through a divider by an ADC.

use core::fmt;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::ads1115::{self, Ads1115, Channel, Gain};
use crate::sensors::Battery;

/// Something that measures a voltage.
pub trait VoltageSource {
    /// Measurement error.
    type Error: fmt::Debug;
    /// Volts at the input.
    fn voltage_v(&mut self) -> Result<f32, Self::Error>;
}

/// One ADS1115 input as a voltage source.
#[derive(Debug)]
pub struct AdcInput<I2C, D> {
    adc: Ads1115<I2C, D>,
    channel: Channel,
    gain: Gain,
}

impl<I2C: I2c, D: DelayNs> AdcInput<I2C, D> {
    /// Input `channel` at `gain`.
    pub fn new(adc: Ads1115<I2C, D>, channel: Channel, gain: Gain) -> Self {
        Self { adc, channel, gain }
    }
}

impl<I2C: I2c, D: DelayNs> VoltageSource for AdcInput<I2C, D> {
    type Error = ads1115::Error<I2C::Error>;
    fn voltage_v(&mut self) -> Result<f32, Self::Error> {
        self.adc.read_volts(self.channel, self.gain)
    }
}

/// Discharge curve: (cell volts, %) points in falling voltage order.
pub type Curve = &'static [(f32, u8)];

/// Li-SOCl2 primary cell (ER18505 and similar: flat at 3.6 V, falls off a cliff at the end).
pub const LI_SOCL2: Curve = &[
    (3.60, 100),
    (3.50, 70),
    (3.40, 40),
    (3.30, 20),
    (3.10, 8),
    (2.90, 2),
    (2.70, 0),
];
/// Li-ion cell.
pub const LI_ION: Curve = &[
    (4.20, 100),
    (4.00, 85),
    (3.85, 65),
    (3.75, 45),
    (3.65, 25),
    (3.50, 10),
    (3.30, 3),
    (3.00, 0),
];

/// Charge for a cell voltage on a curve, interpolating linearly.
pub fn level_for(curve: Curve, volts: f32) -> u8 {
    let Some(&(top_v, top_pct)) = curve.first() else {
        return 0;
    };
    if !volts.is_finite() {
        return 0;
    }
    if volts >= top_v {
        return top_pct;
    }
    for pair in curve.windows(2) {
        let [(hi_v, hi_p), (lo_v, lo_p)] = [pair[0], pair[1]];
        if volts >= lo_v {
            let t = (volts - lo_v) / (hi_v - lo_v);
            let pct = f32::from(lo_p) + t * (f32::from(hi_p) - f32::from(lo_p));
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // within 0..=100
            return libm::roundf(pct).clamp(0.0, 100.0) as u8;
        }
    }
    curve.last().map_or(0, |&(_, p)| p)
}

/// A battery gauge.
#[derive(Debug)]
pub struct BatteryGauge<V> {
    source: V,
    /// Cell volts per input volt (divider ratio).
    divider: f32,
    curve: Curve,
}

impl<V: VoltageSource> BatteryGauge<V> {
    /// `divider`: cell voltage ÷ measured voltage.
    pub fn new(source: V, divider: f32, curve: Curve) -> Self {
        Self {
            source,
            divider,
            curve,
        }
    }
}

impl<V: VoltageSource> Battery for BatteryGauge<V> {
    type Error = V::Error;
    fn level_pct(&mut self) -> Result<u8, Self::Error> {
        Ok(level_for(
            self.curve,
            self.source.voltage_v()? * self.divider,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::ads1115::{Config, DataRate, config_word, volts_to_raw};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    use std::vec;

    #[test]
    fn curves() {
        assert_eq!(level_for(LI_SOCL2, 3.7), 100);
        assert_eq!(level_for(LI_SOCL2, 3.45), 55);
        assert_eq!(level_for(LI_SOCL2, 3.30), 20);
        assert_eq!(level_for(LI_SOCL2, 2.0), 0);
        assert_eq!(level_for(LI_ION, 3.80), 55);
        assert_eq!(level_for(LI_ION, f32::NAN), 0);
    }

    #[test]
    fn gauge_reads_through_the_adc() {
        let [hi, lo] = config_word(Channel::Ain2, Gain::Fs2_048, DataRate::Sps128).to_be_bytes();
        let mut i2c = Mock::new(&[
            Transaction::write(0x48, vec![0x01, hi, lo]),
            Transaction::write_read(0x48, vec![0x01], vec![hi, lo]),
            Transaction::write_read(
                0x48,
                vec![0x00],
                volts_to_raw(1.725, Gain::Fs2_048).to_be_bytes().to_vec(),
            ),
        ]);
        let adc = Ads1115::new(i2c.clone(), NoopDelay::new(), Config::default());
        let mut gauge = BatteryGauge::new(
            AdcInput::new(adc, Channel::Ain2, Gain::Fs2_048),
            2.0,
            LI_SOCL2,
        );
        assert_eq!(gauge.level_pct(), Ok(55));
        i2c.done();
    }
}
