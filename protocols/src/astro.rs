//! Astronomical clock: sunrise and sunset at a place, and the lamp switching they imply.
//!
//! Lamps and the gateway's lighting-rate rule must agree on when a lamp *should* be lit, so both
//! use this module. The algorithm is the NOAA/Meeus low-precision solar position (the "sunrise
//! equation" with equation of time and declination), standard refraction-corrected horizon of
//! −0.833°; error is within about a minute at the latitudes of Chinese cities and a few minutes up
//! to ±65°. Pure `f64` maths through `libm`, so it runs on a microcontroller with an FPU.
//!
//! Time is Unix seconds (UTC). A *solar day* is the 24 h centred on local solar noon (transit),
//! so a night never straddles two days' computations in an inconsistent way, at any longitude.

use core::f64::consts::PI;

const SECONDS_PER_DAY: i64 = 86_400;
const HALF_DAY: f64 = 43_200.0;
const J2000: f64 = 2_451_545.0;
const UNIX_EPOCH_JD: f64 = 2_440_587.5;
/// Sun's centre 0.833° below the horizon: refraction plus the solar radius.
const HORIZON_DEG: f64 = -0.833;
/// Obliquity of the ecliptic, degrees.
const OBLIQUITY_DEG: f64 = 23.4397;

/// Sunrise and sunset in Unix seconds (UTC) for the solar day around local noon of `unix_day`
/// (days since 1970-01-01, counted in UTC) at a place. `None` for polar day or polar night.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SunEvents {
    /// Sunrise, Unix seconds.
    pub sunrise_s: Option<i64>,
    /// Sunset, Unix seconds.
    pub sunset_s: Option<i64>,
}

/// What the sun does on one solar day.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SolarDay {
    /// Rises and sets: (transit, sunrise, sunset) in Unix seconds as f64.
    Normal { transit: f64, rise: f64, set: f64 },
    /// Never sets.
    PolarDay { transit: f64 },
    /// Never rises.
    PolarNight { transit: f64 },
}

impl SolarDay {
    fn transit(self) -> f64 {
        match self {
            Self::Normal { transit, .. }
            | Self::PolarDay { transit }
            | Self::PolarNight { transit } => transit,
        }
    }
}

fn rad(deg: f64) -> f64 {
    deg * PI / 180.0
}

fn deg(rad: f64) -> f64 {
    rad * 180.0 / PI
}

fn rem_euclid(x: f64, m: f64) -> f64 {
    let r = libm::fmod(x, m);
    if r < 0.0 { r + m } else { r }
}

/// Solar day `unix_day` at a place (east longitude positive).
fn solar_day(unix_day: i64, lat_deg: f64, lon_deg: f64) -> SolarDay {
    // Julian day number of 12:00 UTC of that date, relative to J2000, shifted to local noon.
    #[allow(clippy::cast_precision_loss)] // day counts are far below 2^52
    let n = unix_day as f64 + UNIX_EPOCH_JD + 0.5 - J2000 + 0.0008;
    let j_star = n - lon_deg / 360.0;
    let m = rem_euclid(357.5291 + 0.985_600_28 * j_star, 360.0);
    let m_r = rad(m);
    let c = 1.9148 * libm::sin(m_r) + 0.0200 * libm::sin(2.0 * m_r) + 0.0003 * libm::sin(3.0 * m_r);
    let lambda = rem_euclid(m + c + 180.0 + 102.9372, 360.0);
    let l_r = rad(lambda);
    let j_transit = J2000 + j_star + 0.0053 * libm::sin(m_r) - 0.0069 * libm::sin(2.0 * l_r);
    let sin_decl = libm::sin(l_r) * libm::sin(rad(OBLIQUITY_DEG));
    let cos_decl = libm::cos(libm::asin(sin_decl));
    let phi = rad(lat_deg);
    let cos_omega =
        (libm::sin(rad(HORIZON_DEG)) - libm::sin(phi) * sin_decl) / (libm::cos(phi) * cos_decl);
    let transit = (j_transit - UNIX_EPOCH_JD) * SECONDS_PER_DAY as f64;
    if cos_omega < -1.0 {
        SolarDay::PolarDay { transit }
    } else if cos_omega > 1.0 {
        SolarDay::PolarNight { transit }
    } else {
        let half = deg(libm::acos(cos_omega)) / 360.0 * SECONDS_PER_DAY as f64;
        SolarDay::Normal {
            transit,
            rise: transit - half,
            set: transit + half,
        }
    }
}

fn valid_place(lat_deg: f64, lon_deg: f64) -> bool {
    lat_deg.is_finite()
        && lon_deg.is_finite()
        && (-90.0..=90.0).contains(&lat_deg)
        && (-180.0..=180.0).contains(&lon_deg)
}

/// Sunrise and sunset for the solar day around local noon of `unix_day` at a place.
/// Both `None` for polar day/night or a place that is not on Earth (NaN, out of range).
pub fn sun_events(unix_day: i64, lat_deg: f64, lon_deg: f64) -> SunEvents {
    if !valid_place(lat_deg, lon_deg) {
        return SunEvents {
            sunrise_s: None,
            sunset_s: None,
        };
    }
    match solar_day(unix_day, lat_deg, lon_deg) {
        #[allow(clippy::cast_possible_truncation)]
        SolarDay::Normal { rise, set, .. } => SunEvents {
            sunrise_s: Some(libm::round(rise) as i64),
            sunset_s: Some(libm::round(set) as i64),
        },
        SolarDay::PolarDay { .. } | SolarDay::PolarNight { .. } => SunEvents {
            sunrise_s: None,
            sunset_s: None,
        },
    }
}

/// The solar day containing instant `t` and its index.
fn day_containing(t: f64, lat_deg: f64, lon_deg: f64) -> (i64, SolarDay) {
    // UTC date whose local solar noon is nearest to t.
    let local = t + lon_deg / 360.0 * SECONDS_PER_DAY as f64;
    #[allow(clippy::cast_possible_truncation)]
    let mut k = libm::floor(local / SECONDS_PER_DAY as f64) as i64;
    let mut day = solar_day(k, lat_deg, lon_deg);
    for _ in 0..2 {
        if t < day.transit() - HALF_DAY {
            k -= 1;
        } else if t >= day.transit() + HALF_DAY {
            k += 1;
        } else {
            break;
        }
        day = solar_day(k, lat_deg, lon_deg);
    }
    (k, day)
}

/// Switching instants of one solar day: lamps on in `[start, off)` and `[on, end)`.
fn switch_window(day: SolarDay, on_offset_min: i16, off_offset_min: i16) -> (f64, f64, f64, f64) {
    let start = day.transit() - HALF_DAY;
    let end = day.transit() + HALF_DAY;
    match day {
        SolarDay::Normal { rise, set, .. } => {
            let off = (rise + f64::from(off_offset_min) * 60.0).clamp(start, end);
            let on = (set + f64::from(on_offset_min) * 60.0).clamp(off, end);
            (start, off, on, end)
        }
        // Never dark: the morning "on" window is empty and the evening one starts at the end.
        SolarDay::PolarDay { .. } => (start, start, end, end),
        // Never light: on all day.
        SolarDay::PolarNight { .. } => (start, end, end, end),
    }
}

fn on_at(t: f64, lat_deg: f64, lon_deg: f64, on_offset_min: i16, off_offset_min: i16) -> bool {
    let (_, day) = day_containing(t, lat_deg, lon_deg);
    let (_, off, on, _) = switch_window(day, on_offset_min, off_offset_min);
    match day {
        SolarDay::PolarNight { .. } => true,
        SolarDay::PolarDay { .. } => false,
        // Open-ended on both sides: consecutive solar days are not exactly 24 h apart (the
        // equation of time drifts), so the instants around midnight belong to either day.
        SolarDay::Normal { .. } => t < off || t >= on,
    }
}

/// Whether lamps at this place should be lit at `unix_s`: from sunset + `on_offset_min` to the
/// next sunrise + `off_offset_min`. Polar night is on, polar day off; an invalid place is off.
pub fn lamps_should_be_on(
    unix_s: i64,
    lat_deg: f64,
    lon_deg: f64,
    on_offset_min: i16,
    off_offset_min: i16,
) -> bool {
    if !valid_place(lat_deg, lon_deg) {
        return false;
    }
    #[allow(clippy::cast_precision_loss)]
    on_at(
        unix_s as f64,
        lat_deg,
        lon_deg,
        on_offset_min,
        off_offset_min,
    )
}

/// The next instant strictly after `unix_s` at which [`lamps_should_be_on`] changes, with the new
/// state. `None` when nothing changes within two days (polar day or night) or the place is invalid.
pub fn next_switch(
    unix_s: i64,
    lat_deg: f64,
    lon_deg: f64,
    on_offset_min: i16,
    off_offset_min: i16,
) -> Option<(i64, bool)> {
    if !valid_place(lat_deg, lon_deg) {
        return None;
    }
    let now = lamps_should_be_on(unix_s, lat_deg, lon_deg, on_offset_min, off_offset_min);
    #[allow(clippy::cast_precision_loss)]
    let (k, _) = day_containing(unix_s as f64, lat_deg, lon_deg);
    // Candidate instants: every window edge of this and the next two solar days, in time order.
    let mut best: Option<i64> = None;
    for day_index in k..=k + 2 {
        let day = solar_day(day_index, lat_deg, lon_deg);
        let (start, off, on, end) = switch_window(day, on_offset_min, off_offset_min);
        for edge in [start, off, on, end] {
            #[allow(clippy::cast_possible_truncation)]
            let c = libm::ceil(edge) as i64;
            if c > unix_s
                && best.is_none_or(|b| c < b)
                && lamps_should_be_on(c, lat_deg, lon_deg, on_offset_min, off_offset_min) != now
            {
                best = Some(c);
            }
        }
    }
    best.filter(|b| b - unix_s <= 2 * SECONDS_PER_DAY)
        .map(|b| (b, !now))
}

/// Seconds of switched-on time in `[from_s, to_s)` at a place; used for lighting rates over a
/// period. Zero for an empty or reversed interval or an invalid place.
pub fn on_seconds_between(
    from_s: i64,
    to_s: i64,
    lat_deg: f64,
    lon_deg: f64,
    on_offset_min: i16,
    off_offset_min: i16,
) -> i64 {
    if to_s <= from_s || !valid_place(lat_deg, lon_deg) {
        return 0;
    }
    let mut total = 0;
    let mut cur = from_s;
    let mut state = lamps_should_be_on(cur, lat_deg, lon_deg, on_offset_min, off_offset_min);
    while cur < to_s {
        let (next, next_state) =
            match next_switch(cur, lat_deg, lon_deg, on_offset_min, off_offset_min) {
                Some(switch) => switch,
                // Polar: nothing changes for two days.
                None => (cur.saturating_add(2 * SECONDS_PER_DAY), state),
            };
        let until = next.min(to_s);
        if state {
            total += until - cur;
        }
        cur = until;
        state = next_state;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Unix seconds of a UTC calendar date and time.
    fn utc(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        // Days from civil (Howard Hinnant's algorithm).
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * SECONDS_PER_DAY + h * 3600 + mi * 60
    }

    fn day_of(t: i64) -> i64 {
        t.div_euclid(SECONDS_PER_DAY)
    }

    fn close(actual: Option<i64>, expected: i64, tol_min: i64) {
        let a = actual.expect("event exists");
        assert!(
            (a - expected).abs() <= tol_min * 60,
            "got {a}, expected {expected} (diff {} s)",
            a - expected
        );
    }

    const BEIJING: (f64, f64) = (39.9042, 116.4074);

    #[test]
    fn beijing_solstices() {
        // 2024-06-21 CST (UTC+8): sunrise 04:46, sunset 19:46.
        let ev = sun_events(day_of(utc(2024, 6, 21, 4, 0)), BEIJING.0, BEIJING.1);
        close(ev.sunrise_s, utc(2024, 6, 20, 20, 46), 3);
        close(ev.sunset_s, utc(2024, 6, 21, 11, 46), 3);
        // 2024-12-21 CST: sunrise 07:33, sunset 16:53.
        let ev = sun_events(day_of(utc(2024, 12, 21, 4, 0)), BEIJING.0, BEIJING.1);
        close(ev.sunrise_s, utc(2024, 12, 20, 23, 33), 3);
        close(ev.sunset_s, utc(2024, 12, 21, 8, 53), 3);
    }

    #[test]
    fn other_cities() {
        // Shanghai 2024-03-20 (equinox): sunrise ≈ 06:00 CST, sunset ≈ 18:07 CST.
        let ev = sun_events(day_of(utc(2024, 3, 20, 4, 0)), 31.2304, 121.4737);
        close(ev.sunrise_s, utc(2024, 3, 19, 22, 0), 4);
        close(ev.sunset_s, utc(2024, 3, 20, 10, 7), 4);
        // Harbin 2024-06-21: sunrise ≈ 03:42, sunset ≈ 19:26 CST.
        let ev = sun_events(day_of(utc(2024, 6, 21, 4, 0)), 45.8038, 126.5350);
        close(ev.sunrise_s, utc(2024, 6, 20, 19, 42), 4);
        close(ev.sunset_s, utc(2024, 6, 21, 11, 26), 4);
        // Sanya 2024-12-21: solar noon 12:40 CST, half-day 5 h 31 min: 07:09 and 18:11 CST.
        let ev = sun_events(day_of(utc(2024, 12, 21, 4, 0)), 18.2528, 109.5119);
        close(ev.sunrise_s, utc(2024, 12, 20, 23, 9), 3);
        close(ev.sunset_s, utc(2024, 12, 21, 10, 11), 3);
        // Quito 2024-03-20 (UTC−5): solar noon 12:21 (longitude + equation of time), ≈ 12 h 7 min
        // of day: 06:18 and 18:25 local.
        let ev = sun_events(day_of(utc(2024, 3, 20, 12, 0)), -0.1807, -78.4678);
        close(ev.sunrise_s, utc(2024, 3, 20, 11, 18), 3);
        close(ev.sunset_s, utc(2024, 3, 20, 23, 25), 3);
    }

    #[test]
    fn polar() {
        // Tromsø in midsummer and midwinter.
        let summer = sun_events(day_of(utc(2024, 6, 21, 12, 0)), 69.65, 18.96);
        assert_eq!(
            summer,
            SunEvents {
                sunrise_s: None,
                sunset_s: None
            }
        );
        assert!(!lamps_should_be_on(
            utc(2024, 6, 21, 23, 0),
            69.65,
            18.96,
            0,
            0
        ));
        assert!(lamps_should_be_on(
            utc(2024, 12, 21, 11, 0),
            69.65,
            18.96,
            0,
            0
        ));
        assert_eq!(
            next_switch(utc(2024, 6, 21, 12, 0), 69.65, 18.96, 0, 0),
            None
        );
        assert_eq!(
            on_seconds_between(
                utc(2024, 12, 20, 0, 0),
                utc(2024, 12, 27, 0, 0),
                69.65,
                18.96,
                0,
                0
            ),
            7 * SECONDS_PER_DAY
        );
    }

    #[test]
    fn beijing_switching_through_a_day() {
        let (lat, lon) = BEIJING;
        // Winter day, +15 min after sunset on, −10 min before sunrise off.
        assert!(lamps_should_be_on(
            utc(2024, 12, 21, 9, 10),
            lat,
            lon,
            15,
            -10
        )); // 17:10 CST
        assert!(!lamps_should_be_on(
            utc(2024, 12, 21, 9, 5),
            lat,
            lon,
            15,
            -10
        )); // 17:05 CST
        assert!(lamps_should_be_on(
            utc(2024, 12, 21, 16, 0),
            lat,
            lon,
            15,
            -10
        )); // midnight CST
        assert!(lamps_should_be_on(
            utc(2024, 12, 21, 23, 15),
            lat,
            lon,
            15,
            -10
        )); // 07:15 CST
        assert!(!lamps_should_be_on(
            utc(2024, 12, 21, 23, 30),
            lat,
            lon,
            15,
            -10
        )); // 07:30 CST
        assert!(!lamps_should_be_on(
            utc(2024, 12, 22, 4, 0),
            lat,
            lon,
            15,
            -10
        )); // noon
        // Every hour of a week: on at local midnight, off at local noon.
        for day in 0..7 {
            let midnight_cst = utc(2024, 12, 21, 16, 0) + day * SECONDS_PER_DAY;
            assert!(lamps_should_be_on(midnight_cst, lat, lon, 0, 0));
            assert!(!lamps_should_be_on(
                midnight_cst + 12 * 3600,
                lat,
                lon,
                0,
                0
            ));
        }
        // A winter night is about 14 h 40 min.
        let night = on_seconds_between(
            utc(2024, 12, 21, 4, 0),
            utc(2024, 12, 22, 4, 0),
            lat,
            lon,
            0,
            0,
        );
        assert!(
            (night - (14 * 3600 + 40 * 60)).abs() < 10 * 60,
            "night {night}"
        );
    }

    #[test]
    fn next_switch_lands_on_sunset() {
        let (lat, lon) = BEIJING;
        let noon = utc(2024, 12, 21, 4, 0);
        let (at, on) = next_switch(noon, lat, lon, 0, 0).expect("switches");
        assert!(on);
        let set = sun_events(day_of(noon), lat, lon).sunset_s.expect("sets");
        assert!((at - set).abs() <= 1);
        let (at2, on2) = next_switch(at, lat, lon, 0, 0).expect("switches");
        assert!(!on2, "{at} -> {at2}");
        assert!(at2 > at + 10 * 3600, "{at} -> {at2}");
    }

    #[test]
    fn invalid_places_are_off() {
        assert!(!lamps_should_be_on(0, f64::NAN, 0.0, 0, 0));
        assert!(!lamps_should_be_on(0, 0.0, f64::INFINITY, 0, 0));
        assert_eq!(next_switch(0, 91.0, 0.0, 0, 0), None);
        assert_eq!(on_seconds_between(0, 1000, f64::NAN, 0.0, 0, 0), 0);
        assert_eq!(
            sun_events(0, f64::NAN, 0.0),
            SunEvents {
                sunrise_s: None,
                sunset_s: None
            }
        );
    }

    proptest! {
        #[test]
        fn flips_exactly_at_next_switch(
            t in 1_500_000_000i64..2_200_000_000,
            lat in -60.0f64..60.0,
            lon in -180.0f64..180.0,
            on_off in -120i16..=120,
            off_off in -120i16..=120,
        ) {
            let now = lamps_should_be_on(t, lat, lon, on_off, off_off);
            let (at, state) = next_switch(t, lat, lon, on_off, off_off).expect("not polar");
            prop_assert!(at > t);
            prop_assert_eq!(state, !now);
            prop_assert_eq!(lamps_should_be_on(at, lat, lon, on_off, off_off), state);
            prop_assert_eq!(lamps_should_be_on(at - 1, lat, lon, on_off, off_off), now);
            // Nothing changes in between (sampled).
            let step = ((at - t) / 16).max(1);
            let mut s = t;
            while s < at {
                prop_assert_eq!(lamps_should_be_on(s, lat, lon, on_off, off_off), now);
                s += step;
            }
        }

        #[test]
        fn a_day_has_one_night(
            t in 1_500_000_000i64..2_200_000_000,
            lat in -55.0f64..55.0,
            lon in -180.0f64..180.0,
        ) {
            let on = on_seconds_between(t, t + SECONDS_PER_DAY, lat, lon, 0, 0);
            // Between about 5 h and 19 h of darkness at these latitudes.
            prop_assert!((5 * 3600..19 * 3600).contains(&on), "on {}", on);
        }

        #[test]
        fn never_panics(t in any::<i64>(), lat in any::<f64>(), lon in any::<f64>(), a in any::<i16>(), b in any::<i16>()) {
            let t = t / 4; // keep clear of i64 overflow in callers' own arithmetic
            let _ = lamps_should_be_on(t, lat, lon, a, b);
            let _ = next_switch(t, lat, lon, a, b);
            let _ = sun_events(t / SECONDS_PER_DAY, lat, lon);
        }
    }
}
