//! The evaluation as CSV (UTF-8 with a byte-order mark, so Excel reads the Chinese headers) and
//! the monthly bulletin (通报) as one self-contained, printable HTML document in Chinese.

use std::fmt::Write as _;

use super::figures::{Durations, Figures};
use super::lighting::Compliance;
use super::ranking::Ranking;
use super::{Report, Row};

/// Rows of a CSV export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Per team.
    Team,
    /// Per grid.
    Grid,
    /// Per case type.
    Type,
}

impl By {
    /// `team`, `grid` or `type`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "team" => Some(Self::Team),
            "grid" => Some(Self::Grid),
            "type" => Some(Self::Type),
            _ => None,
        }
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Grid => "grid",
            Self::Type => "type",
        }
    }
}

/// The byte-order mark that starts every CSV.
pub const BOM: &str = "\u{feff}";

fn fraction(r: Option<f64>) -> String {
    r.map(|v| format!("{v:.4}")).unwrap_or_default()
}

#[allow(clippy::cast_precision_loss)] // durations in ms
fn minutes(ms: Option<i64>) -> String {
    ms.map(|v| format!("{:.1}", v as f64 / 60_000.0))
        .unwrap_or_default()
}

const FIGURE_HEADERS: [&str; 24] = [
    "立案 registered",
    "派遣 dispatched",
    "派遣次数 dispatches",
    "退单 returned",
    "退单率 return_rate",
    "结案 closed",
    "处置 handled",
    "按期处置 on_time",
    "按期处置率 on_time_rate",
    "返工 reworked",
    "返工率 rework_rate",
    "传感器核查 verified_sensor",
    "人工核查 verified_person",
    "自动恢复 self_recovered",
    "作废 voided",
    "期末超期 overdue",
    "平均接单分钟 accept_mean_min",
    "接单P90分钟 accept_p90_min",
    "平均到场分钟 on_site_mean_min",
    "到场P90分钟 on_site_p90_min",
    "平均处置分钟 resolve_mean_min",
    "处置P90分钟 resolve_p90_min",
    "平均结案分钟 close_mean_min",
    "结案P90分钟 close_p90_min",
];

fn figure_cells(f: &Figures) -> Vec<String> {
    let d = |x: &Durations| [minutes(x.mean_ms), minutes(x.p90_ms)];
    let mut v = vec![
        f.registered.to_string(),
        f.dispatched.to_string(),
        f.dispatches.to_string(),
        f.returned.to_string(),
        fraction(f.return_rate),
        f.closed.to_string(),
        f.handled.to_string(),
        f.on_time.to_string(),
        fraction(f.on_time_rate),
        f.reworked.to_string(),
        fraction(f.rework_rate),
        f.verified_sensor.to_string(),
        f.verified_person.to_string(),
        f.self_recovered.to_string(),
        f.voided.to_string(),
        f.overdue.to_string(),
    ];
    v.extend(d(&f.time_to_accept));
    v.extend(d(&f.time_to_on_site));
    v.extend(d(&f.time_to_resolve));
    v.extend(d(&f.time_to_close));
    v
}

/// The report's rows by team, grid or case type as CSV, with a byte-order mark. Teams and
/// grids carry their score and rank.
pub fn csv(report: &Report, by: By) -> Result<String, csv::Error> {
    let (first, rows, ranking) = match by {
        By::Team => ("班组 team", &report.teams, Some(&report.ranking.teams)),
        By::Grid => ("网格 grid", &report.grids, Some(&report.ranking.grids)),
        By::Type => ("案件类型 case_type", &report.types, None),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["期间 period", first];
    header.extend(FIGURE_HEADERS);
    header.extend(["督办 escalations", "得分 score", "排名 rank"]);
    w.write_record(&header)?;
    for row in rows {
        let mut cells = vec![report.period.label.clone(), row.key.clone()];
        cells.extend(figure_cells(&row.figures));
        cells.push(row.figures.escalations.values().sum::<u64>().to_string());
        let ranked = ranking.and_then(|r| r.ranked.iter().find(|x| x.name == row.key));
        cells.push(
            ranked
                .map(|r| format!("{:.2}", r.score))
                .unwrap_or_default(),
        );
        cells.push(ranked.map(|r| r.rank.to_string()).unwrap_or_default());
        w.write_record(&cells)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(format!("{BOM}{}", String::from_utf8_lossy(&bytes)))
}

/// Text made safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The time zone's name: `UTC+8`, `UTC-3:30`.
fn zone(offset_min: i32) -> String {
    let sign = if offset_min < 0 { '-' } else { '+' };
    let (h, m) = (offset_min.abs() / 60, offset_min.abs() % 60);
    if m == 0 {
        format!("UTC{sign}{h}")
    } else {
        format!("UTC{sign}{h}:{m:02}")
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

fn mins(ms: Option<i64>) -> String {
    let m = minutes(ms);
    if m.is_empty() { "—".to_owned() } else { m }
}

/// Horizontal bars of rates (0 to 1), one per name, as inline SVG.
fn bar_chart(title: &str, bars: &[(String, Option<f64>)]) -> String {
    const ROW: usize = 22;
    const LABEL: usize = 170;
    const WIDTH: usize = 600;
    let height = ROW * bars.len() + 30;
    let mut s = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    let span = WIDTH - LABEL - 70;
    for (i, (name, r)) in bars.iter().enumerate() {
        let y = i * ROW + 4;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let w = (r.unwrap_or(0.0).clamp(0.0, 1.0) * span as f64).round() as usize;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">{}</text><rect x=\"{LABEL}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"#3a6ea5\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            LABEL - 6,
            y + 14,
            escape(name),
            ROW - 6,
            LABEL + w + 6,
            y + 14,
            pct(*r),
        );
    }
    s.push_str("</svg></figure>\n");
    s
}

fn figures_table(head: &str, rows: &[Row], ranking: Option<&Ranking>) -> String {
    let mut s = format!(
        "<table><thead><tr><th>{}</th><th>立案</th><th>派遣</th><th>结案</th><th>按期处置率</th><th>退单率</th><th>返工率</th><th>传感器/人工核查</th><th>超期</th><th>平均接单(分)</th><th>平均处置(分)</th><th>P90处置(分)</th><th>得分</th></tr></thead><tbody>\n",
        escape(head)
    );
    for r in rows {
        let f = &r.figures;
        let score = ranking
            .and_then(|k| k.ranked.iter().find(|x| x.name == r.key))
            .map_or_else(|| "—".to_owned(), |x| format!("{:.1}", x.score));
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.key),
            f.registered,
            f.dispatched,
            f.closed,
            pct(f.on_time_rate),
            pct(f.return_rate),
            pct(f.rework_rate),
            f.verified_sensor,
            f.verified_person,
            f.overdue,
            mins(f.time_to_accept.mean_ms),
            mins(f.time_to_resolve.mean_ms),
            mins(f.time_to_resolve.p90_ms),
            score,
        );
    }
    s.push_str("</tbody></table>\n");
    s
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "无".to_owned()
    } else {
        names
            .iter()
            .map(|n| escape(n))
            .collect::<Vec<_>>()
            .join("、")
    }
}

fn lists(what: &str, r: &Ranking) -> String {
    format!(
        "<div class=\"lists\"><p class=\"red\"><b>{what}红榜：</b>{}</p><p class=\"black\"><b>{what}黑榜：</b>{}</p><p><b>连续排名末位：</b>{}</p></div>\n",
        list(&r.red),
        list(&r.black),
        list(&r.flagged)
    )
}

fn compliance_table(head: &str, rows: &[Compliance]) -> String {
    let mut s = format!(
        "<table><thead><tr><th>{}</th><th>网格</th><th>目标</th><th>夜数</th><th>达标夜数</th><th>达标率</th><th>期间亮灯率</th><th>最低一夜</th></tr></thead><tbody>\n",
        escape(head)
    );
    for c in rows {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            escape(&c.grid),
            pct(Some(c.target)),
            c.nights,
            c.nights_met,
            pct(c.share),
            pct(c.rate),
            pct(c.worst_night_rate),
        );
    }
    s.push_str("</tbody></table>\n");
    s
}

const STYLE: &str = "body{font-family:\"Noto Sans CJK SC\",\"Source Han Sans SC\",\"Microsoft YaHei\",sans-serif;margin:2em auto;max-width:60em;color:#222;line-height:1.5}
h1{text-align:center;font-size:1.6em;margin-bottom:.2em}
.period{text-align:center;color:#555}
h2{font-size:1.2em;border-bottom:2px solid #3a6ea5;padding-bottom:.2em;margin-top:1.5em}
table{border-collapse:collapse;width:100%;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #999;padding:.2em .4em;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#e8eef6}
.red b{color:#b00}
.black b{color:#000}
figure{margin:.5em 0}
figcaption{font-size:.9em;color:#444}
@media print{@page{size:A4;margin:15mm}body{margin:0;max-width:none;font-size:10pt}h2{page-break-after:avoid}table,figure,.lists{page-break-inside:avoid}thead{display:table-header-group}}";

/// The bulletin (通报) of a report as a self-contained HTML document in Chinese.
pub fn bulletin(report: &Report) -> String {
    let c = &report.city;
    let p = &report.period;
    let title = format!("{} 城市管理考核通报", p.label);
    let mut s = String::with_capacity(32 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"period\">考核期间：{} 至 {}（{}）{}</p>\n",
        escape(&title),
        escape(&title),
        escape(&p.from),
        escape(&p.to),
        zone(p.utc_offset_min),
        report
            .grid
            .as_ref()
            .map(|g| format!("，网格 {}", escape(g)))
            .unwrap_or_default(),
    );
    let _ = write!(
        s,
        "<h2>一、总体情况</h2>\n<p class=\"summary\">本期共立案 {} 件，派遣 {} 件，结案 {} 件（其中处置 {} 件，自动恢复 {} 件），作废 {} 件。按期处置率 {}，退单率 {}，返工率 {}；传感器核查 {} 次，人工核查 {} 次；平均处置用时 {} 分钟。期末超期未处置 {} 件。红榜班组：{}；黑榜班组：{}。</p>\n",
        c.registered,
        c.dispatched,
        c.closed,
        c.handled,
        c.self_recovered,
        c.voided,
        pct(c.on_time_rate),
        pct(c.return_rate),
        pct(c.rework_rate),
        c.verified_sensor,
        c.verified_person,
        mins(c.time_to_resolve.mean_ms),
        c.overdue,
        list(&report.ranking.teams.red),
        list(&report.ranking.teams.black),
    );
    s.push_str("<h2>二、班组考核</h2>\n");
    s.push_str(&figures_table(
        "班组",
        &report.teams,
        Some(&report.ranking.teams),
    ));
    let bars: Vec<(String, Option<f64>)> = report
        .teams
        .iter()
        .map(|r| (r.key.clone(), r.figures.on_time_rate))
        .collect();
    s.push_str(&bar_chart("各班组按期处置率", &bars));
    s.push_str(&lists("班组", &report.ranking.teams));
    s.push_str("<h2>三、网格考核</h2>\n");
    s.push_str(&figures_table(
        "网格",
        &report.grids,
        Some(&report.ranking.grids),
    ));
    let bars: Vec<(String, Option<f64>)> = report
        .grids
        .iter()
        .map(|r| (r.key.clone(), r.figures.on_time_rate))
        .collect();
    s.push_str(&bar_chart("各网格按期处置率", &bars));
    s.push_str(&lists("网格", &report.ranking.grids));
    s.push_str("<h2>四、案件类型</h2>\n");
    s.push_str(&figures_table("案件类型", &report.types, None));
    s.push_str("<h2>五、亮灯率达标情况</h2>\n");
    s.push_str(&compliance_table("网格", &report.lighting.grids));
    let bars: Vec<(String, Option<f64>)> = report
        .lighting
        .grids
        .iter()
        .map(|g| (g.name.clone(), g.share))
        .collect();
    s.push_str(&bar_chart("各网格亮灯达标夜数占比", &bars));
    s.push_str("<p><b>亮灯率最差路段：</b></p>\n");
    s.push_str(&compliance_table("路段", &report.lighting.worst));
    let _ = writeln!(
        s,
        "<h2>六、期末超期案件（{} 件）</h2>",
        report.overdue.len()
    );
    s.push_str("<table><thead><tr><th>案件号</th><th>类型</th><th>网格</th><th>班组</th><th>状态</th><th>立案时间</th><th>处置时限</th><th>描述</th></tr></thead><tbody>\n");
    for o in &report.overdue {
        let state = serde_json::to_value(o.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            o.id,
            escape(&o.case_type),
            escape(&o.grid),
            escape(o.team.as_deref().unwrap_or("—")),
            escape(&state),
            escape(&crate::alerts::message::local_time(
                o.opened_ms,
                p.utc_offset_min
            )),
            escape(&crate::alerts::message::local_time(
                o.due_ms,
                p.utc_offset_min
            )),
            escape(&o.detail),
        );
    }
    s.push_str("</tbody></table>\n");
    let w = &report.ranking.weights;
    let _ = write!(
        s,
        "<h2>附：计分方法</h2>\n<p>得分 = 100 × ({} × 按期处置率 + {} × (1 − 退单率) + {} × (1 − 返工率)) ÷ {}。连续 {} 期排名末位的予以标注。</p>\n</body>\n</html>\n",
        w.on_time,
        w.returns,
        w.rework,
        w.on_time + w.returns + w.rework,
        report.ranking.last_place_periods,
    );
    s
}
