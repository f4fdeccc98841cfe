//! The Modbus register image of a Modbus-attached node (RS-485 RTU, or TCP behind a serial
//! server), laid out by `streetgate_protocols::modbus` so that the gateway's poller and the
//! device share one definition.
//!
//! The node refreshes the image after every sample ([`RegisterImage::refresh`]); a Modbus
//! slave front end (any RTU/TCP framing) serves reads from it and passes holding-register
//! writes to [`RegisterImage::write_holding`], which decodes a complete config or command block
//! into the same [`Downlink`] the MQTT path produces, so it is validated, applied and
//! acknowledged by the same code ([`crate::app::Device::apply_downlink`]).

use streetgate_protocols::modbus::{
    self, ACK_LEN, ACK_START, AckResult, COMMAND_LEN, COMMAND_START, CONFIG_LEN, CONFIG_START,
    IDENT_LEN, IDENT_START, ModbusError, TELEMETRY_MAX_LEN, TELEMETRY_START,
};
use streetgate_protocols::{DeviceKind, Downlink};

use crate::app::Node;

/// A Modbus exception to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    /// 0x02: the address range is not (entirely) mapped.
    IllegalDataAddress,
    /// 0x03: the written block does not decode or validate.
    IllegalDataValue,
}

impl Exception {
    /// The Modbus exception code.
    pub const fn code(self) -> u8 {
        match self {
            Self::IllegalDataAddress => 0x02,
            Self::IllegalDataValue => 0x03,
        }
    }
}

const CONFIG_WORDS: usize = CONFIG_LEN as usize;
const COMMAND_WORDS: usize = COMMAND_LEN as usize;

/// All registers of one node.
#[derive(Debug, Clone)]
pub struct RegisterImage {
    ident: [u16; IDENT_LEN as usize],
    ack: [u16; ACK_LEN as usize],
    telemetry: [u16; TELEMETRY_MAX_LEN],
    telemetry_len: u16,
    config: [u16; CONFIG_WORDS],
    command: [u16; COMMAND_WORDS],
    /// Decode failures of the latest readings (image kept at its last good content).
    pub encode_errors: u32,
}

fn slice(block: &[u16], start: u16, addr: u16, count: u16) -> Option<&[u16]> {
    let from = usize::from(addr.checked_sub(start)?);
    block.get(from..from.checked_add(usize::from(count))?)
}

fn slice_mut(block: &mut [u16], start: u16, addr: u16, count: usize) -> Option<&mut [u16]> {
    let from = usize::from(addr.checked_sub(start)?);
    block.get_mut(from..from.checked_add(count)?)
}

impl RegisterImage {
    /// The image of a fresh node of `kind` with firmware version `fw`.
    pub fn new(kind: DeviceKind, fw: (u16, u16, u16)) -> Self {
        let mut config = [0u16; CONFIG_WORDS];
        // Every optional register starts "unset"; mandatory ones at zero.
        let empty = streetgate_protocols::Config::default();
        let _ = modbus::encode_config(&empty, &mut config);
        Self {
            ident: modbus::encode_identification(kind, fw),
            ack: modbus::encode_ack(AckResult::None),
            telemetry: [0; TELEMETRY_MAX_LEN],
            telemetry_len: modbus::map(kind).telemetry_len(),
            config,
            command: [0; COMMAND_WORDS],
            encode_errors: 0,
        }
    }

    /// Bring telemetry and acknowledgement up to date with the node.
    pub fn refresh(&mut self, node: &Node) {
        if let Some(data) = node.current() {
            if modbus::encode_telemetry(data, &mut self.telemetry).is_err() {
                self.encode_errors = self.encode_errors.saturating_add(1);
            }
        }
        self.ack = modbus::encode_ack(match node.last_ack() {
            None => AckResult::None,
            Some((id, true)) => AckResult::Applied(id),
            Some((id, false)) => AckResult::Rejected(id),
        });
    }

    /// Read input registers (function 0x04).
    pub fn read_input(&self, addr: u16, count: u16, out: &mut [u16]) -> Result<(), Exception> {
        let src = slice(&self.ident, IDENT_START, addr, count)
            .or_else(|| slice(&self.ack, ACK_START, addr, count))
            .or_else(|| {
                slice(
                    &self.telemetry[..usize::from(self.telemetry_len)],
                    TELEMETRY_START,
                    addr,
                    count,
                )
            })
            .ok_or(Exception::IllegalDataAddress)?;
        out.get_mut(..src.len())
            .ok_or(Exception::IllegalDataAddress)?
            .copy_from_slice(src);
        Ok(())
    }

    /// Read holding registers (function 0x03).
    pub fn read_holding(&self, addr: u16, count: u16, out: &mut [u16]) -> Result<(), Exception> {
        let src = slice(&self.config, CONFIG_START, addr, count)
            .or_else(|| slice(&self.command, COMMAND_START, addr, count))
            .ok_or(Exception::IllegalDataAddress)?;
        out.get_mut(..src.len())
            .ok_or(Exception::IllegalDataAddress)?
            .copy_from_slice(src);
        Ok(())
    }

    /// Write holding registers (functions 0x06 / 0x10). A write that completes the config or
    /// command block (it must cover the whole block in one request) is decoded and returned for
    /// the node to apply; partial writes only update the image.
    pub fn write_holding(
        &mut self,
        addr: u16,
        values: &[u16],
    ) -> Result<Option<Downlink>, Exception> {
        let n = values.len();
        if let Some(dst) = slice_mut(&mut self.config, CONFIG_START, addr, n) {
            dst.copy_from_slice(values);
            if addr == CONFIG_START && n == CONFIG_WORDS {
                return modbus::decode_config(&self.config)
                    .map(|c| Some(Downlink::Config(c)))
                    .map_err(|_: ModbusError| Exception::IllegalDataValue);
            }
            return Ok(None);
        }
        if let Some(dst) = slice_mut(&mut self.command, COMMAND_START, addr, n) {
            dst.copy_from_slice(values);
            if addr == COMMAND_START && n == COMMAND_WORDS {
                return modbus::decode_command(&self.command)
                    .map(|c| Some(Downlink::Command(c)))
                    .map_err(|_: ModbusError| Exception::IllegalDataValue);
            }
            return Ok(None);
        }
        Err(Exception::IllegalDataAddress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Device;
    use crate::app::NoSensor;
    use crate::app::manhole::Manhole;
    use crate::app::test_support::{Link, at};
    use crate::sensors::{AccelMg, Accelerometer};
    use streetgate_protocols::codec::Encoding;
    use streetgate_protocols::{Action, Command, Config, DeviceId, TelemetryData};

    struct Tilted;
    impl Accelerometer for Tilted {
        type Error = ();
        fn read_mg(&mut self) -> Result<AccelMg, ()> {
            Ok([0, 500, 866]) // 30°
        }
    }

    #[test]
    fn the_gateway_reads_what_the_node_measured() {
        let node = Node::new(
            DeviceId::new("MH-9").unwrap(),
            DeviceKind::Manhole,
            Encoding::Binary,
        );
        let mut dev = Device::new(node, Manhole::new(Tilted, None::<NoSensor>, NoSensor, 2000));
        let mut image = RegisterImage::new(DeviceKind::Manhole, (0, 1, 0));
        let mut link = Link::default();
        dev.tick(at(0), &mut link);
        image.refresh(&dev.node);

        let mut ident = [0u16; 8];
        image.read_input(0, 8, &mut ident).unwrap();
        let id = modbus::decode_identification(&ident).unwrap();
        assert_eq!(id.check(DeviceKind::Manhole), Ok(()));
        let len = modbus::map(DeviceKind::Manhole).telemetry_len();
        let mut regs = [0u16; TELEMETRY_MAX_LEN];
        image.read_input(TELEMETRY_START, len, &mut regs).unwrap();
        let TelemetryData::Manhole(t) =
            modbus::decode_telemetry(DeviceKind::Manhole, &regs[..usize::from(len)]).unwrap()
        else {
            panic!("kind");
        };
        assert!((t.tilt_deg - 30.0).abs() < 0.1, "{t:?}");
        assert_eq!(
            image.read_input(TELEMETRY_START, len + 1, &mut regs),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            image.read_input(50, 1, &mut regs),
            Err(Exception::IllegalDataAddress)
        );
    }

    #[test]
    fn holding_writes_go_through_the_same_validation() {
        let node = Node::new(
            DeviceId::new("MH-9").unwrap(),
            DeviceKind::Manhole,
            Encoding::Binary,
        );
        let mut dev = Device::new(node, Manhole::new(Tilted, None::<NoSensor>, NoSensor, 2000));
        let mut image = RegisterImage::new(DeviceKind::Manhole, (0, 1, 0));
        let mut regs = [0u16; CONFIG_WORDS];
        modbus::encode_config(
            &Config {
                config_id: 5,
                tilt_alarm_deg: Some(25.0),
                ..Config::default()
            },
            &mut regs,
        )
        .unwrap();
        let downlink = image
            .write_holding(CONFIG_START, &regs)
            .unwrap()
            .expect("complete block");
        dev.apply_downlink(downlink, at(1));
        image.refresh(&dev.node);
        let mut ack = [0u16; 3];
        image.read_input(ACK_START, 3, &mut ack).unwrap();
        assert_eq!(modbus::decode_ack(&ack), Ok(AckResult::Applied(5)));
        assert_eq!(dev.node.settings.tilt_alarm_deg, 25.0);

        // A config whose merged result is invalid is rejected with the old settings kept.
        modbus::encode_config(
            &Config {
                config_id: 6,
                tilt_alarm_deg: Some(80.0),
                ..Config::default()
            },
            &mut regs,
        )
        .unwrap();
        let downlink = image
            .write_holding(CONFIG_START, &regs)
            .unwrap()
            .expect("complete block");
        dev.apply_downlink(downlink, at(2));
        image.refresh(&dev.node);
        image.read_input(ACK_START, 3, &mut ack).unwrap();
        assert_eq!(modbus::decode_ack(&ack), Ok(AckResult::Rejected(6)));
        assert_eq!(dev.node.settings.tilt_alarm_deg, 25.0);

        // Commands, partial writes and garbage.
        let cmd = modbus::encode_command(&Command {
            cmd_id: 8,
            action: Action::RequestReport,
        })
        .unwrap();
        assert!(matches!(
            image.write_holding(COMMAND_START, &cmd),
            Ok(Some(Downlink::Command(_)))
        ));
        assert_eq!(image.write_holding(COMMAND_START, &cmd[..2]), Ok(None));
        assert_eq!(
            image.write_holding(COMMAND_START, &[0, 1, 99, 0, 0, 0]),
            Err(Exception::IllegalDataValue)
        );
        assert_eq!(
            image.write_holding(2000, &[1]),
            Err(Exception::IllegalDataAddress)
        );
    }
}
