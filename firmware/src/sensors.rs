//! What the applications need from the hardware, one small trait per sensing job.
//!
//! Drivers in [`crate::drivers`] implement these for real parts; the simulators implement the
//! bus traits underneath those drivers, so applications never know whether a chip is real.

/// Acceleration in milli-g along the sensor's X, Y and Z axes.
pub type AccelMg = [i32; 3];

/// A 3-axis accelerometer (cover tilt, bin knocked over).
pub trait Accelerometer {
    /// Bus or device error.
    type Error: core::fmt::Debug;
    /// One acceleration sample in milli-g.
    fn read_mg(&mut self) -> Result<AccelMg, Self::Error>;
}

/// A distance sensor pointed at the refuse surface (bin fill).
pub trait Ranger {
    /// Bus or device error.
    type Error: core::fmt::Debug;
    /// Readings at or below this distance mean "something right at the sensor" (the sensor's
    /// blind zone): for a bin, refuse heaped up to the lid.
    const BLIND_ZONE_MM: u16 = 0;
    /// Distance to the nearest echo in millimetres, or `None` when there was no valid echo.
    fn distance_mm(&mut self) -> Result<Option<u16>, Self::Error>;
}

/// A temperature sensor (bin fire risk, gas-cell compensation).
pub trait Thermometer {
    /// Bus or device error.
    type Error: core::fmt::Debug;
    /// Temperature in degrees Celsius.
    fn temperature_c(&mut self) -> Result<f32, Self::Error>;
}

/// One gas-cell concentration read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GasSample {
    /// Ammonia in mg/m³.
    pub nh3_mg_m3: f32,
    /// Hydrogen sulphide in mg/m³.
    pub h2s_mg_m3: f32,
}

/// Electrochemical NH3 and H2S cells behind an ADC (toilet odour).
pub trait GasSensor {
    /// Bus or device error.
    type Error: core::fmt::Debug;
    /// Calibrated concentrations.
    fn read(&mut self) -> Result<GasSample, Self::Error>;
}

/// One reading of the lamp's metering.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metering {
    /// Supply voltage, V RMS.
    pub voltage_v: f32,
    /// Lamp current, A RMS.
    pub current_a: f32,
    /// Active power, W.
    pub power_w: f32,
    /// Cumulative active energy, Wh.
    pub energy_wh: f32,
    /// Leakage (residual) current, mA.
    pub leakage_ma: f32,
}

/// The lamp controller's power stage: relay, dimming and metering.
pub trait LampDriver {
    /// Bus or device error.
    type Error: core::fmt::Debug;
    /// Close (`true`) or open the lamp relay.
    fn set_relay(&mut self, on: bool) -> Result<(), Self::Error>;
    /// Dimming level 0..=100 %.
    fn set_dim_pct(&mut self, pct: u8) -> Result<(), Self::Error>;
    /// Read the metering chip.
    fn measure(&mut self) -> Result<Metering, Self::Error>;
}

/// Battery gauge for battery-powered nodes.
pub trait Battery {
    /// Bus or device error.
    type Error: core::fmt::Debug;
    /// Remaining charge, 0..=100 %.
    fn level_pct(&mut self) -> Result<u8, Self::Error>;
}
