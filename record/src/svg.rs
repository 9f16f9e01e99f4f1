//! The timeline as a self-contained SVG picture, for a report or a browser: one row per
//! tool/organ (per stream when the case has several), intervals as bars, gaps shaded across
//! the rows of their stream, a time axis in offsets from the case start, and a speed strip
//! under each tracked tool.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::query::Timeline;
use crate::time;

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step (ns) giving at most about ten ticks over `span_ns`.
fn tick_step(span_ns: i64) -> i64 {
    const S: i64 = 1_000_000_000;
    let steps = [
        S / 10,
        S / 4,
        S / 2,
        S,
        2 * S,
        5 * S,
        10 * S,
        15 * S,
        30 * S,
        60 * S,
        120 * S,
        300 * S,
        600 * S,
        900 * S,
        1_800 * S,
        3_600 * S,
    ];
    steps
        .into_iter()
        .find(|s| span_ns / s <= 10)
        .unwrap_or(3_600 * S)
}

/// The timeline as a self-contained SVG: one row per tool/organ (per stream when the case
/// has several), intervals as bars, gaps shaded across the rows of their stream, a time axis
/// in offsets from the case start. A tool row with tracks has a speed strip under its bars:
/// one line per track, its sampled speed over time, on one scale for the whole case (zero to
/// the case's peak speed, given in the legend), with the row's own peak written by its name.
/// Every bar, gap and speed line has a tooltip with its exact times and figures.
pub fn svg(timeline: &Timeline) -> String {
    const WIDTH: f64 = 1200.0;
    const LEFT: f64 = 230.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 70.0;
    const ROW: f64 = 26.0;
    const BAR: f64 = 16.0;
    // Extra height of a row with a speed strip, and the strip's own height inside it.
    const STRIP: f64 = 26.0;
    const STRIP_PLOT: f64 = 20.0;
    const SPEED: &str = "#2c7a7b";
    let stream_ids: std::collections::BTreeSet<&str> = timeline
        .streams
        .iter()
        .map(|s| s.stream_id.as_str())
        .chain(timeline.events.iter().map(|e| e.stream_id.as_str()))
        .chain(timeline.tracks.iter().map(|t| t.stream_id.as_str()))
        .collect();
    let multi = stream_ids.len() > 1;
    // Rows: tools first, then organs, then the rest; within a category by the label's first
    // appearance, the streams of one label next to each other. A track whose tool has no
    // interval (yet) still gets its row.
    let appearances = timeline
        .events
        .iter()
        .map(|e| (&e.stream_id, e.category.as_str(), &e.label, e.start_ns))
        .chain(
            timeline
                .tracks
                .iter()
                .map(|t| (&t.stream_id, "tool", &t.label, t.start_ns)),
        );
    let mut first_seen: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    let mut row_set: std::collections::BTreeSet<(String, String, String)> =
        std::collections::BTreeSet::new();
    for (stream, category, label, start_ns) in appearances {
        let t = first_seen
            .entry((category, label.as_str()))
            .or_insert(start_ns);
        *t = (*t).min(start_ns);
        row_set.insert((stream.clone(), category.to_owned(), label.clone()));
    }
    let mut rows: Vec<(String, String, String)> = row_set.into_iter().collect();
    rows.sort_by_key(|(stream, category, label)| {
        (
            category_rank(category),
            first_seen
                .get(&(category.as_str(), label.as_str()))
                .copied()
                .unwrap_or(0),
            label.clone(),
            stream.clone(),
        )
    });
    let row_of = |stream: &str, category: &str, label: &str| {
        rows.iter()
            .position(|(s, c, l)| s == stream && c == category && l == label)
    };
    // Per row, the peak speed of its tracks (None: no tracks, so no strip); then each row's
    // top and height.
    let mut row_peak: Vec<Option<f64>> = vec![None; rows.len()];
    for t in &timeline.tracks {
        if let Some(i) = row_of(&t.stream_id, "tool", &t.label) {
            let peak = t
                .points
                .iter()
                .map(|p| p.speed)
                .fold(t.peak_speed, f64::max);
            row_peak[i] = Some(row_peak[i].map_or(peak, |p: f64| p.max(peak)));
        }
    }
    let mut row_top = Vec::with_capacity(rows.len());
    let mut bottom = TOP;
    for peak in &row_peak {
        row_top.push(bottom);
        bottom += if peak.is_some() { ROW + STRIP } else { ROW };
    }
    let row_height = |i: usize| {
        if row_peak[i].is_some() {
            ROW + STRIP
        } else {
            ROW
        }
    };
    if rows.is_empty() {
        bottom += ROW;
    }
    // One scale for every strip, so rows compare; a case whose tools never moved draws flat.
    let case_peak = row_peak.iter().flatten().copied().fold(0.0, f64::max);
    let scale = if case_peak > 0.0 { case_peak } else { 1.0 };
    let span = (timeline.last_frame_ns - timeline.started_ns).max(1_000_000_000);
    let plot = WIDTH - LEFT - RIGHT;
    let x =
        |ns: i64| LEFT + plot * ((ns - timeline.started_ns) as f64 / span as f64).clamp(0.0, 1.0);
    let height = bottom + 60.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="24" font-size="16" font-weight="bold" fill="#222">Case {} — {} UTC — {}</text>"##,
        xml(&timeline.case_id),
        xml(&time::utc(timeline.started_ns)),
        time::offset(timeline.last_frame_ns - timeline.started_ns)
    );
    // Legend.
    let legend = [
        ("#2b6cb0", "tool"),
        ("#c05621", "organ"),
        ("#718096", "other"),
        ("#a0a0a0", "gap (no usable frames)"),
    ];
    let mut lx = LEFT;
    for (color, name) in legend {
        let opacity = if name.starts_with("gap") { "0.45" } else { "1" };
        let _ = writeln!(
            out,
            r##"<rect x="{lx}" y="34" width="12" height="12" fill="{color}" fill-opacity="{opacity}"/><text x="{}" y="44" fill="#333">{name}</text>"##,
            lx + 16.0
        );
        lx += 40.0 + 7.0 * name.len() as f64;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{lx}" y="34" width="12" height="12" fill="none" stroke="#333" stroke-dasharray="3,2"/><text x="{}" y="44" fill="#333">still open</text>"##,
        lx + 16.0
    );
    lx += 40.0 + 7.0 * "still open".len() as f64;
    if row_peak.iter().any(Option::is_some) {
        let _ = writeln!(
            out,
            r##"<polyline points="{lx},45 {},37 {},42 {},35" fill="none" stroke="{SPEED}" stroke-width="1.5"/><text x="{}" y="44" fill="#333">tool speed, strip height = {case_peak:.3} frame units/s</text>"##,
            lx + 4.0,
            lx + 8.0,
            lx + 12.0,
            lx + 16.0
        );
    }
    // Row bands and labels.
    for (i, (stream, _category, label)) in rows.iter().enumerate() {
        let y = row_top[i];
        if i % 2 == 1 {
            let _ = writeln!(
                out,
                r##"<rect x="{LEFT}" y="{y}" width="{plot}" height="{}" fill="#f4f6f8"/>"##,
                row_height(i)
            );
        }
        let name = if multi {
            format!("{label} · {stream}")
        } else {
            label.clone()
        };
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#222">{}</text>"##,
            LEFT - 8.0,
            y + ROW / 2.0 + 4.0,
            xml(&name)
        );
        if let Some(peak) = row_peak[i] {
            let base = y + ROW + STRIP_PLOT;
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="end" font-size="10" fill="{SPEED}">speed, peak {peak:.3}/s</text><line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="#cbd5e0" stroke-width="1"/>"##,
                LEFT - 8.0,
                base - 4.0,
                LEFT + plot
            );
        }
    }
    // Axis.
    let step = tick_step(span);
    let mut t = 0;
    while t <= span {
        let tx = x(timeline.started_ns + t);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{}" stroke="#d0d4d8" stroke-width="1"/><text x="{tx:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            bottom + 4.0,
            bottom + 18.0,
            axis_label(t, step)
        );
        t += step;
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">time from case start (first frame)</text>"##,
        LEFT + plot / 2.0,
        bottom + 38.0
    );
    // Gaps, shaded on every row of their stream (all rows when there is one stream).
    for g in &timeline.gaps {
        let (x0, x1) = (x(g.start_ns), x(g.end_ns));
        let tooltip = xml(&format!(
            "{} gap on {}: {} to {} ({}), {}",
            g.kind,
            g.stream_id,
            time::offset(g.start_offset_ns),
            time::offset(g.end_offset_ns),
            time::utc(g.start_ns),
            g.reason
        ));
        for (i, _) in rows
            .iter()
            .enumerate()
            .filter(|(_, (s, _, _))| !multi || *s == g.stream_id)
        {
            let _ = writeln!(
                out,
                r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="{}" fill="#a0a0a0" fill-opacity="0.45"><title>{tooltip}</title></rect>"##,
                row_top[i],
                (x1 - x0).max(2.0),
                row_height(i)
            );
        }
    }
    // Bars.
    for e in &timeline.events {
        let Some(i) = row_of(&e.stream_id, &e.category, &e.label) else {
            continue;
        };
        let y = row_top[i] + (ROW - BAR) / 2.0;
        let (x0, x1) = (x(e.start_ns), x(e.end_ns));
        let color = match e.category.as_str() {
            "tool" => "#2b6cb0",
            "organ" => "#c05621",
            _ => "#718096",
        };
        let outline = if e.open {
            r##" stroke="#222" stroke-dasharray="3,2""##
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="{BAR}" rx="2" fill="{color}"{outline}><title>{}</title></rect>"##,
            (x1 - x0).max(1.5),
            xml(&format!(
                "{} ({}) on {}: {} to {} ({} UTC), peak {:.2}, mean {:.2}, frames {}:{}..{}{}",
                e.label,
                e.category,
                e.stream_id,
                time::offset(e.start_offset_ns),
                time::offset(e.end_offset_ns),
                time::utc(e.start_ns),
                e.peak_confidence,
                e.mean_confidence,
                e.session_epoch,
                e.first_seq,
                e.last_seq,
                if e.open { ", still open" } else { "" }
            ))
        );
    }
    // Speed lines.
    for t in &timeline.tracks {
        let Some(i) = row_of(&t.stream_id, "tool", &t.label) else {
            continue;
        };
        if t.points.is_empty() {
            continue;
        }
        let base = row_top[i] + ROW + STRIP_PLOT;
        let mut coords: Vec<String> = t
            .points
            .iter()
            .map(|p| {
                let px = x(timeline.started_ns + p.offset_ns);
                let py = base - STRIP_PLOT * (p.speed / scale).clamp(0.0, 1.0);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        if let [only] = t.points.as_slice() {
            // One sample: a short dash, so the track is still seen.
            let px = x(timeline.started_ns + only.offset_ns) + 1.5;
            let py = base - STRIP_PLOT * (only.speed / scale).clamp(0.0, 1.0);
            coords.push(format!("{px:.1},{py:.1}"));
        }
        let _ = writeln!(
            out,
            r##"<polyline class="speed" points="{}" fill="none" stroke="{SPEED}" stroke-width="1.2" stroke-linejoin="round" stroke-linecap="round"><title>{}</title></polyline>"##,
            coords.join(" "),
            xml(&format!(
                "{} track {} on {}: {} to {}, path {:.3} frame units, mean {:.3}/s, peak {:.3}/s, idle {} s, re-entries {}{}",
                t.label,
                t.track_id,
                t.stream_id,
                time::offset(t.start_offset_ns),
                time::offset(t.end_offset_ns),
                t.path_length,
                t.mean_speed,
                t.peak_speed,
                time::seconds(t.idle_ns),
                t.reentries,
                if t.open { ", still open" } else { "" }
            ))
        );
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}" fill="#555">no tool or organ intervals in this case</text>"##,
            TOP + 17.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn category_rank(category: &str) -> u8 {
    match category {
        "tool" => 0,
        "organ" => 1,
        _ => 2,
    }
}

fn axis_label(t: i64, step: i64) -> String {
    let s = t / 1_000_000_000;
    if step < 1_000_000_000 {
        format!(
            "{}:{:02}.{}",
            s / 60,
            s % 60,
            (t % 1_000_000_000) / 100_000_000
        )
    } else if s >= 3_600 {
        format!("{}:{:02}:{:02}", s / 3_600, s % 3_600 / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::fixtures::{timeline, track};

    #[test]
    fn tool_rows_with_tracks_get_a_speed_strip() {
        let plain = svg(&timeline());
        assert!(!plain.contains("class=\"speed\""));
        assert!(!plain.contains("tool speed"));
        let mut with_tracks = timeline();
        with_tracks.tracks = vec![
            track("grasper", "cam-1", 1, 10, 30),
            track("grasper", "cam-1", 2, 60, 70),
        ];
        with_tracks.tracks[1].peak_speed = 0.5;
        let svg = svg(&with_tracks);
        assert_eq!(svg.matches("<polyline class=\"speed\"").count(), 2);
        // One strip (grasper on cam-1), labelled with its row's peak; the legend gives the
        // case's scale.
        assert_eq!(svg.matches("speed, peak 0.500/s").count(), 1);
        assert!(svg.contains("strip height = 0.500 frame units/s"));
        // 0.1 of a 0.5 peak is a fifth of the strip's 20 px above its baseline.
        let grasper_row = 70.0;
        let base = grasper_row + 26.0 + 20.0;
        assert!(svg.contains(&format!(",{:.1} ", base - 4.0)));
        // Three rows (70 + 3 x 26 + 60), and one strip more with the tracks.
        let height = |s: &str| {
            s.split("height=\"")
                .nth(1)
                .and_then(|h| h.split('"').next())
                .map(str::to_owned)
        };
        assert_eq!(height(&plain), Some("208".to_owned()));
        assert_eq!(height(&svg), Some("234".to_owned()));
    }

    #[test]
    fn the_picture_has_a_row_per_tool_and_shaded_gaps() {
        let svg = svg(&timeline());
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Case case-&lt;1&gt;"), "text is escaped");
        assert!(svg.contains(">grasper · cam-1<"));
        assert!(svg.contains(">grasper · cam-2<"));
        assert!(svg.contains(">liver · cam-1<"));
        assert_eq!(svg.matches("fill=\"#2b6cb0\"><title>").count(), 3);
        assert!(svg.contains("unusable gap on cam-1"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn ticks_stay_few() {
        for span in [1_000_000_000, 60_000_000_000, 7_200_000_000_000] {
            assert!(span / tick_step(span) <= 10);
        }
    }
}
