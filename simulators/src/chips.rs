//! Simulated parts on simulated buses. Each answers with the bytes its datasheet specifies for
//! the state of the physical model it is attached to, so the firmware's real drivers read them.

use std::collections::VecDeque;
use std::convert::Infallible;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{self, ErrorKind, NoAcknowledgeSource, Operation};
use streetgate_firmware::drivers::ads1115::{self, Gain};
use streetgate_firmware::drivers::bl0942::{self, Bl0942, Calibration};
use streetgate_firmware::drivers::{a02yyuw, battery, lis3dh, tmp102};

use crate::physics::{BatteryModel, BinModel, Cover, LampModel, Shared};

/// A register-pointer I2C device: a write sets the pointer (and writes registers after it),
/// a read returns registers from the pointer on.
trait RegisterChip {
    fn address(&self) -> u8;
    fn write_regs(&mut self, pointer: u8, data: &[u8]);
    fn read_regs(&mut self, pointer: u8, buf: &mut [u8]);
}

/// A chip on its own simulated I2C bus.
#[derive(Debug)]
pub struct SimI2c<C> {
    chip: C,
    pointer: u8,
}

impl<C> SimI2c<C> {
    /// Put a chip on a bus.
    pub fn new(chip: C) -> Self {
        Self { chip, pointer: 0 }
    }
}

impl<C> i2c::ErrorType for SimI2c<C> {
    type Error = ErrorKind;
}

#[allow(private_bounds)]
impl<C: RegisterChip> i2c::I2c for SimI2c<C> {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        if address != self.chip.address() {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    if let Some((&pointer, data)) = bytes.split_first() {
                        self.pointer = pointer;
                        if !data.is_empty() {
                            self.chip.write_regs(pointer, data);
                        }
                    }
                }
                Operation::Read(buf) => self.chip.read_regs(self.pointer, buf),
            }
        }
        Ok(())
    }
}

/// LIS3DH on a manhole cover (or inside a bin).
#[derive(Debug)]
pub struct Lis3dhChip {
    cover: Shared<Cover>,
    regs: [u8; 0x40],
}

impl Lis3dhChip {
    /// The accelerometer of `cover`.
    pub fn new(cover: Shared<Cover>) -> Self {
        let mut regs = [0u8; 0x40];
        regs[usize::from(lis3dh::regs::WHO_AM_I)] = lis3dh::regs::WHO_AM_I_VALUE;
        Self { cover, regs }
    }

    fn range(&self) -> lis3dh::Range {
        match (self.regs[usize::from(lis3dh::regs::CTRL_REG4)] >> 4) & 0b11 {
            0 => lis3dh::Range::G2,
            1 => lis3dh::Range::G4,
            2 => lis3dh::Range::G8,
            _ => lis3dh::Range::G16,
        }
    }
}

impl RegisterChip for Lis3dhChip {
    fn address(&self) -> u8 {
        lis3dh::Address::Sa0Low as u8
    }

    fn write_regs(&mut self, pointer: u8, data: &[u8]) {
        let start = usize::from(pointer & 0x7F);
        for (i, b) in data.iter().enumerate() {
            if let Some(r) = self.regs.get_mut(start + i) {
                *r = *b;
            }
        }
    }

    fn read_regs(&mut self, pointer: u8, buf: &mut [u8]) {
        let start = usize::from(pointer & 0x7F);
        if (usize::from(lis3dh::regs::OUT_X_L)..usize::from(lis3dh::regs::OUT_X_L) + 6)
            .contains(&start)
        {
            let a = self.cover.borrow_mut().acceleration_mg();
            let range = self.range();
            for (axis, mg) in a.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation)] // milli-g, clamped by mg_to_raw
                let raw = lis3dh::mg_to_raw(mg.round() as i32, range).to_le_bytes();
                let at = usize::from(lis3dh::regs::OUT_X_L) + axis * 2;
                self.regs[at] = raw[0];
                self.regs[at + 1] = raw[1];
            }
        }
        let auto = pointer & lis3dh::regs::AUTO_INCREMENT != 0;
        for (i, b) in buf.iter_mut().enumerate() {
            let at = if auto { start + i } else { start };
            *b = self.regs.get(at).copied().unwrap_or(0);
        }
    }
}

/// A temperature source for a TMP102.
pub type TempSource = Box<dyn FnMut() -> f64>;

/// TMP102 reading a model's temperature.
pub struct Tmp102Chip {
    address: u8,
    source: TempSource,
}

impl std::fmt::Debug for Tmp102Chip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tmp102Chip")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Tmp102Chip {
    /// A TMP102 at `address` measuring `source`.
    pub fn new(address: u8, source: TempSource) -> Self {
        Self { address, source }
    }
}

impl RegisterChip for Tmp102Chip {
    fn address(&self) -> u8 {
        self.address
    }
    fn write_regs(&mut self, _pointer: u8, _data: &[u8]) {}
    fn read_regs(&mut self, pointer: u8, buf: &mut [u8]) {
        #[allow(clippy::cast_possible_truncation)]
        let bytes = if pointer == tmp102::TEMPERATURE {
            tmp102::celsius_to_raw((self.source)() as f32)
        } else {
            [0, 0]
        };
        for (b, v) in buf.iter_mut().zip(bytes) {
            *b = v;
        }
    }
}

/// A voltage source for an ADS1115 input.
pub type VoltSource = Box<dyn FnMut() -> f64>;

/// ADS1115 whose four inputs are driven by models.
pub struct Ads1115Chip {
    address: u8,
    inputs: [Option<VoltSource>; 4],
    config: u16,
    conversion: i16,
}

impl std::fmt::Debug for Ads1115Chip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ads1115Chip")
            .field("address", &self.address)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Ads1115Chip {
    /// An ADS1115 at `address`; unconnected inputs read 0 V.
    pub fn new(address: u8, inputs: [Option<VoltSource>; 4]) -> Self {
        Self {
            address,
            inputs,
            config: 0x8583,
            conversion: 0,
        }
    }
}

fn gain_of(config: u16) -> Gain {
    match (config >> 9) & 0b111 {
        0 => Gain::Fs6_144,
        1 => Gain::Fs4_096,
        2 => Gain::Fs2_048,
        3 => Gain::Fs1_024,
        4 => Gain::Fs0_512,
        _ => Gain::Fs0_256,
    }
}

impl RegisterChip for Ads1115Chip {
    fn address(&self) -> u8 {
        self.address
    }

    fn write_regs(&mut self, pointer: u8, data: &[u8]) {
        if pointer != ads1115::regs::CONFIG || data.len() < 2 {
            return;
        }
        self.config = u16::from_be_bytes([data[0], data[1]]);
        if self.config & ads1115::regs::OS != 0 {
            // Single-ended inputs only (MUX 100..111).
            let mux = usize::from((self.config >> 12) & 0b111);
            let volts = mux
                .checked_sub(4)
                .and_then(|i| self.inputs[i].as_mut())
                .map_or(0.0, |f| f());
            #[allow(clippy::cast_possible_truncation)]
            let raw = ads1115::volts_to_raw(volts as f32, gain_of(self.config));
            self.conversion = raw;
        }
    }

    fn read_regs(&mut self, pointer: u8, buf: &mut [u8]) {
        // Conversions finish instantly in simulated time: OS reads 1.
        let word = match pointer {
            ads1115::regs::CONFIG => self.config | ads1115::regs::OS,
            #[allow(clippy::cast_sign_loss)]
            _ => self.conversion as u16,
        };
        for (b, v) in buf.iter_mut().zip(word.to_be_bytes()) {
            *b = v;
        }
    }
}

/// A distance source for a ranger, mm.
pub type DistanceSource = Box<dyn FnMut() -> f64>;

/// A02YYUW ranger streaming frames of the distance to a surface.
pub struct A02yyuwChip {
    source: DistanceSource,
    line: VecDeque<u8>,
}

impl std::fmt::Debug for A02yyuwChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("A02yyuwChip")
            .field("queued", &self.line.len())
            .finish_non_exhaustive()
    }
}

impl A02yyuwChip {
    /// The ranger in `bin`'s lid, looking at the refuse.
    pub fn for_bin(bin: Shared<BinModel>) -> Self {
        Self {
            source: Box::new(move || bin.borrow_mut().echo_mm()),
            line: VecDeque::new(),
        }
    }

    /// The ranger under a cover, looking at the water in the well.
    pub fn for_well(cover: Shared<Cover>) -> Self {
        Self {
            source: Box::new(move || cover.borrow().water_distance_mm()),
            line: VecDeque::new(),
        }
    }
}

impl embedded_io::ErrorType for A02yyuwChip {
    type Error = Infallible;
}

impl embedded_io::Read for A02yyuwChip {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if self.line.is_empty() {
            let mm = (self.source)();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            self.line
                .extend(a02yyuw::encode_frame(mm.round().clamp(0.0, 65_535.0) as u16));
        }
        let n = buf.len().min(self.line.len());
        for b in buf.iter_mut().take(n) {
            *b = self.line.pop_front().unwrap_or(0);
        }
        Ok(n)
    }
}

/// BL0942 metering a lamp.
#[derive(Debug)]
pub struct Bl0942Chip {
    lamp: Shared<LampModel>,
    calibration: Calibration,
    out: VecDeque<u8>,
    cmd: Vec<u8>,
}

impl Bl0942Chip {
    /// The metering IC of `lamp`.
    pub fn new(lamp: Shared<LampModel>) -> Self {
        Self {
            lamp,
            calibration: Calibration::default(),
            out: VecDeque::new(),
            cmd: Vec::new(),
        }
    }
}

impl embedded_io::ErrorType for Bl0942Chip {
    type Error = Infallible;
}

impl embedded_io::Write for Bl0942Chip {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.cmd.extend_from_slice(buf);
        if self
            .cmd
            .ends_with(&[bl0942::READ_COMMAND, bl0942::FULL_PACKET])
        {
            self.cmd.clear();
            let mut lamp = self.lamp.borrow_mut();
            let (v, i, p) = lamp.electrics();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let cf = (lamp.energy_wh / 1000.0 * f64::from(self.calibration.cf_per_kwh)) as u32;
            #[allow(clippy::cast_possible_truncation)]
            let packet =
                Bl0942::<Self>::packet_for(&self.calibration, v as f32, i as f32, p as f32, cf);
            self.out.extend(packet.encode());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl embedded_io::Read for Bl0942Chip {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.out.len());
        for b in buf.iter_mut().take(n) {
            *b = self.out.pop_front().unwrap_or(0);
        }
        Ok(n)
    }
}

/// The lamp relay's driver pin.
#[derive(Debug)]
pub struct RelayPin(pub Shared<LampModel>);

impl embedded_hal::digital::ErrorType for RelayPin {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for RelayPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.0.borrow_mut().relay_cmd = false;
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.borrow_mut().relay_cmd = true;
        Ok(())
    }
}

/// The dimming PWM channel.
#[derive(Debug)]
pub struct DimPwm(pub Shared<LampModel>);

impl embedded_hal::pwm::ErrorType for DimPwm {
    type Error = Infallible;
}

impl embedded_hal::pwm::SetDutyCycle for DimPwm {
    fn max_duty_cycle(&self) -> u16 {
        1000
    }
    fn set_duty_cycle(&mut self, duty: u16) -> Result<(), Infallible> {
        self.0.borrow_mut().duty = f64::from(duty) / 1000.0;
        Ok(())
    }
}

/// Delays take no time in simulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDelay;

impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// Cell voltage of a battery model, inverting the firmware's discharge curve.
pub fn battery_volts(model: &BatteryModel, curve: battery::Curve) -> f64 {
    let pct = model.level_pct();
    let mut points = curve.iter().map(|&(v, p)| (f64::from(v), f64::from(p)));
    let Some(mut hi) = points.next() else {
        return 0.0;
    };
    if pct >= hi.1 {
        return hi.0;
    }
    for lo in points {
        if pct >= lo.1 {
            let t = (pct - lo.1) / (hi.1 - lo.1);
            return lo.0 + t * (hi.0 - lo.0);
        }
        hi = lo;
    }
    hi.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physics::{BatteryModel, shared};
    use streetgate_firmware::drivers::ads1115::{Ads1115, Channel};
    use streetgate_firmware::drivers::battery::{AdcInput, BatteryGauge, LI_SOCL2};
    use streetgate_firmware::drivers::lis3dh::Lis3dh;
    use streetgate_firmware::sensors::{Accelerometer, Battery, LampDriver, Ranger};

    #[test]
    fn the_real_lis3dh_driver_reads_the_cover_pose() {
        let cover = shared(Cover::new(1));
        cover.borrow_mut().tilt_deg = 30.0;
        let mut acc = Lis3dh::new(
            SimI2c::new(Lis3dhChip::new(cover.clone())),
            lis3dh::Config::default(),
        );
        acc.init().unwrap();
        let g = acc.read_mg().unwrap();
        let tilt = (f64::from(g[2]) / 1000.0).acos().to_degrees();
        assert!((tilt - 30.0).abs() < 1.0, "{g:?}");
    }

    #[test]
    fn the_real_ranger_driver_reads_the_bin() {
        let bin = shared(BinModel::new(2, 1000.0, 0.0));
        bin.borrow_mut().fill_pct = 50.0;
        let mut r = a02yyuw::A02yyuw::new(A02yyuwChip::for_bin(bin));
        let readings: Vec<u16> = (0..50).filter_map(|_| r.distance_mm().unwrap()).collect();
        let near = readings.iter().filter(|d| (480..=520).contains(*d)).count();
        assert!(near > 35, "{readings:?}");
    }

    #[test]
    fn the_real_metering_driver_reads_the_lamp() {
        let lamp = shared(LampModel::new(3));
        let mut stage = streetgate_firmware::drivers::lamp::LampController::new(
            RelayPin(lamp.clone()),
            DimPwm(lamp.clone()),
            Bl0942::new(Bl0942Chip::new(lamp.clone()), Calibration::default()),
            streetgate_firmware::drivers::lamp::NoLeakageSensor,
        );
        stage.set_relay(true).unwrap();
        stage.set_dim_pct(50).unwrap();
        let m = stage.measure().unwrap();
        assert!(
            (m.power_w - 50.0).abs() < 1.0 && (m.voltage_v - 230.0).abs() < 3.0,
            "{m:?}"
        );
        lamp.borrow_mut().burnt_out = true;
        assert!(stage.measure().unwrap().current_a < 0.01);
    }

    #[test]
    fn the_real_battery_gauge_reads_the_model() {
        let mut model = BatteryModel::d_cell();
        model.used_mah = model.capacity_mah * 0.55;
        let v = battery_volts(&model, LI_SOCL2);
        let adc = Ads1115::new(
            SimI2c::new(Ads1115Chip::new(
                0x48,
                [None, None, Some(Box::new(move || v / 2.0)), None],
            )),
            NoDelay,
            ads1115::Config::default(),
        );
        let mut gauge = BatteryGauge::new(
            AdcInput::new(adc, Channel::Ain2, Gain::Fs4_096),
            2.0,
            LI_SOCL2,
        );
        let pct = gauge.level_pct().unwrap();
        assert!((i32::from(pct) - 45).abs() <= 2, "{pct}");
    }
}
