//! The throughput chart of the queues page: tasks done and failed (failed or dead) per
//! minute, as an inline SVG drawn on the server (no script, no inline style: its colours
//! come from the stylesheet through classes). It holds numbers and times only, never a
//! value from a task, so the template includes it unescaped.

use std::fmt::Write;

use crate::store::FinishedMinute;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 10.0;

/// The chart of `minutes` (oldest first): one stacked bar a minute, done below, failed
/// and dead above, each with a `<title>` giving the minute (UTC) and its counts.
pub(crate) fn svg(minutes: &[FinishedMinute]) -> String {
    let max = minutes
        .iter()
        .map(|m| m.done + m.failed + m.dead)
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / minutes.len().max(1) as f64;
    let bar = (slot - 2.0).max(1.0);
    let y = |n: u64| n as f64 * plot_h / max as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="throughput-chart" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="throughput-title" xmlns="http://www.w3.org/2000/svg"><title id="throughput-title">Tasks done and failed per minute, last {} minutes</title>"#,
        minutes.len()
    );
    let base = HEIGHT - BOTTOM;
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH}" y2="{base}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{WIDTH}" y2="{TOP}"/><text x="{}" y="{}" text-anchor="end">{max}</text><text x="{}" y="{base}" text-anchor="end">0</text>"#,
        LEFT - 4.0,
        TOP + 4.0,
        LEFT - 4.0,
    );
    for (i, m) in minutes.iter().enumerate() {
        let x = LEFT + i as f64 * slot + 1.0;
        let failed = m.failed + m.dead;
        let (hd, hf) = (y(m.done), y(failed));
        let label = clock(m.minute.0);
        let _ = write!(
            s,
            r#"<g class="minute" data-minute="{}" data-done="{}" data-failed="{failed}"><title>{label} UTC: {} done, {} failed, {} dead</title>"#,
            m.minute.0, m.done, m.done, m.failed, m.dead
        );
        if m.done > 0 {
            let _ = write!(
                s,
                r#"<rect class="done" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{hd:.1}"/>"#,
                base - hd
            );
        }
        if failed > 0 {
            let _ = write!(
                s,
                r#"<rect class="failed" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{hf:.1}"/>"#,
                base - hd - hf
            );
        }
        s.push_str("</g>");
    }
    if let (Some(first), Some(last)) = (minutes.first(), minutes.last()) {
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="{}">{}</text><text x="{WIDTH}" y="{}" text-anchor="end">{} UTC</text>"#,
            HEIGHT - 4.0,
            clock(first.minute.0),
            HEIGHT - 4.0,
            clock(last.minute.0)
        );
    }
    s.push_str("</svg>");
    s
}

/// `HH:MM` of a time in milliseconds since the epoch, UTC.
fn clock(ms: i64) -> String {
    let mins = ms.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", mins / 60, mins % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn one_group_a_minute_scaled_to_the_busiest() {
        let m = |i: i64, done, failed, dead| FinishedMinute {
            minute: Timestamp(i * 60_000),
            done,
            failed,
            dead,
        };
        let s = svg(&[m(0, 0, 0, 0), m(1, 3, 1, 0), m(2, 1, 0, 3)]);
        assert_eq!(s.matches("<g class=\"minute\"").count(), 3);
        assert_eq!(s.matches("class=\"done\"").count(), 2);
        assert_eq!(s.matches("class=\"failed\"").count(), 2);
        assert!(s.contains(r#"data-done="3" data-failed="1""#), "{s}");
        assert!(s.contains("00:01 UTC: 3 done, 1 failed, 0 dead"), "{s}");
        assert!(
            s.contains(">4</text>"),
            "the scale's top is the busiest minute: {s}"
        );
        assert_eq!(clock(-60_000), "23:59");
    }
}
