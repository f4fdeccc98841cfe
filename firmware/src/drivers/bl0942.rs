//! Shanghai Belling BL0942 single-phase energy metering IC over UART (4800 8N1).
//!
//! The "read full packet" command `0x58 0xAA` returns 23 bytes: header `0x55`, then
//! little-endian I_RMS (24 bit), V_RMS (24), I_FAST_RMS (24), WATT (signed 24), CF_CNT (24),
//! FREQ (16), a reserved byte, STATUS, two reserved bytes, and a checksum
//! `!(0x58 + Σ bytes 0..22)`. Calibration constants convert raw values to engineering units;
//! the defaults are for the common 1 mΩ shunt and 5 × 390 kΩ : 510 Ω voltage divider.

use core::fmt;

use embedded_io::{Read, Write};

/// Read command (address 0).
pub const READ_COMMAND: u8 = 0x58;
/// Full-packet register selector.
pub const FULL_PACKET: u8 = 0xAA;
/// Response header.
pub const PACKET_HEADER: u8 = 0x55;
/// Response length.
pub const PACKET_LEN: usize = 23;
/// CF_CNT wraps at 2^24.
const CF_WRAP: u32 = 1 << 24;

/// Raw-to-unit calibration (LSB per unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// V_RMS LSB per volt.
    pub voltage_lsb_per_v: f32,
    /// I_RMS LSB per ampere.
    pub current_lsb_per_a: f32,
    /// WATT LSB per watt.
    pub power_lsb_per_w: f32,
    /// CF pulses per kWh.
    pub cf_per_kwh: f32,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            voltage_lsb_per_v: 15_873.359,
            current_lsb_per_a: 251_213.47,
            power_lsb_per_w: 596.0,
            cf_per_kwh: 3_304.611,
        }
    }
}

/// Raw registers of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    /// Current RMS, raw.
    pub i_rms: u32,
    /// Voltage RMS, raw.
    pub v_rms: u32,
    /// Fast current RMS, raw.
    pub i_fast_rms: u32,
    /// Active power, raw, signed.
    pub watt: i32,
    /// Energy pulse counter, raw (wraps at 2^24).
    pub cf_cnt: u32,
    /// Line period, raw (frequency = 1e6 / raw Hz).
    pub freq: u16,
    /// Status bits.
    pub status: u8,
}

fn u24(b: &[u8]) -> u32 {
    u32::from(b[0]) | (u32::from(b[1]) << 8) | (u32::from(b[2]) << 16)
}

fn put24(out: &mut [u8], v: u32) {
    out[0] = (v & 0xFF) as u8;
    out[1] = ((v >> 8) & 0xFF) as u8;
    out[2] = ((v >> 16) & 0xFF) as u8;
}

fn checksum(bytes: &[u8]) -> u8 {
    !bytes
        .iter()
        .fold(READ_COMMAND, |acc, b| acc.wrapping_add(*b))
}

impl Packet {
    /// The 23 bytes the chip would send (for simulators and tests).
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut out = [0u8; PACKET_LEN];
        out[0] = PACKET_HEADER;
        put24(&mut out[1..4], self.i_rms);
        put24(&mut out[4..7], self.v_rms);
        put24(&mut out[7..10], self.i_fast_rms);
        #[allow(clippy::cast_sign_loss)] // two's complement in 24 bits
        put24(&mut out[10..13], (self.watt as u32) & 0x00FF_FFFF);
        put24(&mut out[13..16], self.cf_cnt);
        out[16..18].copy_from_slice(&self.freq.to_le_bytes());
        out[19] = self.status;
        out[22] = checksum(&out[..22]);
        out
    }

    /// Parse and check a response.
    pub fn decode(bytes: &[u8; PACKET_LEN]) -> Option<Self> {
        if bytes[0] != PACKET_HEADER || checksum(&bytes[..22]) != bytes[22] {
            return None;
        }
        let watt_raw = u24(&bytes[10..13]);
        // Sign-extend 24 → 32 bits.
        #[allow(clippy::cast_possible_wrap)]
        let watt = ((watt_raw << 8) as i32) >> 8;
        Some(Self {
            i_rms: u24(&bytes[1..4]),
            v_rms: u24(&bytes[4..7]),
            i_fast_rms: u24(&bytes[7..10]),
            watt,
            cf_cnt: u24(&bytes[13..16]),
            freq: u16::from_le_bytes([bytes[16], bytes[17]]),
            status: bytes[19],
        })
    }
}

/// Engineering values of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reading {
    /// Voltage RMS, V.
    pub voltage_v: f32,
    /// Current RMS, A.
    pub current_a: f32,
    /// Active power, W (negative clamped to 0: a lamp does not generate).
    pub power_w: f32,
    /// Line frequency, Hz (0 without mains).
    pub frequency_hz: f32,
    /// Raw energy counter.
    pub cf_cnt: u32,
}

/// Errors of the BL0942 driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// UART error.
    Uart(E),
    /// Short read: the chip did not answer with a full packet.
    Timeout,
    /// Wrong header or checksum.
    BadPacket,
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uart(e) => write!(f, "BL0942 UART error: {e:?}"),
            Self::Timeout => f.write_str("BL0942: no full packet"),
            Self::BadPacket => f.write_str("BL0942: bad header or checksum"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// BL0942 on a UART, accumulating energy across counter wraps.
#[derive(Debug)]
pub struct Bl0942<U> {
    uart: U,
    calibration: Calibration,
    last_cf: Option<u32>,
    pulses: u64,
}

impl<U: Read + Write> Bl0942<U> {
    /// Wrap the UART.
    pub fn new(uart: U, calibration: Calibration) -> Self {
        Self {
            uart,
            calibration,
            last_cf: None,
            pulses: 0,
        }
    }

    /// Read one full packet.
    pub fn read_packet(&mut self) -> Result<Packet, Error<U::Error>> {
        self.uart
            .write_all(&[READ_COMMAND, FULL_PACKET])
            .map_err(Error::Uart)?;
        self.uart.flush().map_err(Error::Uart)?;
        let mut buf = [0u8; PACKET_LEN];
        let mut got = 0;
        while got < PACKET_LEN {
            let n = self.uart.read(&mut buf[got..]).map_err(Error::Uart)?;
            if n == 0 {
                return Err(Error::Timeout);
            }
            got += n;
        }
        Packet::decode(&buf).ok_or(Error::BadPacket)
    }

    /// Read and convert one packet, updating the energy total.
    pub fn read(&mut self) -> Result<Reading, Error<U::Error>> {
        let p = self.read_packet()?;
        if let Some(last) = self.last_cf {
            let delta = (p.cf_cnt + CF_WRAP - last) % CF_WRAP;
            self.pulses += u64::from(delta);
        }
        self.last_cf = Some(p.cf_cnt);
        let c = &self.calibration;
        #[allow(clippy::cast_precision_loss)] // 24-bit raw values are exact in f32
        Ok(Reading {
            voltage_v: p.v_rms as f32 / c.voltage_lsb_per_v,
            current_a: p.i_rms as f32 / c.current_lsb_per_a,
            power_w: (p.watt as f32 / c.power_lsb_per_w).max(0.0),
            frequency_hz: if p.freq == 0 {
                0.0
            } else {
                1_000_000.0 / f32::from(p.freq)
            },
            cf_cnt: p.cf_cnt,
        })
    }

    /// Energy since this driver started, Wh.
    pub fn energy_wh(&self) -> f32 {
        #[allow(clippy::cast_precision_loss)]
        let pulses = self.pulses as f32;
        pulses * 1000.0 / self.calibration.cf_per_kwh
    }

    /// Raw packet for given engineering values (for simulators).
    pub fn packet_for(
        calibration: &Calibration,
        voltage_v: f32,
        current_a: f32,
        power_w: f32,
        cf_cnt: u32,
    ) -> Packet {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let raw = |v: f32, k: f32| (v * k).clamp(0.0, 16_777_215.0) as u32;
        #[allow(clippy::cast_possible_truncation)]
        let watt = (power_w * calibration.power_lsb_per_w).clamp(-8_388_608.0, 8_388_607.0) as i32;
        Packet {
            i_rms: raw(current_a, calibration.current_lsb_per_a),
            v_rms: raw(voltage_v, calibration.voltage_lsb_per_v),
            i_fast_rms: raw(current_a, calibration.current_lsb_per_a),
            watt,
            cf_cnt: cf_cnt % CF_WRAP,
            freq: if voltage_v > 1.0 { 20_000 } else { 0 },
            status: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::test_serial::FakeSerial;

    #[test]
    fn packet_round_trip_and_checksum() {
        let p = Packet {
            i_rms: 103_000,
            v_rms: 3_650_000,
            i_fast_rms: 103_100,
            watt: -5,
            cf_cnt: 0xFF_FFFE,
            freq: 20_000,
            status: 3,
        };
        let bytes = p.encode();
        assert_eq!(bytes[0], 0x55);
        assert_eq!(Packet::decode(&bytes), Some(p));
        let mut bad = bytes;
        bad[5] ^= 1;
        assert_eq!(Packet::decode(&bad), None);
    }

    #[test]
    fn reads_and_converts() {
        let cal = Calibration::default();
        let p1 = Bl0942::<FakeSerial>::packet_for(&cal, 230.0, 0.42, 95.0, 0xFF_FFF0);
        let p2 = Bl0942::<FakeSerial>::packet_for(&cal, 230.0, 0.42, 95.0, 0x00_0CF9);
        let mut rx = std::vec::Vec::new();
        rx.extend_from_slice(&p1.encode());
        rx.extend_from_slice(&p2.encode());
        let mut uart = FakeSerial::with_rx(&rx);
        let mut m = Bl0942::new(&mut uart, cal);
        let r = m.read().unwrap();
        assert!((r.voltage_v - 230.0).abs() < 0.01, "{r:?}");
        assert!((r.current_a - 0.42).abs() < 0.001, "{r:?}");
        assert!((r.power_w - 95.0).abs() < 0.01, "{r:?}");
        assert!((r.frequency_hz - 50.0).abs() < 0.01);
        assert_eq!(m.energy_wh(), 0.0);
        m.read().unwrap();
        // 0xFFFFF0 → 0x000CF9 across the wrap: 16 + 3321 pulses ≈ 1.01 kWh.
        assert!(
            (m.energy_wh() - 3337.0 * 1000.0 / 3304.611).abs() < 0.5,
            "{}",
            m.energy_wh()
        );
        assert_eq!(uart.tx, [0x58, 0xAA, 0x58, 0xAA]);
    }

    #[test]
    fn short_and_corrupt_answers() {
        let mut m = Bl0942::new(FakeSerial::with_rx(&[0x55, 1, 2]), Calibration::default());
        assert_eq!(m.read(), Err(Error::Timeout));
        let mut bytes = Packet::default().encode();
        bytes[22] = bytes[22].wrapping_add(1);
        let mut m = Bl0942::new(FakeSerial::with_rx(&bytes), Calibration::default());
        assert_eq!(m.read(), Err(Error::BadPacket));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::array::uniform23(proptest::num::u8::ANY)) {
            let _ = Packet::decode(&bytes);
        }
    }
}
