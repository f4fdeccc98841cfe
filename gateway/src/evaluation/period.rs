//! Periods of the evaluation in the city's time zone: a day, a month, a quarter, or any range
//! of whole days, as `[from_ms, to_ms)`.

use std::fmt;

use serde::Serialize;

use crate::model::UnixMs;

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 1..=12, 1..=31
    (year, month as u32, day as u32)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let next = if month == 12 {
        days_from_civil(year + 1, 1, 1)
    } else {
        days_from_civil(year, month + 1, 1)
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 28..=31
    let n = (next - days_from_civil(year, month, 1)) as u32;
    n
}

/// The kind of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// One day.
    Day,
    /// One calendar month.
    Month,
    /// One calendar quarter.
    Quarter,
    /// Whole days from one date to another (both included).
    Range,
}

/// A period: whole local days `[first_day, end_day)` (days since the epoch, local calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Its kind.
    pub kind: PeriodKind,
    /// First local day.
    pub first_day: i64,
    /// Day after the last.
    pub end_day: i64,
    /// Minutes east of UTC of the city's time zone.
    pub utc_offset_min: i32,
}

/// A period that could not be read: what was wrong, for the API's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodError(pub String);

impl fmt::Display for PeriodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn number<T: std::str::FromStr>(s: &str, what: &str, whole: &str) -> Result<T, PeriodError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PeriodError(format!("{whole:?}: {what} is not a number")));
    }
    s.parse()
        .map_err(|_| PeriodError(format!("{whole:?}: {what} is out of range")))
}

/// `YYYY-MM` → (year, month).
pub fn parse_month(s: &str) -> Result<(i64, u32), PeriodError> {
    let (y, m) = s
        .split_once('-')
        .ok_or_else(|| PeriodError(format!("{s:?}: expected a month as YYYY-MM, e.g. 2026-11")))?;
    let year: i64 = number(y, "the year", s)?;
    let month: u32 = number(m, "the month", s)?;
    if !(1970..=9999).contains(&year) || y.len() != 4 || !(1..=12).contains(&month) {
        return Err(PeriodError(format!(
            "{s:?}: expected a month as YYYY-MM with a year from 1970 and a month 01 to 12"
        )));
    }
    Ok((year, month))
}

/// `YYYY-MM-DD` → local days since the epoch.
pub fn parse_date(s: &str) -> Result<i64, PeriodError> {
    let mut parts = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(PeriodError(format!(
            "{s:?}: expected a date as YYYY-MM-DD, e.g. 2026-11-03"
        )));
    };
    let (year, month) = parse_month(&format!("{y}-{m}"))?;
    let day: u32 = number(d, "the day", s)?;
    if day == 0 || day > days_in_month(year, month) {
        return Err(PeriodError(format!(
            "{s:?}: {year:04}-{month:02} has no day {day}"
        )));
    }
    Ok(days_from_civil(year, month, day))
}

impl Period {
    /// A calendar month.
    pub fn month(year: i64, month: u32, utc_offset_min: i32) -> Self {
        let first_day = days_from_civil(year, month, 1);
        Self {
            kind: PeriodKind::Month,
            first_day,
            end_day: first_day + i64::from(days_in_month(year, month)),
            utc_offset_min,
        }
    }

    /// Read `period` (`day`, `month`, `quarter`) with `at` (`2026-11-03`, `2026-11`,
    /// `2026-Q4`), or `from`/`to` dates (both included).
    pub fn parse(
        period: Option<&str>,
        at: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        utc_offset_min: i32,
    ) -> Result<Self, PeriodError> {
        let day_period = |first_day: i64, end_day: i64, kind| Self {
            kind,
            first_day,
            end_day,
            utc_offset_min,
        };
        match (period, at, from, to) {
            (None, None, Some(from), Some(to)) => {
                let (first, last) = (parse_date(from)?, parse_date(to)?);
                if last < first {
                    return Err(PeriodError(format!(
                        "to ({to}) is before from ({from}); both dates are included"
                    )));
                }
                if last - first >= 366 {
                    return Err(PeriodError(
                        "a from/to period is at most 366 days".to_owned(),
                    ));
                }
                Ok(day_period(first, last + 1, PeriodKind::Range))
            }
            (Some(kind), Some(at), None, None) => match kind {
                "day" => {
                    let d = parse_date(at)?;
                    Ok(day_period(d, d + 1, PeriodKind::Day))
                }
                "month" => {
                    let (y, m) = parse_month(at)?;
                    Ok(Self::month(y, m, utc_offset_min))
                }
                "quarter" => {
                    let bad = || {
                        PeriodError(format!(
                            "{at:?}: expected a quarter as YYYY-Qn, e.g. 2026-Q4"
                        ))
                    };
                    let (y, q) = at.split_once("-Q").ok_or_else(bad)?;
                    let q: u32 = number(q, "the quarter", at)?;
                    if !(1..=4).contains(&q) {
                        return Err(bad());
                    }
                    let (year, _) = parse_month(&format!("{y}-01"))?;
                    let first = days_from_civil(year, (q - 1) * 3 + 1, 1);
                    let end = if q == 4 {
                        days_from_civil(year + 1, 1, 1)
                    } else {
                        days_from_civil(year, q * 3 + 1, 1)
                    };
                    Ok(day_period(first, end, PeriodKind::Quarter))
                }
                other => Err(PeriodError(format!(
                    "period = {other:?}: expected day, month or quarter (or from and to dates)"
                ))),
            },
            _ => Err(PeriodError(
                "say which period: period=month&at=2026-11 (day: 2026-11-03, quarter: 2026-Q4), or from=2026-11-01&to=2026-11-15".to_owned(),
            )),
        }
    }

    /// Start, Unix ms.
    pub fn from_ms(&self) -> UnixMs {
        self.first_day * DAY_MS - i64::from(self.utc_offset_min) * 60_000
    }

    /// End (excluded), Unix ms.
    pub fn to_ms(&self) -> UnixMs {
        self.end_day * DAY_MS - i64::from(self.utc_offset_min) * 60_000
    }

    /// The period before this one of the same kind (the month before, the quarter before, the
    /// same number of days before).
    pub fn previous(&self) -> Self {
        let (first_day, end_day) = match self.kind {
            PeriodKind::Month => {
                let (y, m, _) = civil_from_days(self.first_day);
                let p = if m == 1 {
                    Self::month(y - 1, 12, self.utc_offset_min)
                } else {
                    Self::month(y, m - 1, self.utc_offset_min)
                };
                (p.first_day, p.end_day)
            }
            PeriodKind::Quarter => {
                let (y, m, _) = civil_from_days(self.first_day);
                let (py, pm) = if m == 1 { (y - 1, 10) } else { (y, m - 3) };
                (days_from_civil(py, pm, 1), self.first_day)
            }
            PeriodKind::Day | PeriodKind::Range => {
                let len = self.end_day - self.first_day;
                (self.first_day - len, self.first_day)
            }
        };
        Self {
            first_day,
            end_day,
            ..*self
        }
    }

    /// A label: `2026-11`, `2026-Q4`, `2026-11-03`, `2026-11-01..2026-11-15`.
    pub fn label(&self) -> String {
        let (y, m, d) = civil_from_days(self.first_day);
        match self.kind {
            PeriodKind::Day => format!("{y:04}-{m:02}-{d:02}"),
            PeriodKind::Month => format!("{y:04}-{m:02}"),
            PeriodKind::Quarter => format!("{y:04}-Q{}", (m - 1) / 3 + 1),
            PeriodKind::Range => {
                let (y2, m2, d2) = civil_from_days(self.end_day - 1);
                format!("{y:04}-{m:02}-{d:02}..{y2:04}-{m2:02}-{d2:02}")
            }
        }
    }

    /// First and last day as dates (`2026-11-01`, `2026-11-30`).
    pub fn dates(&self) -> (String, String) {
        let (y, m, d) = civil_from_days(self.first_day);
        let (y2, m2, d2) = civil_from_days(self.end_day - 1);
        (
            format!("{y:04}-{m:02}-{d:02}"),
            format!("{y2:04}-{m2:02}-{d2:02}"),
        )
    }
}

/// The local month (year, month) of a time.
pub fn local_month(ms: UnixMs, utc_offset_min: i32) -> (i64, u32, u32, i64) {
    let local = ms + i64::from(utc_offset_min) * 60_000;
    let (y, m, d) = civil_from_days(local.div_euclid(DAY_MS));
    (y, m, d, local.rem_euclid(DAY_MS) / 3_600_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1, 0, 59, 60, 365, 11_016, 20_758, 20_759, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(2026, 11, 1), 20_758);
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2026, 2), 28);
    }

    #[test]
    fn periods_in_the_city_time_zone() {
        let p = Period::parse(Some("month"), Some("2026-11"), None, None, 480).unwrap();
        // 2026-11-01 00:00 in UTC+8 is 2026-10-31 16:00 UTC.
        assert_eq!(p.from_ms(), 20_758 * DAY_MS - 8 * 3_600_000);
        assert_eq!(p.end_day - p.first_day, 30);
        assert_eq!(p.label(), "2026-11");
        assert_eq!(p.previous().label(), "2026-10");
        assert_eq!(Period::month(2026, 1, 480).previous().label(), "2025-12");
        let q = Period::parse(Some("quarter"), Some("2026-Q1"), None, None, 0).unwrap();
        assert_eq!(
            (q.label(), q.previous().label()),
            ("2026-Q1".into(), "2025-Q4".into())
        );
        assert_eq!(q.end_day - q.first_day, 90);
        let r = Period::parse(None, None, Some("2026-11-01"), Some("2026-11-15"), 480).unwrap();
        assert_eq!(r.end_day - r.first_day, 15);
        assert_eq!(r.previous().label(), "2026-10-17..2026-10-31");
        let d = Period::parse(Some("day"), Some("2026-02-28"), None, None, 480).unwrap();
        assert_eq!(d.label(), "2026-02-28");
        for (period, at) in [
            ("month", "2026-13"),
            ("month", "2026-1x"),
            ("day", "2026-02-29"),
            ("quarter", "2026-Q5"),
            ("week", "2026-11"),
        ] {
            let e = Period::parse(Some(period), Some(at), None, None, 480).unwrap_err();
            assert!(e.0.contains(at) || e.0.contains(period), "{e}");
        }
        assert!(Period::parse(None, None, Some("2026-11-15"), Some("2026-11-01"), 0).is_err());
        assert!(Period::parse(None, Some("2026-11"), None, None, 0).is_err());
    }

    #[test]
    fn local_month_and_hour() {
        // 2026-11-30 16:00 UTC is 2026-12-01 00:00 in UTC+8.
        let ms = (20_758 + 29) * DAY_MS + 16 * 3_600_000;
        assert_eq!(local_month(ms, 480), (2026, 12, 1, 0));
        assert_eq!(local_month(ms, 0), (2026, 11, 30, 16));
    }
}
