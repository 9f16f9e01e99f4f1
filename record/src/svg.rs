//! The timeline as a self-contained SVG picture, for a report or a browser: one row per
//! tool/organ (per stream when the case has several), intervals as bars, gaps shaded across
//! the rows of their stream, a time axis in offsets from the case start, and a speed strip
//! under each tracked tool. The picture is built in layers (header and legend, row bands,
//! axis, gaps, bars, speed lines), each its own function over one `Layout`, so the
//! geometry is computed once and every layer places itself the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::query::{Timeline, TimelineEvent, TimelineGap, TimelineTrack};
use crate::schema::GapKind;
use crate::time;

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
const PLOT: f64 = WIDTH - LEFT - RIGHT;

/// A row of the picture: (stream, category, label).
type RowKey = (String, String, String);

/// Where everything goes: the rows, their tops and strips, the time scale.
struct Layout {
    /// Rows in drawing order.
    rows: Vec<RowKey>,
    /// Per row, the peak speed of its tracks (None: no tracks, so no strip).
    row_peak: Vec<Option<f64>>,
    /// Per row, its top.
    row_top: Vec<f64>,
    /// Below the last row.
    bottom: f64,
    /// Whether rows name their stream.
    multi: bool,
    /// The highest speed of any row: the legend's strip height.
    case_peak: f64,
    /// The speed a full strip stands for.
    scale: f64,
    /// The case start (UTC ns).
    started_ns: i64,
    /// Time across the plot (ns).
    span: i64,
}

impl Layout {
    fn of(timeline: &Timeline) -> Self {
        let stream_ids: BTreeSet<&str> = timeline
            .streams
            .iter()
            .map(|s| s.stream_id.as_str())
            .chain(timeline.events.iter().map(|e| e.stream_id.as_str()))
            .chain(timeline.tracks.iter().map(|t| t.stream_id.as_str()))
            .collect();
        let rows = rows(timeline);
        let mut layout = Self {
            row_peak: vec![None; rows.len()],
            row_top: Vec::with_capacity(rows.len()),
            rows,
            bottom: TOP,
            multi: stream_ids.len() > 1,
            case_peak: 0.0,
            scale: 1.0,
            started_ns: timeline.started_ns,
            span: (timeline.last_frame_ns - timeline.started_ns).max(1_000_000_000),
        };
        for t in &timeline.tracks {
            if let Some(i) = layout.row_of(&t.stream_id, "tool", &t.label) {
                let peak = t
                    .points
                    .iter()
                    .map(|p| p.speed)
                    .fold(t.peak_speed, f64::max);
                layout.row_peak[i] = Some(layout.row_peak[i].map_or(peak, |p: f64| p.max(peak)));
            }
        }
        for i in 0..layout.rows.len() {
            layout.row_top.push(layout.bottom);
            layout.bottom += layout.row_height(i);
        }
        if layout.rows.is_empty() {
            layout.bottom += ROW;
        }
        // One scale for every strip, so rows compare; a case whose tools never moved draws
        // flat.
        layout.case_peak = layout
            .row_peak
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max);
        layout.scale = if layout.case_peak > 0.0 {
            layout.case_peak
        } else {
            1.0
        };
        layout
    }

    fn row_of(&self, stream: &str, category: &str, label: &str) -> Option<usize> {
        self.rows
            .iter()
            .position(|(s, c, l)| s == stream && c == category && l == label)
    }

    fn row_height(&self, i: usize) -> f64 {
        if self.row_peak[i].is_some() {
            ROW + STRIP
        } else {
            ROW
        }
    }

    /// The x of a time (UTC ns), clamped to the plot.
    fn x(&self, ns: i64) -> f64 {
        LEFT + PLOT * ((ns - self.started_ns) as f64 / self.span as f64).clamp(0.0, 1.0)
    }

    /// The y of a speed in the strip whose baseline is `base`.
    fn speed_y(&self, base: f64, speed: f64) -> f64 {
        base - STRIP_PLOT * (speed / self.scale).clamp(0.0, 1.0)
    }
}

/// Rows: tools first, then organs, then the rest; within a category by the label's first
/// appearance, the streams of one label next to each other. A track whose tool has no
/// interval (yet) still gets its row.
fn rows(timeline: &Timeline) -> Vec<RowKey> {
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
    let mut row_set: BTreeSet<RowKey> = BTreeSet::new();
    for (stream, category, label, start_ns) in appearances {
        let t = first_seen
            .entry((category, label.as_str()))
            .or_insert(start_ns);
        *t = (*t).min(start_ns);
        row_set.insert((stream.clone(), category.to_owned(), label.clone()));
    }
    let mut rows: Vec<RowKey> = row_set.into_iter().collect();
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
    rows
}

/// The timeline as a self-contained SVG: one row per tool/organ (per stream when the case
/// has several), intervals as bars, gaps shaded across the rows of their stream, a time axis
/// in offsets from the case start. A tool row with tracks has a speed strip under its bars:
/// one line per track, its sampled speed over time, on one scale for the whole case (zero to
/// the case's peak speed, given in the legend), with the row's own peak written by its name.
/// Every bar, gap and speed line has a tooltip with its exact times and figures.
pub fn svg(timeline: &Timeline) -> String {
    let layout = Layout::of(timeline);
    let mut out = String::new();
    header(&mut out, timeline, &layout);
    legend(&mut out, &layout);
    row_bands(&mut out, &layout);
    axis(&mut out, &layout);
    for g in &timeline.gaps {
        gap(&mut out, &layout, g);
    }
    for e in &timeline.events {
        bar(&mut out, &layout, e);
    }
    for t in &timeline.tracks {
        speed_line(&mut out, &layout, t);
    }
    if layout.rows.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}" fill="#555">no tool or organ intervals in this case</text>"##,
            TOP + 17.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn header(out: &mut String, timeline: &Timeline, layout: &Layout) {
    let height = layout.bottom + 60.0;
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
}

fn legend(out: &mut String, layout: &Layout) {
    let legend = [
        ("#2b6cb0", "tool"),
        ("#c05621", "organ"),
        ("#718096", "other"),
        ("#a0a0a0", "gap (no usable frames)"),
        (OUT_OF_BODY_COLOR, "camera out of body"),
    ];
    let mut lx = LEFT;
    for (color, name) in legend {
        let opacity = if name.starts_with("gap") || name.starts_with("camera") {
            "0.45"
        } else {
            "1"
        };
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
    if layout.row_peak.iter().any(Option::is_some) {
        let _ = writeln!(
            out,
            r##"<polyline points="{lx},45 {},37 {},42 {},35" fill="none" stroke="{SPEED}" stroke-width="1.5"/><text x="{}" y="44" fill="#333">tool speed, strip height = {:.3} frame units/s</text>"##,
            lx + 4.0,
            lx + 8.0,
            lx + 12.0,
            lx + 16.0,
            layout.case_peak
        );
    }
}

/// Alternate rows shaded, each named (with its stream when there are several); a tracked
/// tool's row gets its strip's baseline and peak.
fn row_bands(out: &mut String, layout: &Layout) {
    for (i, (stream, _category, label)) in layout.rows.iter().enumerate() {
        let y = layout.row_top[i];
        if i % 2 == 1 {
            let _ = writeln!(
                out,
                r##"<rect x="{LEFT}" y="{y}" width="{PLOT}" height="{}" fill="#f4f6f8"/>"##,
                layout.row_height(i)
            );
        }
        let name = if layout.multi {
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
        if let Some(peak) = layout.row_peak[i] {
            let base = y + ROW + STRIP_PLOT;
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="end" font-size="10" fill="{SPEED}">speed, peak {peak:.3}/s</text><line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="#cbd5e0" stroke-width="1"/>"##,
                LEFT - 8.0,
                base - 4.0,
                LEFT + PLOT
            );
        }
    }
}

fn axis(out: &mut String, layout: &Layout) {
    let bottom = layout.bottom;
    let step = tick_step(layout.span);
    let mut t = 0;
    while t <= layout.span {
        let tx = layout.x(layout.started_ns + t);
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
        LEFT + PLOT / 2.0,
        bottom + 38.0
    );
}

/// The shade of a stretch whose frames the privacy gate withheld.
const OUT_OF_BODY_COLOR: &str = "#6b46c1";

/// A gap, shaded on every row of its stream (all rows when there is one stream); a stretch
/// the privacy gate withheld is shaded in its own colour as "camera out of body".
fn gap(out: &mut String, layout: &Layout, g: &TimelineGap) {
    let (x0, x1) = (layout.x(g.start_ns), layout.x(g.end_ns));
    let out_of_body = GapKind::parse(&g.kind) == Some(GapKind::OutOfBody);
    let (what, color) = if out_of_body {
        ("camera out of body".to_owned(), OUT_OF_BODY_COLOR)
    } else {
        (format!("{} gap", g.kind), "#a0a0a0")
    };
    let tooltip = xml(&format!(
        "{what} on {}: {} to {} ({}), {}",
        g.stream_id,
        time::offset(g.start_offset_ns),
        time::offset(g.end_offset_ns),
        time::utc(g.start_ns),
        g.reason
    ));
    for (i, _) in layout
        .rows
        .iter()
        .enumerate()
        .filter(|(_, (s, _, _))| !layout.multi || *s == g.stream_id)
    {
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="{}" fill="{color}" fill-opacity="0.45"><title>{tooltip}</title></rect>"##,
            layout.row_top[i],
            (x1 - x0).max(2.0),
            layout.row_height(i)
        );
    }
}

/// A presence interval as a bar in its row, outlined while still open.
fn bar(out: &mut String, layout: &Layout, e: &TimelineEvent) {
    let Some(i) = layout.row_of(&e.stream_id, &e.category, &e.label) else {
        return;
    };
    let y = layout.row_top[i] + (ROW - BAR) / 2.0;
    let (x0, x1) = (layout.x(e.start_ns), layout.x(e.end_ns));
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

/// A track's sampled speed as a line in its tool's strip.
fn speed_line(out: &mut String, layout: &Layout, t: &TimelineTrack) {
    let Some(i) = layout.row_of(&t.stream_id, "tool", &t.label) else {
        return;
    };
    if t.points.is_empty() {
        return;
    }
    let base = layout.row_top[i] + ROW + STRIP_PLOT;
    let mut coords: Vec<String> = t
        .points
        .iter()
        .map(|p| {
            let px = layout.x(layout.started_ns + p.offset_ns);
            let py = layout.speed_y(base, p.speed);
            format!("{px:.1},{py:.1}")
        })
        .collect();
    if let [only] = t.points.as_slice() {
        // One sample: a short dash, so the track is still seen.
        let px = layout.x(layout.started_ns + only.offset_ns) + 1.5;
        let py = layout.speed_y(base, only.speed);
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
    fn a_stretch_the_privacy_gate_withheld_is_shaded_as_camera_out_of_body() {
        let mut timeline = timeline();
        let mut withheld = timeline.gaps[0].clone();
        withheld.kind = GapKind::OutOfBody.as_str().into();
        withheld.start_ns = 50_000_000_000;
        withheld.end_ns = 52_000_000_000;
        withheld.start_offset_ns = 50_000_000_000;
        withheld.end_offset_ns = 52_000_000_000;
        withheld.reason = "OUT_OF_BODY x20, MARGIN x4".into();
        timeline.gaps.push(withheld);
        let svg = svg(&timeline);
        assert!(svg.contains("camera out of body on cam-1"), "{svg}");
        assert!(svg.contains("OUT_OF_BODY x20, MARGIN x4"));
        assert!(svg.contains(&format!(
            "fill=\"{OUT_OF_BODY_COLOR}\" fill-opacity=\"0.45\"><title>camera out of body"
        )));
        // The other gap keeps its grey and its name; the legend names both.
        assert!(svg.contains("unusable gap on cam-1"));
        assert!(svg.contains(">camera out of body</text>"));
    }

    #[test]
    fn ticks_stay_few() {
        for span in [1_000_000_000, 60_000_000_000, 7_200_000_000_000] {
            assert!(span / tick_step(span) <= 10);
        }
    }
}
