//! Signal conditioning and alarm decisions shared by the applications.

/// Median of the last `N` samples (ranging: rejects single bad echoes).
#[derive(Debug, Clone)]
pub struct Median<const N: usize> {
    buf: [f32; N],
    len: usize,
    next: usize,
}

impl<const N: usize> Default for Median<N> {
    fn default() -> Self {
        Self {
            buf: [0.0; N],
            len: 0,
            next: 0,
        }
    }
}

impl<const N: usize> Median<N> {
    /// Add a sample.
    pub fn push(&mut self, v: f32) {
        if N == 0 || !v.is_finite() {
            return;
        }
        self.buf[self.next] = v;
        self.next = (self.next + 1) % N;
        self.len = (self.len + 1).min(N);
    }

    /// Median of the samples held, `None` when empty.
    pub fn median(&self) -> Option<f32> {
        if self.len == 0 {
            return None;
        }
        let mut sorted = self.buf;
        let s = &mut sorted[..self.len];
        s.sort_unstable_by(f32::total_cmp);
        Some(if self.len % 2 == 1 {
            s[self.len / 2]
        } else {
            (s[self.len / 2 - 1] + s[self.len / 2]) / 2.0
        })
    }

    /// Forget all samples.
    pub fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }
}

/// Average of the samples taken within the last `window_ms` (gas), at most `N` samples.
#[derive(Debug, Clone)]
pub struct MovingAverage<const N: usize> {
    samples: heapless::Deque<(u64, f32), N>,
}

impl<const N: usize> Default for MovingAverage<N> {
    fn default() -> Self {
        Self {
            samples: heapless::Deque::new(),
        }
    }
}

impl<const N: usize> MovingAverage<N> {
    /// Add a sample taken at `t_ms`, forgetting those older than the window.
    pub fn push(&mut self, t_ms: u64, v: f32, window_ms: u64) {
        if !v.is_finite() {
            return;
        }
        if self.samples.is_full() {
            self.samples.pop_front();
        }
        let _ = self.samples.push_back((t_ms, v));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| t_ms.saturating_sub(*t) >= window_ms)
        {
            self.samples.pop_front();
        }
    }

    /// Mean of the samples in the window.
    pub fn average(&self) -> Option<f32> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)] // n ≤ N, small
        Some(self.samples.iter().map(|(_, v)| v).sum::<f32>() / n as f32)
    }

    /// Time span covered by the samples, ms.
    pub fn span_ms(&self) -> u64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((a, _)), Some((b, _))) => b - a,
            _ => 0,
        }
    }
}

/// Exponential low-pass on a 3-axis vector: suppresses traffic vibration on a cover's
/// accelerometer while following a real change of pose within a few samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct VibrationFilter {
    state: Option<[f32; 3]>,
}

impl VibrationFilter {
    /// Weight of a new sample.
    pub const ALPHA: f32 = 0.3;

    /// Feed a sample, get the filtered vector.
    pub fn update(&mut self, v: [f32; 3]) -> [f32; 3] {
        let next = match self.state {
            None => v,
            Some(s) => core::array::from_fn(|i| s[i] + Self::ALPHA * (v[i] - s[i])),
        };
        self.state = Some(next);
        next
    }

    /// The current filtered vector.
    pub fn value(&self) -> Option<[f32; 3]> {
        self.state
    }
}

/// Angle between two vectors, degrees (0..=180); 0 for a zero vector.
pub fn angle_deg(a: [f32; 3], b: [f32; 3]) -> f32 {
    let dot: f32 = (0..3).map(|i| a[i] * b[i]).sum();
    let na = libm::sqrtf(a.iter().map(|x| x * x).sum());
    let nb = libm::sqrtf(b.iter().map(|x| x * x).sum());
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    libm::acosf((dot / (na * nb)).clamp(-1.0, 1.0)).to_degrees()
}

/// An alarm edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The condition has held for its minimum duration.
    Raised,
    /// The condition ended past its hysteresis.
    Cleared,
}

/// Limits of one alarm: raised when the value is at or above `raise_at` for `hold_ms`, cleared
/// when it falls below `clear_below` (at most `raise_at`: the hysteresis band lies between).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Raise threshold.
    pub raise_at: f32,
    /// Clear threshold.
    pub clear_below: f32,
    /// Minimum duration before raising, ms.
    pub hold_ms: u64,
}

impl Limit {
    /// A limit with a hysteresis band below the threshold.
    pub fn new(raise_at: f32, hysteresis: f32, hold_ms: u64) -> Self {
        Self {
            raise_at,
            clear_below: raise_at - hysteresis.max(0.0),
            hold_ms,
        }
    }
}

/// Decision state of one alarm: threshold, hysteresis, minimum duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alarm {
    active: bool,
    above_since: Option<u64>,
}

impl Alarm {
    /// Whether the alarm is raised.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Feed a value observed at `now_ms`; returns an edge when the alarm changes.
    pub fn update(&mut self, value: f32, limit: &Limit, now_ms: u64) -> Option<Edge> {
        self.update_condition(
            value >= limit.raise_at,
            value < limit.clear_below,
            limit.hold_ms,
            now_ms,
        )
    }

    /// Feed a boolean condition (`true` = alarming); cleared as soon as it is false.
    pub fn update_bool(&mut self, condition: bool, hold_ms: u64, now_ms: u64) -> Option<Edge> {
        self.update_condition(condition, !condition, hold_ms, now_ms)
    }

    fn update_condition(
        &mut self,
        over: bool,
        under: bool,
        hold_ms: u64,
        now_ms: u64,
    ) -> Option<Edge> {
        if self.active {
            if under {
                self.active = false;
                self.above_since = None;
                return Some(Edge::Cleared);
            }
            return None;
        }
        if !over {
            self.above_since = None;
            return None;
        }
        let since = *self.above_since.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) >= hold_ms {
            self.active = true;
            return Some(Edge::Raised);
        }
        None
    }
}

/// Report-on-change with a deadband, plus a heartbeat.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportPolicy {
    last_value: Option<f32>,
    last_ms: Option<u64>,
}

impl ReportPolicy {
    /// Whether to send telemetry now: first report, a change beyond `deadband` (but not more
    /// often than `min_interval_ms`), or `heartbeat_ms` without a report.
    pub fn due(
        &self,
        value: f32,
        now_ms: u64,
        deadband: f32,
        min_interval_ms: u64,
        heartbeat_ms: u64,
    ) -> bool {
        let (Some(last_v), Some(last_t)) = (self.last_value, self.last_ms) else {
            return true;
        };
        let age = now_ms.saturating_sub(last_t);
        age >= heartbeat_ms || (age >= min_interval_ms && libm::fabsf(value - last_v) >= deadband)
    }

    /// Record a report.
    pub fn reported(&mut self, value: f32, now_ms: u64) {
        self.last_value = Some(value);
        self.last_ms = Some(now_ms);
    }

    /// Force the next check to report (a request from the gateway, an alarm edge).
    pub fn force(&mut self) {
        self.last_ms = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_rejects_outliers() {
        let mut m: Median<5> = Median::default();
        assert_eq!(m.median(), None);
        for v in [500.0, 510.0, 30.0, 505.0, 4000.0] {
            m.push(v);
        }
        assert_eq!(m.median(), Some(505.0));
        m.push(f32::NAN);
        assert_eq!(m.median(), Some(505.0));
        m.clear();
        m.push(1.0);
        m.push(3.0);
        assert_eq!(m.median(), Some(2.0));
    }

    #[test]
    fn moving_average_window() {
        let mut a: MovingAverage<8> = MovingAverage::default();
        a.push(0, 1.0, 600_000);
        a.push(300_000, 3.0, 600_000);
        assert_eq!(a.average(), Some(2.0));
        a.push(600_000, 5.0, 600_000); // first sample leaves the window
        assert_eq!(a.average(), Some(4.0));
        assert_eq!(a.span_ms(), 300_000);
    }

    #[test]
    fn alarm_hold_and_hysteresis() {
        let limit = Limit::new(10.0, 2.0, 5_000);
        let mut a = Alarm::default();
        assert_eq!(a.update(12.0, &limit, 0), None);
        assert_eq!(a.update(12.0, &limit, 4_999), None);
        assert_eq!(a.update(12.0, &limit, 5_000), Some(Edge::Raised));
        assert_eq!(a.update(9.0, &limit, 6_000), None); // inside the hysteresis band
        assert_eq!(a.update(7.9, &limit, 7_000), Some(Edge::Cleared));
        // A short excursion (vibration) never raises.
        assert_eq!(a.update(15.0, &limit, 8_000), None);
        assert_eq!(a.update(3.0, &limit, 9_000), None);
        assert_eq!(a.update(15.0, &limit, 12_000), None);
        assert_eq!(a.update(15.0, &limit, 16_999), None);
        assert_eq!(a.update(15.0, &limit, 17_000), Some(Edge::Raised));
        assert!(a.is_active());
    }

    #[test]
    fn angles() {
        assert!((angle_deg([0.0, 0.0, 1000.0], [0.0, 1000.0, 0.0]) - 90.0).abs() < 1e-3);
        assert!((angle_deg([0.0, 0.0, 1.0], [0.0, 0.0, -1.0]) - 180.0).abs() < 1e-3);
        assert_eq!(angle_deg([0.0; 3], [1.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn vibration_is_smoothed() {
        let mut f = VibrationFilter::default();
        f.update([0.0, 0.0, 1000.0]);
        let v = f.update([400.0, 0.0, 900.0]); // a jolt
        assert!(angle_deg(v, [0.0, 0.0, 1000.0]) < 10.0);
    }

    #[test]
    fn report_policy() {
        let mut p = ReportPolicy::default();
        assert!(p.due(1.0, 0, 0.5, 1_000, 60_000));
        p.reported(1.0, 0);
        assert!(!p.due(1.2, 2_000, 0.5, 1_000, 60_000));
        assert!(!p.due(2.0, 500, 0.5, 1_000, 60_000)); // too soon
        assert!(p.due(2.0, 2_000, 0.5, 1_000, 60_000));
        assert!(p.due(1.0, 60_000, 0.5, 1_000, 60_000)); // heartbeat
        p.force();
        assert!(p.due(1.0, 1, 0.5, 1_000, 60_000));
    }
}
