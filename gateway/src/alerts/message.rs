//! A case event as a message for people (the chat robots): a title and markdown, in Chinese by
//! default or English, with the place, the devices, the time limit, what to do, and a link to
//! the case in the console.

use super::config::Language;
use crate::cases::supervision::{SECOND_DISPATCH, SupervisionNote, parse_note};
use crate::cases::{Recipient, SupervisionForm};
use crate::model::{CaseState, CaseType, UnixMs};
use crate::store::CaseEvent;

/// A message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// One line: urgency, case number, type, what happened.
    pub title: String,
    /// The body, markdown.
    pub markdown: String,
}

fn type_name(t: CaseType, lang: Language) -> &'static str {
    match (lang, t) {
        (Language::Zh, CaseType::LampFault) => "路灯故障",
        (Language::Zh, CaseType::LampSafety) => "路灯用电安全",
        (Language::Zh, CaseType::ManholeCover) => "井盖异常",
        (Language::Zh, CaseType::ManholeWater) => "井内水位过高",
        (Language::Zh, CaseType::BinFull) => "垃圾箱满溢",
        (Language::Zh, CaseType::BinOverflow) => "垃圾箱溢出",
        (Language::Zh, CaseType::BinFire) => "垃圾箱起火风险",
        (Language::Zh, CaseType::ToiletOdour) => "公厕异味超标",
        (Language::Zh, CaseType::DeviceOffline) => "设备离线",
        (Language::Zh, CaseType::LowBattery) => "设备电量低",
        (Language::Zh, CaseType::Other) => "其他问题",
        (Language::En, CaseType::LampFault) => "lamp fault",
        (Language::En, CaseType::LampSafety) => "lamp electrical safety",
        (Language::En, CaseType::ManholeCover) => "manhole cover",
        (Language::En, CaseType::ManholeWater) => "water high in a manhole",
        (Language::En, CaseType::BinFull) => "bin full",
        (Language::En, CaseType::BinOverflow) => "bin overflowing",
        (Language::En, CaseType::BinFire) => "bin fire risk",
        (Language::En, CaseType::ToiletOdour) => "toilet odour",
        (Language::En, CaseType::DeviceOffline) => "device offline",
        (Language::En, CaseType::LowBattery) => "low battery",
        (Language::En, CaseType::Other) => "other problem",
    }
}

fn state_name(s: CaseState, lang: Language) -> &'static str {
    match (lang, s) {
        (Language::Zh, CaseState::Registered) => "已立案",
        (Language::Zh, CaseState::Dispatched) => "已派遣",
        (Language::Zh, CaseState::Accepted) => "处置中",
        (Language::Zh, CaseState::Resolved) => "处置完成，待核查",
        (Language::Zh, CaseState::Verified) => "核查通过",
        (Language::Zh, CaseState::Closed) => "已结案",
        (Language::Zh, CaseState::Voided) => "已作废",
        (Language::Zh, CaseState::Returned) => "已退单",
        (Language::En, CaseState::Registered) => "registered",
        (Language::En, CaseState::Dispatched) => "dispatched",
        (Language::En, CaseState::Accepted) => "in progress",
        (Language::En, CaseState::Resolved) => "resolved, awaiting verification",
        (Language::En, CaseState::Verified) => "verified",
        (Language::En, CaseState::Closed) => "closed",
        (Language::En, CaseState::Voided) => "voided",
        (Language::En, CaseState::Returned) => "returned",
    }
}

fn form_name(f: SupervisionForm, lang: Language) -> &'static str {
    match (lang, f) {
        (Language::Zh, SupervisionForm::Phone) => "电话督办",
        (Language::Zh, SupervisionForm::Written) => "书面督办",
        (Language::Zh, SupervisionForm::OnSite) => "现场督办",
        (Language::En, SupervisionForm::Phone) => "by phone",
        (Language::En, SupervisionForm::Written) => "written notice",
        (Language::En, SupervisionForm::OnSite) => "on site",
    }
}

fn recipient_name(r: Recipient, lang: Language) -> &'static str {
    match (lang, r) {
        (Language::Zh, Recipient::Team) => "处置单位",
        (Language::Zh, Recipient::Supervisor) => "主管领导",
        (Language::Zh, Recipient::Centre) => "指挥中心",
        (Language::En, Recipient::Team) => "the team",
        (Language::En, Recipient::Supervisor) => "its supervisor",
        (Language::En, Recipient::Centre) => "the operations centre",
    }
}

/// Chinese numerals for supervision levels (一级督办).
fn level_zh(level: u32) -> String {
    const DIGITS: [&str; 10] = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"];
    usize::try_from(level)
        .ok()
        .and_then(|l| DIGITS.get(l))
        .map_or_else(|| level.to_string(), |d| (*d).to_owned())
}

/// What the event did, for the title: the new state, or what happened without a change.
fn what_happened(event: &CaseEvent, lang: Language) -> String {
    let zh = lang == Language::Zh;
    let e = &event.entry;
    match e.action.as_str() {
        "supervise" => match parse_note(&e.note) {
            Some(n) if zh => format!("{}级督办（{}）", level_zh(n.level), form_name(n.form, lang)),
            Some(n) => format!(
                "level {} supervision ({})",
                n.level,
                form_name(n.form, lang)
            ),
            None if zh => "督办".to_owned(),
            None => "supervision".to_owned(),
        },
        "on_site" if zh => "处置人员已到场".to_owned(),
        "on_site" => "crew on site".to_owned(),
        "dispatch" if e.note.starts_with(SECOND_DISPATCH) => if zh {
            "二次派遣"
        } else {
            "second dispatch"
        }
        .to_owned(),
        _ => state_name(e.to, lang).to_owned(),
    }
}

/// The lines a supervision adds: level, form, who was told.
fn supervision_lines(n: &SupervisionNote, lang: Language) -> [(&'static str, String); 3] {
    let zh = lang == Language::Zh;
    let told: Vec<&str> = n
        .recipients
        .iter()
        .map(|r| recipient_name(*r, lang))
        .collect();
    if zh {
        [
            ("督办级别", format!("{}级", level_zh(n.level))),
            ("督办方式", form_name(n.form, lang).to_owned()),
            ("通知对象", told.join("、")),
        ]
    } else {
        [
            ("Supervision level", n.level.to_string()),
            ("Form", form_name(n.form, lang).to_owned()),
            ("Told", told.join(", ")),
        ]
    }
}

/// What the team is asked to do next, by state.
fn next_step(s: CaseState, lang: Language) -> Option<&'static str> {
    match (lang, s) {
        (Language::Zh, CaseState::Dispatched) => Some("请处置单位尽快受理并赶赴现场。"),
        (Language::Zh, CaseState::Returned) => Some("请指挥中心重新派遣。"),
        (Language::Zh, CaseState::Registered) => Some("请指挥中心派遣处置单位。"),
        (Language::En, CaseState::Dispatched) => Some("The team: accept the case and go on site."),
        (Language::En, CaseState::Returned) => Some("Operations centre: dispatch it again."),
        (Language::En, CaseState::Registered) => Some("Operations centre: dispatch it to a team."),
        _ => None,
    }
}

/// `YYYY-MM-DD HH:MM` of `ms` at `offset_min` from UTC.
pub fn local_time(ms: UnixMs, offset_min: i32) -> String {
    let secs = ms.div_euclid(1000) + i64::from(offset_min) * 60;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// The zone's name for `offset_min` (`UTC+8`).
fn zone(offset_min: i32) -> String {
    let sign = if offset_min < 0 { '-' } else { '+' };
    let (h, m) = (offset_min.abs() / 60, offset_min.abs() % 60);
    if m == 0 {
        format!("UTC{sign}{h}")
    } else {
        format!("UTC{sign}{h}:{m:02}")
    }
}

/// Markdown special characters in data are escaped, so a detail cannot inject links or markup.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '<' | '>' | '|'
        ) {
            out.push('\\');
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// Devices a message names; the rest are counted.
const DEVICES_NAMED: usize = 10;

/// The message for a case event.
pub fn render(
    event: &CaseEvent,
    lang: Language,
    console_url: Option<&str>,
    offset_min: i32,
) -> Message {
    let c = &event.case;
    let zh = lang == Language::Zh;
    let urgent = match (c.urgent, zh) {
        (true, true) => "【紧急】",
        (true, false) => "[URGENT] ",
        (false, _) => "",
    };
    let supervision = (event.entry.action == "supervise")
        .then(|| parse_note(&event.entry.note))
        .flatten();
    let tag = match (
        supervision.is_some() || event.entry.action == "supervise",
        zh,
    ) {
        (true, true) => "【督办】",
        (true, false) => "[SUPERVISION] ",
        (false, _) => "",
    };
    let title = if zh {
        format!(
            "{tag}{urgent}案件 #{} {} {}",
            c.id,
            type_name(c.case_type, lang),
            what_happened(event, lang)
        )
    } else {
        format!(
            "{tag}{urgent}Case #{} {}: {}",
            c.id,
            type_name(c.case_type, lang),
            what_happened(event, lang)
        )
    };
    let none = if zh { "无" } else { "none" };
    let devices = if c.devices.is_empty() {
        none.to_owned()
    } else {
        // A fleet-wide outage's case lists up to 200 devices: a message names a few and counts
        // the rest (robot messages are limited to a few kilobytes).
        let named = c
            .devices
            .iter()
            .take(DEVICES_NAMED)
            .map(|d| escape(d.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        match (c.devices.len().saturating_sub(DEVICES_NAMED), zh) {
            (0, _) => named,
            (_, true) => format!("{named} 等 {} 台", c.devices.len()),
            (more, false) => format!("{named} and {more} more"),
        }
    };
    let team = c.team.as_deref().map_or_else(|| none.to_owned(), escape);
    let due = c
        .due_ms
        .filter(|d| *d < i64::MAX)
        .map_or_else(|| none.to_owned(), |d| local_time(d, offset_min));
    let at = format!(
        "{} ({})",
        local_time(event.entry.at_ms, offset_min),
        zone(offset_min)
    );
    let labels: [&str; 7] = if zh {
        [
            "网格",
            "处置单位",
            "设备",
            "情况",
            "时间",
            "处置时限",
            "操作人",
        ]
    } else {
        ["Grid", "Team", "Devices", "What", "When", "Due", "By"]
    };
    let mut md = format!("### {}\n", escape(&title));
    for (label, value) in [
        (labels[0], escape(&c.grid)),
        (labels[1], team),
        (labels[2], devices),
        (labels[3], escape(&c.detail)),
        (labels[4], at),
        (labels[5], due),
        (labels[6], escape(&event.entry.actor)),
    ] {
        md.push_str(&format!("- **{label}**: {value}\n"));
    }
    if let Some(n) = &supervision {
        for (label, value) in supervision_lines(n, lang) {
            md.push_str(&format!("- **{label}**: {}\n", escape(&value)));
        }
    }
    if !event.entry.note.is_empty() && event.entry.note != c.detail {
        let label = if zh { "备注" } else { "Note" };
        md.push_str(&format!("- **{label}**: {}\n", escape(&event.entry.note)));
    }
    if let Some(step) = next_step(event.entry.to, lang) {
        md.push_str(&format!("\n{step}\n"));
    }
    if let Some(base) = console_url {
        let label = if zh {
            "在控制台查看"
        } else {
            "Open in the console"
        };
        md.push_str(&format!(
            "\n[{label}]({}/cases/{})\n",
            base.trim_end_matches('/'),
            c.id
        ));
    }
    Message {
        title,
        markdown: md,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times() {
        assert_eq!(local_time(0, 0), "1970-01-01 00:00");
        // 2026-12-03 14:10 UTC is 22:10 in China.
        assert_eq!(local_time(1_796_307_000_000, 480), "2026-12-03 22:10");
        assert_eq!(local_time(1_796_307_000_000, -300), "2026-12-03 09:10");
        assert_eq!(local_time(951_782_400_000, 0), "2000-02-29 00:00");
        assert_eq!(zone(480), "UTC+8");
        assert_eq!(zone(-570), "UTC-9:30");
    }

    fn event(action: &str, note: &str) -> CaseEvent {
        use crate::model::CaseSource;
        use crate::store::{CaseHistoryEntry, CaseRecord};
        CaseEvent {
            event_id: 3,
            entry: CaseHistoryEntry {
                action: action.into(),
                at_ms: 1_796_307_000_000,
                actor: "system".into(),
                from: Some(CaseState::Accepted),
                to: if action == "dispatch" {
                    CaseState::Dispatched
                } else {
                    CaseState::Accepted
                },
                note: note.into(),
            },
            case: CaseRecord {
                id: 12,
                case_type: CaseType::ManholeCover,
                source: CaseSource::Sensor,
                subject_key: "device:MH-1".into(),
                condition_key: None,
                grid: "G1".into(),
                team: Some("municipal".into()),
                state: CaseState::Accepted,
                urgent: true,
                devices: Vec::new(),
                detail: "cover open".into(),
                opened_ms: 1_796_307_000_000,
                due_ms: Some(1_796_310_600_000),
                updated_ms: 0,
                closed_ms: None,
                condition_active: true,
                clear_since_ms: None,
                rework_count: 0,
                returned_count: 0,
                supervision_level: 2,
                on_site_due_ms: None,
                on_site_ms: None,
            },
        }
    }

    #[test]
    fn new_actions_in_both_languages() {
        let plan = crate::cases::SupervisionConfig::default();
        let note = crate::cases::supervision::note(2, plan.level(2).unwrap(), "overdue by 2 h");
        let e = event("supervise", &note);
        let zh = render(&e, Language::Zh, None, 480);
        assert_eq!(
            zh.title,
            "【督办】【紧急】案件 #12 井盖异常 二级督办（书面督办）"
        );
        for part in [
            "督办级别**: 二级",
            "书面督办",
            "处置单位、主管领导",
            "overdue by 2 h",
        ] {
            assert!(zh.markdown.contains(part), "{part}: {}", zh.markdown);
        }
        let en = render(&e, Language::En, None, 480);
        assert_eq!(
            en.title,
            "[SUPERVISION] [URGENT] Case #12 manhole cover: level 2 supervision (written notice)"
        );
        assert!(
            en.markdown.contains("the team, its supervisor"),
            "{}",
            en.markdown
        );
        let on_site = event("on_site", "");
        assert!(
            render(&on_site, Language::Zh, None, 480)
                .title
                .ends_with("处置人员已到场")
        );
        assert!(
            render(&on_site, Language::En, None, 480)
                .title
                .ends_with("crew on site")
        );
        let second = event(
            "dispatch",
            "second dispatch (二次派遣) to municipal-b, from municipal: returned 2 times",
        );
        assert!(
            render(&second, Language::Zh, None, 480)
                .title
                .ends_with("二次派遣")
        );
        assert!(
            render(&second, Language::En, None, 480)
                .title
                .ends_with("second dispatch")
        );
    }

    #[test]
    fn markup_in_data_is_escaped() {
        assert_eq!(escape("[x](http://evil)"), "\\[x\\]\\(http://evil\\)");
        assert_eq!(escape("a\nb"), "a b");
    }
}
