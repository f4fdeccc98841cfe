//! Ranking (排名) with the red and black lists (红榜/黑榜), on a composite score of the on-time,
//! return and rework rates, and the teams or grids ranked last several periods running.

use std::collections::BTreeMap;

use serde::Serialize;

use super::EvaluationConfig;
use super::figures::Figures;

/// The score's weights, as applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Weights {
    /// On-time rate.
    pub on_time: f64,
    /// 1 − return rate.
    pub returns: f64,
    /// 1 − rework rate.
    pub rework: f64,
}

impl Weights {
    /// From the configuration.
    pub fn of(config: &EvaluationConfig) -> Self {
        Self {
            on_time: config.weight_on_time,
            returns: config.weight_return,
            rework: config.weight_rework,
        }
    }

    /// The score, 0 to 100: 100 × (w₁·on-time + w₂·(1 − return) + w₃·(1 − rework)) ÷ (w₁ +
    /// w₂ + w₃); a rate without cases to measure counts as 0 returns and 0 rework.
    pub fn score(&self, f: &Figures) -> Option<f64> {
        let on_time = f.on_time_rate?;
        let sum = self.on_time + self.returns + self.rework;
        if sum <= 0.0 {
            return None;
        }
        let returns = 1.0 - f.return_rate.unwrap_or(0.0).min(1.0);
        let rework = 1.0 - f.rework_rate.unwrap_or(0.0);
        Some(100.0 * (self.on_time * on_time + self.returns * returns + self.rework * rework) / sum)
    }
}

/// One ranked team or grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// 1 = best.
    pub rank: u32,
    /// Team or grid.
    pub name: String,
    /// Score, 0 to 100.
    pub score: f64,
    /// Handled cases (closed after a team resolved them).
    pub handled: u64,
    /// On-time rate.
    pub on_time_rate: Option<f64>,
    /// Return rate.
    pub return_rate: Option<f64>,
    /// Rework rate.
    pub rework_rate: Option<f64>,
    /// Periods running, this one included, ranked last.
    pub last_place_streak: u32,
}

/// The ranking of teams or of grids.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ranking {
    /// Ranked, best first.
    pub ranked: Vec<Ranked>,
    /// The red list (红榜): the top `red_n`.
    pub red: Vec<String>,
    /// The black list (黑榜): the bottom `black_n`, worst first, none of them on the red list.
    pub black: Vec<String>,
    /// Ranked last (末位) `last_place_periods` periods running, this one included.
    pub flagged: Vec<String>,
    /// Too few handled cases to rank (`min_handled`).
    pub unranked: Vec<String>,
}

/// Rank `figures` (by team or grid): score descending, then more handled cases, then name.
pub fn rank(figures: &BTreeMap<String, Figures>, config: &EvaluationConfig) -> Ranking {
    let weights = Weights::of(config);
    let mut ranked = Vec::new();
    let mut unranked = Vec::new();
    for (name, f) in figures {
        match weights.score(f) {
            Some(score) if f.handled >= u64::from(config.min_handled.max(1)) => {
                ranked.push(Ranked {
                    rank: 0,
                    name: name.clone(),
                    score,
                    handled: f.handled,
                    on_time_rate: f.on_time_rate,
                    return_rate: f.return_rate,
                    rework_rate: f.rework_rate,
                    last_place_streak: 0,
                });
            }
            _ => unranked.push(name.clone()),
        }
    }
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.handled.cmp(&a.handled))
            .then(a.name.cmp(&b.name))
    });
    for (i, r) in ranked.iter_mut().enumerate() {
        r.rank = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }
    let red: Vec<String> = ranked
        .iter()
        .take(config.red_n as usize)
        .map(|r| r.name.clone())
        .collect();
    let black = ranked
        .iter()
        .rev()
        .filter(|r| !red.contains(&r.name))
        .take(config.black_n as usize)
        .map(|r| r.name.clone())
        .collect();
    Ranking {
        ranked,
        red,
        black,
        flagged: Vec::new(),
        unranked,
    }
}

/// The name ranked last.
pub fn last_place(r: &Ranking) -> Option<&str> {
    r.ranked.last().map(|x| x.name.as_str())
}

/// Count, for the one ranked last now, the periods running it was last (`earlier`: who was
/// last in the periods before, most recent first), and flag it at `last_place_periods`.
pub fn mark_streaks(now: &mut Ranking, earlier: &[Option<String>], config: &EvaluationConfig) {
    let Some(last) = last_place(now).map(str::to_owned) else {
        return;
    };
    let streak = 1 + earlier
        .iter()
        .take_while(|l| l.as_deref() == Some(last.as_str()))
        .count();
    let streak = u32::try_from(streak).unwrap_or(u32::MAX);
    if let Some(r) = now.ranked.iter_mut().find(|r| r.name == last) {
        r.last_place_streak = streak;
    }
    if streak >= config.last_place_periods {
        now.flagged.push(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(handled: u64, on_time: u64, dispatches: u64, returned: u64, reworked: u64) -> Figures {
        #[allow(clippy::cast_precision_loss)]
        let r = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
        Figures {
            handled,
            on_time,
            on_time_rate: r(on_time, handled),
            dispatches,
            returned,
            return_rate: r(returned, dispatches),
            reworked,
            rework_rate: r(reworked, handled),
            ..Figures::default()
        }
    }

    #[test]
    fn score_weights_and_lists() {
        let config = EvaluationConfig {
            red_n: 1,
            black_n: 1,
            ..EvaluationConfig::default()
        };
        // 100 × (0.6 × 0.5 + 0.2 × (1 − 0.25) + 0.2 × (1 − 0.5)) = 55.
        let s = Weights::of(&config).score(&fig(4, 2, 4, 1, 2)).unwrap();
        assert!((s - 55.0).abs() < 1e-9, "{s}");
        let figures = BTreeMap::from([
            ("a".to_owned(), fig(4, 2, 4, 1, 2)),
            ("b".to_owned(), fig(2, 2, 2, 0, 0)),
            ("c".to_owned(), fig(1, 0, 1, 1, 1)),
            ("d".to_owned(), fig(0, 0, 3, 0, 0)),
        ]);
        let r = rank(&figures, &config);
        let names: Vec<_> = r.ranked.iter().map(|x| (x.rank, x.name.as_str())).collect();
        assert_eq!(names, [(1, "b"), (2, "a"), (3, "c")]);
        assert_eq!(
            (r.red, r.black, r.unranked),
            (
                vec!["b".to_owned()],
                vec!["c".to_owned()],
                vec!["d".to_owned()]
            )
        );
    }
}
