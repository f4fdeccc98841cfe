//! The streetlight controller's power stage: lamp relay on a GPIO, PWM dimming of the LED
//! driver, a BL0942 for metering and a residual-current sensor for leakage.

use core::fmt;

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::i2c::I2c;
use embedded_hal::pwm::SetDutyCycle;
use embedded_io::{Read, Write};

use super::ads1115::{self, Ads1115, Channel, Gain};
use super::bl0942::{self, Bl0942};
use crate::sensors::{LampDriver, Metering};

/// A leakage (residual) current sensor.
pub trait LeakageSense {
    /// Sensor error.
    type Error: fmt::Debug;
    /// Leakage current, mA.
    fn leakage_ma(&mut self) -> Result<f32, Self::Error>;
}

/// For controllers without a leakage sensor: always 0 mA.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLeakageSensor;

impl LeakageSense for NoLeakageSensor {
    type Error = core::convert::Infallible;
    fn leakage_ma(&mut self) -> Result<f32, Self::Error> {
        Ok(0.0)
    }
}

/// A residual-current transformer whose burden voltage is read by an ADS1115 input.
#[derive(Debug)]
pub struct AdcLeakage<I2C, D> {
    adc: Ads1115<I2C, D>,
    channel: Channel,
    gain: Gain,
    ma_per_v: f32,
}

impl<I2C: I2c, D: DelayNs> AdcLeakage<I2C, D> {
    /// `ma_per_v`: leakage per volt of burden voltage (transformer ratio ÷ burden resistor).
    pub fn new(adc: Ads1115<I2C, D>, channel: Channel, gain: Gain, ma_per_v: f32) -> Self {
        Self {
            adc,
            channel,
            gain,
            ma_per_v,
        }
    }
}

impl<I2C: I2c, D: DelayNs> LeakageSense for AdcLeakage<I2C, D> {
    type Error = ads1115::Error<I2C::Error>;
    fn leakage_ma(&mut self) -> Result<f32, Self::Error> {
        Ok((self.adc.read_volts(self.channel, self.gain)? * self.ma_per_v).max(0.0))
    }
}

/// Errors of the power stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<RE, PE, ME, LE> {
    /// Relay pin.
    Relay(RE),
    /// PWM.
    Pwm(PE),
    /// Metering chip.
    Meter(ME),
    /// Leakage sensor.
    Leakage(LE),
}

impl<RE: fmt::Debug, PE: fmt::Debug, ME: fmt::Debug, LE: fmt::Debug> fmt::Display
    for Error<RE, PE, ME, LE>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Relay(e) => write!(f, "lamp relay: {e:?}"),
            Self::Pwm(e) => write!(f, "lamp dimming PWM: {e:?}"),
            Self::Meter(e) => write!(f, "lamp metering: {e:?}"),
            Self::Leakage(e) => write!(f, "lamp leakage sensor: {e:?}"),
        }
    }
}

impl<RE: fmt::Debug, PE: fmt::Debug, ME: fmt::Debug, LE: fmt::Debug> core::error::Error
    for Error<RE, PE, ME, LE>
{
}

/// The power stage.
#[derive(Debug)]
pub struct LampController<RELAY, PWM, U, LEAK> {
    relay: RELAY,
    pwm: PWM,
    meter: Bl0942<U>,
    leakage: LEAK,
}

impl<RELAY, PWM, U, LEAK> LampController<RELAY, PWM, U, LEAK>
where
    RELAY: OutputPin,
    PWM: SetDutyCycle,
    U: Read + Write,
    LEAK: LeakageSense,
{
    /// Assemble the stage.
    pub fn new(relay: RELAY, pwm: PWM, meter: Bl0942<U>, leakage: LEAK) -> Self {
        Self {
            relay,
            pwm,
            meter,
            leakage,
        }
    }
}

type StageError<RELAY, PWM, U, LEAK> = Error<
    <RELAY as embedded_hal::digital::ErrorType>::Error,
    <PWM as embedded_hal::pwm::ErrorType>::Error,
    bl0942::Error<<U as embedded_io::ErrorType>::Error>,
    <LEAK as LeakageSense>::Error,
>;

impl<RELAY, PWM, U, LEAK> LampDriver for LampController<RELAY, PWM, U, LEAK>
where
    RELAY: OutputPin,
    PWM: SetDutyCycle,
    U: Read + Write,
    LEAK: LeakageSense,
{
    type Error = StageError<RELAY, PWM, U, LEAK>;

    fn set_relay(&mut self, on: bool) -> Result<(), Self::Error> {
        if on {
            self.relay.set_high()
        } else {
            self.relay.set_low()
        }
        .map_err(Error::Relay)
    }

    fn set_dim_pct(&mut self, pct: u8) -> Result<(), Self::Error> {
        self.pwm
            .set_duty_cycle_percent(pct.min(100))
            .map_err(Error::Pwm)
    }

    fn measure(&mut self) -> Result<Metering, Self::Error> {
        let r = self.meter.read().map_err(Error::Meter)?;
        let leakage_ma = self.leakage.leakage_ma().map_err(Error::Leakage)?;
        Ok(Metering {
            voltage_v: r.voltage_v,
            current_a: r.current_a,
            power_w: r.power_w,
            energy_wh: self.meter.energy_wh(),
            leakage_ma,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::bl0942::Calibration;
    use crate::drivers::test_serial::FakeSerial;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinT};
    use embedded_hal_mock::eh1::pwm::{Mock as PwmMock, Transaction as PwmT};

    #[test]
    fn relay_dimming_and_metering() {
        let mut relay = PinMock::new(&[PinT::set(State::High), PinT::set(State::Low)]);
        let mut pwm = PwmMock::new(&[
            PwmT::max_duty_cycle(1000),
            PwmT::set_duty_cycle(600),
            PwmT::max_duty_cycle(1000),
            PwmT::set_duty_cycle(1000),
        ]);
        let cal = Calibration::default();
        let packet = Bl0942::<FakeSerial>::packet_for(&cal, 229.0, 0.40, 90.0, 10);
        let meter = Bl0942::new(FakeSerial::with_rx(&packet.encode()), cal);
        let mut lamp = LampController::new(relay.clone(), pwm.clone(), meter, NoLeakageSensor);
        lamp.set_relay(true).unwrap();
        lamp.set_dim_pct(60).unwrap();
        lamp.set_dim_pct(250).unwrap(); // clamped to 100 %
        let m = lamp.measure().unwrap();
        assert!(
            (m.voltage_v - 229.0).abs() < 0.01 && (m.current_a - 0.40).abs() < 0.001,
            "{m:?}"
        );
        assert_eq!(m.leakage_ma, 0.0);
        lamp.set_relay(false).unwrap();
        relay.done();
        pwm.done();
    }

    #[test]
    fn metering_failure_is_reported() {
        let relay = PinMock::new(&[]);
        let pwm = PwmMock::new(&[]);
        let meter = Bl0942::new(FakeSerial::default(), Calibration::default());
        let mut lamp = LampController::new(relay.clone(), pwm.clone(), meter, NoLeakageSensor);
        assert!(matches!(
            lamp.measure(),
            Err(Error::Meter(bl0942::Error::Timeout))
        ));
        relay.clone().done();
        pwm.clone().done();
    }
}
