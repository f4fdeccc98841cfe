//! Drivers for the real parts on streetgate nodes, each generic over an `embedded-hal` 1.0 bus
//! trait (never over a board) and implementing the matching trait in [`crate::sensors`].
//!
//! | part | bus | job |
//! |---|---|---|
//! | ST LIS3DH ([`lis3dh`]) | I2C | 3-axis accelerometer: cover tilt, bin knocked over |
//! | DFRobot A02YYUW ([`a02yyuw`]) | UART (`embedded-io`) | waterproof ultrasonic ranger: bin fill |
//! | TI ADS1115 ([`ads1115`]) | I2C | 16-bit ADC behind the gas cells, battery and leakage sensing |
//! | electrochemical NH3/H2S cells ([`gas`]) | via ADS1115 | toilet odour with zero/span calibration |
//! | TI TMP102 ([`tmp102`]) | I2C | temperature: bin fire risk |
//! | Belling BL0942 ([`bl0942`]) | UART | single-phase metering: lamp voltage, current, power, energy |
//! | lamp power stage ([`lamp`]) | GPIO + PWM + BL0942 | relay, dimming, metering, leakage |
//! | battery gauge ([`battery`]) | via ADS1115 | remaining charge from the cell voltage |

pub mod a02yyuw;
pub mod ads1115;
pub mod battery;
pub mod bl0942;
pub mod gas;
pub mod lamp;
pub mod lis3dh;
pub mod tmp102;

#[cfg(test)]
pub(crate) mod test_serial;
