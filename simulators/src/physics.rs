//! Physical models, advanced by simulated time.

use std::cell::RefCell;
use std::rc::Rc;

/// Shared handle to a model: the chips read it, scenarios change it.
pub type Shared<T> = Rc<RefCell<T>>;

/// Wrap a model for sharing.
pub fn shared<T>(t: T) -> Shared<T> {
    Rc::new(RefCell::new(t))
}

/// A small deterministic noise source (xorshift64*), so runs are reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        #[allow(clippy::cast_precision_loss)]
        let r = (v >> 11) as f64 / (1u64 << 53) as f64;
        r
    }

    /// Uniform in [-amp, amp].
    pub fn symmetric(&mut self, amp: f64) -> f64 {
        (self.unit() * 2.0 - 1.0) * amp
    }
}

/// A manhole cover: its pose, traffic over it and the water in the well.
#[derive(Debug, Clone)]
pub struct Cover {
    /// Tilt of the cover from its installed pose, °.
    pub tilt_deg: f64,
    /// Direction of the tilt around the vertical, °.
    pub azimuth_deg: f64,
    /// Peak acceleration of traffic vibration, milli-g (0 = quiet street).
    pub vibration_mg: f64,
    /// Cover lifted off the frame (reads as lying on its side).
    pub lifted: bool,
    /// Water level in the well, cm.
    pub water_cm: f64,
    /// Distance from the level probe to the well bottom, mm.
    pub well_depth_mm: f64,
    noise: Noise,
}

impl Cover {
    /// A cover at rest, flat.
    pub fn new(seed: u64) -> Self {
        Self {
            tilt_deg: 0.0,
            azimuth_deg: 30.0,
            vibration_mg: 0.0,
            lifted: false,
            water_cm: 0.0,
            well_depth_mm: 2000.0,
            noise: Noise::new(seed),
        }
    }

    /// The acceleration the sensor on the cover feels, milli-g (gravity + vibration).
    pub fn acceleration_mg(&mut self) -> [f64; 3] {
        let tilt = if self.lifted { 90.0f64 } else { self.tilt_deg }.to_radians();
        let az = self.azimuth_deg.to_radians();
        let g = [
            1000.0 * tilt.sin() * az.cos(),
            1000.0 * tilt.sin() * az.sin(),
            1000.0 * tilt.cos(),
        ];
        let v = self.vibration_mg;
        [
            g[0] + self.noise.symmetric(v),
            g[1] + self.noise.symmetric(v),
            g[2] + self.noise.symmetric(v),
        ]
    }

    /// Distance from the probe to the water surface, mm.
    pub fn water_distance_mm(&self) -> f64 {
        (self.well_depth_mm - self.water_cm * 10.0).max(0.0)
    }
}

/// A waste bin filling at a rate, emptied by collection rounds.
#[derive(Debug, Clone)]
pub struct BinModel {
    /// Depth from the sensor to the bottom, mm.
    pub depth_mm: f64,
    /// Fill level, % (can exceed 100: refuse heaped above the rim).
    pub fill_pct: f64,
    /// Filling rate, % per hour.
    pub rate_pct_h: f64,
    /// Temperature inside, °C.
    pub temperature_c: f64,
    /// Burning: temperature rises.
    pub on_fire: bool,
    /// Knocked over.
    pub tipped: bool,
    /// Echo noise, mm (plus occasional wall echoes).
    pub echo_noise_mm: f64,
    noise: Noise,
}

impl BinModel {
    /// An empty bin.
    pub fn new(seed: u64, depth_mm: f64, rate_pct_h: f64) -> Self {
        Self {
            depth_mm,
            fill_pct: 0.0,
            rate_pct_h,
            temperature_c: 20.0,
            on_fire: false,
            tipped: false,
            echo_noise_mm: 8.0,
            noise: Noise::new(seed),
        }
    }

    /// Advance by `dt_s` seconds.
    pub fn advance(&mut self, dt_s: f64) {
        self.fill_pct = (self.fill_pct + self.rate_pct_h * dt_s / 3600.0).min(140.0);
        let target = if self.on_fire { 180.0 } else { 20.0 };
        // First-order approach to the target temperature (time constant 10 min).
        self.temperature_c += (target - self.temperature_c) * (dt_s / 600.0).min(1.0);
    }

    /// A collection round empties the bin.
    pub fn collect(&mut self) {
        self.fill_pct = 0.0;
    }

    /// One ranger echo, mm: the refuse surface with noise, sometimes the bin wall.
    pub fn echo_mm(&mut self) -> f64 {
        if self.noise.unit() < 0.1 {
            return 60.0 + self.noise.unit() * 40.0;
        }
        let surface = self.depth_mm * (1.0 - self.fill_pct / 100.0);
        if surface < self.echo_noise_mm {
            // Refuse heaped up to the lid: the echo comes from inside the blind zone.
            return 5.0 + self.noise.unit() * 20.0;
        }
        (surface + self.noise.symmetric(self.echo_noise_mm)).max(1.0)
    }
}

/// A public toilet's air: NH3 and H2S from usage, removed by ventilation.
#[derive(Debug, Clone)]
pub struct ToiletAir {
    /// Ammonia, mg/m³.
    pub nh3_mg_m3: f64,
    /// Hydrogen sulphide, mg/m³.
    pub h2s_mg_m3: f64,
    /// Visits per hour.
    pub usage_per_h: f64,
    /// Fan working.
    pub fan_ok: bool,
    noise: Noise,
}

impl ToiletAir {
    /// Clean air, moderate use.
    pub fn new(seed: u64) -> Self {
        Self {
            nh3_mg_m3: 0.1,
            h2s_mg_m3: 0.002,
            usage_per_h: 20.0,
            fan_ok: true,
            noise: Noise::new(seed),
        }
    }

    /// Advance by `dt_s` seconds: emission ∝ usage, removal ∝ air changes. With the fan
    /// (10 air changes/h) and 20 visits/h the steady state is ≈ 0.18 mg/m³ NH3, 0.0024 H2S:
    /// within the strictest class's limits (0.3 and 0.01), with margin for noise.
    pub fn advance(&mut self, dt_s: f64) {
        let air_changes_h = if self.fan_ok { 10.0 } else { 0.5 };
        let k = air_changes_h / 3600.0 * dt_s;
        let emission_nh3 = self.usage_per_h * 0.0015 * dt_s / 60.0;
        let emission_h2s = self.usage_per_h * 0.000_02 * dt_s / 60.0;
        self.nh3_mg_m3 = (self.nh3_mg_m3 + emission_nh3 - self.nh3_mg_m3 * k.min(1.0)).max(0.0);
        self.h2s_mg_m3 = (self.h2s_mg_m3 + emission_h2s - self.h2s_mg_m3 * k.min(1.0)).max(0.0);
    }

    /// A noisy reading of both gases.
    pub fn sample(&mut self) -> (f64, f64) {
        (
            (self.nh3_mg_m3 * (1.0 + self.noise.symmetric(0.05))).max(0.0),
            (self.h2s_mg_m3 * (1.0 + self.noise.symmetric(0.1))).max(0.0),
        )
    }
}

/// A lamp's electrics, with its failure modes.
#[derive(Debug, Clone)]
pub struct LampModel {
    /// Relay coil energised (what the controller commands).
    pub relay_cmd: bool,
    /// Dimming duty, 0..=1.
    pub duty: f64,
    /// Rated power at full brightness, W.
    pub rated_w: f64,
    /// Mains voltage at the pole (0 when the feeder lost supply), V.
    pub supply_v: f64,
    /// LED module burnt out: no current.
    pub burnt_out: bool,
    /// Relay contacts stuck: `Some(true)` welded closed, `Some(false)` stuck open.
    pub relay_stuck: Option<bool>,
    /// Leakage to earth, mA.
    pub leakage_ma: f64,
    /// Energy metered, Wh.
    pub energy_wh: f64,
    noise: Noise,
}

impl LampModel {
    /// A healthy 100 W LED lamp on a 230 V feeder.
    pub fn new(seed: u64) -> Self {
        Self {
            relay_cmd: false,
            duty: 1.0,
            rated_w: 100.0,
            supply_v: 230.0,
            burnt_out: false,
            relay_stuck: None,
            leakage_ma: 0.5,
            energy_wh: 0.0,
            noise: Noise::new(seed),
        }
    }

    /// Whether the contacts are closed.
    pub fn contacts_closed(&self) -> bool {
        self.relay_stuck.unwrap_or(self.relay_cmd)
    }

    /// Present (voltage, current, power).
    pub fn electrics(&mut self) -> (f64, f64, f64) {
        let v = if self.supply_v > 0.0 {
            self.supply_v + self.noise.symmetric(1.5)
        } else {
            0.0
        };
        let lit = self.contacts_closed() && !self.burnt_out && self.supply_v > 100.0;
        let p = if lit {
            self.rated_w * self.duty.max(0.05)
        } else {
            0.0
        };
        let i = if lit { p / v.max(1.0) / 0.95 } else { 0.0 };
        (v, i, p)
    }

    /// Advance energy by `dt_s`.
    pub fn advance(&mut self, dt_s: f64) {
        let (_, _, p) = self.electrics();
        self.energy_wh += p * dt_s / 3600.0;
    }
}

/// A battery that drains with each sample and each transmission.
#[derive(Debug, Clone)]
pub struct BatteryModel {
    /// Capacity, mAh.
    pub capacity_mah: f64,
    /// Charge used, mAh.
    pub used_mah: f64,
    /// Sleep current, µA.
    pub sleep_ua: f64,
    /// Charge per sample, µAh.
    pub sample_uah: f64,
    /// Charge per transmitted message, µAh (cellular NB-IoT: tens of µAh).
    pub tx_uah: f64,
}

impl BatteryModel {
    /// A 19 Ah Li-SOCl2 D cell, as used in cover sensors.
    pub fn d_cell() -> Self {
        Self {
            capacity_mah: 19_000.0,
            used_mah: 0.0,
            sleep_ua: 10.0,
            sample_uah: 0.5,
            tx_uah: 40.0,
        }
    }

    /// Remaining charge, %.
    pub fn level_pct(&self) -> f64 {
        (100.0 * (1.0 - self.used_mah / self.capacity_mah)).clamp(0.0, 100.0)
    }

    /// Account for time asleep, samples and messages.
    pub fn drain(&mut self, dt_s: f64, samples: u64, messages: u64) {
        #[allow(clippy::cast_precision_loss)]
        let used_uah = self.sleep_ua * dt_s / 3600.0
            + self.sample_uah * samples as f64
            + self.tx_uah * messages as f64;
        self.used_mah += used_uah / 1000.0;
    }

    /// Days of life at a constant drain per day.
    pub fn projected_days(&self, used_mah_per_day: f64) -> f64 {
        if used_mah_per_day <= 0.0 {
            f64::INFINITY
        } else {
            (self.capacity_mah - self.used_mah) / used_mah_per_day
        }
    }
}
