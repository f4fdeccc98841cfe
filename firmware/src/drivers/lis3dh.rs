//! ST LIS3DH 3-axis accelerometer over I2C, in high-resolution (12-bit) mode.

use core::fmt;

use embedded_hal::i2c::I2c;

use crate::sensors::{AccelMg, Accelerometer};

/// Register addresses and bit fields from the LIS3DH datasheet (DocID17530).
pub mod regs {
    /// Identification register; reads [`WHO_AM_I_VALUE`].
    pub const WHO_AM_I: u8 = 0x0F;
    /// Fixed identification value.
    pub const WHO_AM_I_VALUE: u8 = 0x33;
    /// Data rate and axis enables.
    pub const CTRL_REG1: u8 = 0x20;
    /// Block data update, full scale, high resolution.
    pub const CTRL_REG4: u8 = 0x23;
    /// Data-ready flags.
    pub const STATUS_REG: u8 = 0x27;
    /// First output register (X low byte); X, Y, Z follow as little-endian pairs.
    pub const OUT_X_L: u8 = 0x28;
    /// Set in the sub-address to auto-increment over consecutive registers.
    pub const AUTO_INCREMENT: u8 = 0x80;
    /// CTRL_REG1: X, Y and Z axes enabled.
    pub const XYZ_ENABLE: u8 = 0x07;
    /// CTRL_REG4: block data update.
    pub const BDU: u8 = 0x80;
    /// CTRL_REG4: high-resolution mode.
    pub const HR: u8 = 0x08;
}

/// I2C address, chosen by the SA0 pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// SA0 to ground: 0x18.
    Sa0Low = 0x18,
    /// SA0 to supply: 0x19.
    Sa0High = 0x19,
}

/// Full-scale range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// ±2 g, 1 mg/digit.
    G2 = 0,
    /// ±4 g, 2 mg/digit.
    G4 = 1,
    /// ±8 g, 4 mg/digit.
    G8 = 2,
    /// ±16 g, 12 mg/digit.
    G16 = 3,
}

impl Range {
    /// Sensitivity in high-resolution mode, mg per digit.
    pub const fn mg_per_digit(self) -> i32 {
        match self {
            Self::G2 => 1,
            Self::G4 => 2,
            Self::G8 => 4,
            Self::G16 => 12,
        }
    }
}

/// Output data rate (CTRL_REG1 ODR field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRate {
    /// 1 Hz: battery-friendly tilt monitoring.
    Hz1 = 1,
    /// 10 Hz.
    Hz10 = 2,
    /// 25 Hz.
    Hz25 = 3,
    /// 50 Hz.
    Hz50 = 4,
    /// 100 Hz.
    Hz100 = 5,
}

/// Driver configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// I2C address.
    pub address: Address,
    /// Full-scale range.
    pub range: Range,
    /// Output data rate.
    pub data_rate: DataRate,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            address: Address::Sa0Low,
            range: Range::G2,
            data_rate: DataRate::Hz10,
        }
    }
}

/// Errors of the LIS3DH driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// Bus error.
    Bus(E),
    /// WHO_AM_I returned something else: wrong part or wrong address.
    WrongDevice(u8),
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "LIS3DH bus error: {e:?}"),
            Self::WrongDevice(id) => write!(f, "LIS3DH: WHO_AM_I is 0x{id:02x}, expected 0x33"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// Raw left-justified 16-bit output to milli-g in high-resolution mode.
pub fn raw_to_mg(raw: i16, range: Range) -> i32 {
    i32::from(raw >> 4) * range.mg_per_digit()
}

/// Milli-g to the raw left-justified output the chip would produce (for simulation).
pub fn mg_to_raw(mg: i32, range: Range) -> i16 {
    let digits = (mg / range.mg_per_digit()).clamp(-2048, 2047);
    #[allow(clippy::cast_possible_truncation)] // clamped to 12 bits
    let raw = (digits << 4) as i16;
    raw
}

/// LIS3DH on an I2C bus.
#[derive(Debug)]
pub struct Lis3dh<I2C> {
    i2c: I2C,
    config: Config,
}

impl<I2C: I2c> Lis3dh<I2C> {
    /// Wrap the bus; call [`Lis3dh::init`] before reading.
    pub fn new(i2c: I2C, config: Config) -> Self {
        Self { i2c, config }
    }

    /// Check WHO_AM_I and configure data rate, full scale and high resolution.
    pub fn init(&mut self) -> Result<(), Error<I2C::Error>> {
        let addr = self.config.address as u8;
        let mut id = [0u8];
        self.i2c
            .write_read(addr, &[regs::WHO_AM_I], &mut id)
            .map_err(Error::Bus)?;
        if id[0] != regs::WHO_AM_I_VALUE {
            return Err(Error::WrongDevice(id[0]));
        }
        let ctrl1 = ((self.config.data_rate as u8) << 4) | regs::XYZ_ENABLE;
        let ctrl4 = regs::BDU | ((self.config.range as u8) << 4) | regs::HR;
        self.i2c
            .write(addr, &[regs::CTRL_REG1, ctrl1])
            .map_err(Error::Bus)?;
        self.i2c
            .write(addr, &[regs::CTRL_REG4, ctrl4])
            .map_err(Error::Bus)
    }

    /// Release the bus.
    pub fn release(self) -> I2C {
        self.i2c
    }
}

impl<I2C: I2c> Accelerometer for Lis3dh<I2C> {
    type Error = Error<I2C::Error>;

    fn read_mg(&mut self) -> Result<AccelMg, Self::Error> {
        let mut buf = [0u8; 6];
        self.i2c
            .write_read(
                self.config.address as u8,
                &[regs::OUT_X_L | regs::AUTO_INCREMENT],
                &mut buf,
            )
            .map_err(Error::Bus)?;
        let axis =
            |i: usize| raw_to_mg(i16::from_le_bytes([buf[i], buf[i + 1]]), self.config.range);
        Ok([axis(0), axis(2), axis(4)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    use std::vec;

    #[test]
    fn init_and_read() {
        let expectations = [
            Transaction::write_read(0x18, vec![0x0F], vec![0x33]),
            Transaction::write(0x18, vec![0x20, 0x27]),
            Transaction::write(0x18, vec![0x23, 0x88]),
            // X = +16 digits, Y = -1000 digits, Z = +1000 digits (left-justified).
            Transaction::write_read(
                0x18,
                vec![0xA8],
                [
                    mg_to_raw(16, Range::G2),
                    mg_to_raw(-1000, Range::G2),
                    mg_to_raw(1000, Range::G2),
                ]
                .iter()
                .flat_map(|r| r.to_le_bytes())
                .collect(),
            ),
        ];
        let mut i2c = Mock::new(&expectations);
        let mut acc = Lis3dh::new(i2c.clone(), Config::default());
        acc.init().unwrap();
        assert_eq!(acc.read_mg().unwrap(), [16, -1000, 1000]);
        i2c.done();
    }

    #[test]
    fn wrong_device() {
        let mut i2c = Mock::new(&[Transaction::write_read(0x19, vec![0x0F], vec![0x32])]);
        let mut acc = Lis3dh::new(
            i2c.clone(),
            Config {
                address: Address::Sa0High,
                ..Config::default()
            },
        );
        assert_eq!(acc.init(), Err(Error::WrongDevice(0x32)));
        i2c.done();
    }

    #[test]
    fn ranges_and_conversion() {
        assert_eq!(raw_to_mg(0x7FF0, Range::G2), 2047);
        assert_eq!(raw_to_mg(i16::MIN, Range::G16), -2048 * 12);
        for range in [Range::G2, Range::G4, Range::G8, Range::G16] {
            let mg = 1000 / range.mg_per_digit() * range.mg_per_digit();
            assert_eq!(raw_to_mg(mg_to_raw(mg, range), range), mg);
        }
        // Out of range saturates like the chip.
        assert_eq!(raw_to_mg(mg_to_raw(5000, Range::G2), Range::G2), 2047);
    }

    proptest::proptest! {
        #[test]
        fn any_output_converts(bytes in proptest::array::uniform6(0u8..)) {
            let mut i2c = Mock::new(&[Transaction::write_read(0x18, vec![0xA8], bytes.to_vec())]);
            let mut acc = Lis3dh::new(i2c.clone(), Config::default());
            let v = acc.read_mg().unwrap();
            proptest::prop_assert!(v.iter().all(|a| (-2048..=2047).contains(a)));
            i2c.done();
        }
    }
}
