//! The record's views as text: aligned tables for a terminal, CSV with a header row, or
//! pretty JSON, one `render_*` per view. Kept apart from the queries so a view can be read
//! once and rendered several ways (the CLI and the demo print the same tables).

use std::fmt::Write as _;

use serde::Serialize;

use crate::query::{CaseSummary, StreamAccounting, Timeline, ToolMotion, Usage};
use crate::time;

/// Output formats of the record views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// Pretty JSON.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Renders rows with a header in `format` (JSON is rendered from `json` instead).
fn render_rows(
    header: &[&str],
    rows: &[Vec<String>],
    format: Format,
    json: impl FnOnce() -> String,
) -> String {
    match format {
        Format::Json => json(),
        Format::Csv => {
            let mut out = String::new();
            for row in std::iter::once(header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .chain(rows.iter().cloned())
            {
                let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
                out.push_str(&cells.join(","));
                out.push('\n');
            }
            out
        }
        Format::Table => {
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for row in rows {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let mut out = String::new();
            let line = |cells: &[String], out: &mut String| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                out.push_str(padded.join("  ").trim_end());
                out.push('\n');
            };
            line(
                &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
                &mut out,
            );
            line(
                &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
                &mut out,
            );
            for row in rows {
                line(row, &mut out);
            }
            out
        }
    }
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value)
        .map_or_else(|e| format!("{{\"error\": \"{e}\"}}"), |s| s + "\n")
}

/// The case list.
pub fn render_cases(cases: &[CaseSummary], format: Format) -> String {
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|c| {
            let opened = c.opened_ns.map_or_else(|| "-".to_owned(), time::utc);
            let closed = match (c.room_id.is_empty(), c.closed_ns) {
                (_, Some(ns)) => time::utc(ns),
                (false, None) => "open".to_owned(),
                (true, None) => "-".to_owned(),
            };
            vec![
                c.case_id.clone(),
                if c.room_id.is_empty() {
                    "-".to_owned()
                } else {
                    c.room_id.clone()
                },
                time::utc(c.started_ns),
                time::offset(c.last_frame_ns - c.started_ns),
                opened,
                closed,
                c.cameras.join(" "),
                c.events.to_string(),
                c.gaps.to_string(),
                if c.complete { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    render_rows(
        &[
            "case",
            "room",
            "first frame (UTC)",
            "duration",
            "started (UTC)",
            "ended (UTC)",
            "cameras",
            "events",
            "gaps",
            "complete",
        ],
        &rows,
        format,
        || json(&cases),
    )
}

/// The audit of deletions.
pub fn render_audit(rows: &[crate::store::AuditRow], format: Format) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                time::utc(r.at_ns),
                r.actor.clone(),
                r.action.clone(),
                r.case_id.clone(),
                r.rows_deleted.to_string(),
                r.detail.clone(),
            ]
        })
        .collect();
    render_rows(
        &["at (UTC)", "by", "action", "case", "rows", "per table"],
        &cells,
        format,
        || json(&rows),
    )
}

/// A case's timeline: intervals and gaps interleaved by start.
pub fn render_timeline(timeline: &Timeline, format: Format) -> String {
    let mut items: Vec<(i64, Vec<String>)> = timeline
        .events
        .iter()
        .map(|e| {
            (
                e.start_ns,
                vec![
                    time::offset(e.start_offset_ns),
                    time::offset(e.end_offset_ns),
                    time::utc(e.start_ns),
                    time::utc(e.end_ns),
                    e.stream_id.clone(),
                    if e.open {
                        "present (open)".into()
                    } else {
                        "present".into()
                    },
                    e.category.clone(),
                    e.label.clone(),
                    e.track_ids
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    format!("{:.2}", e.peak_confidence),
                    format!("{:.2}", e.mean_confidence),
                    format!("{}:{}..{}", e.session_epoch, e.first_seq, e.last_seq),
                    e.model_version.clone(),
                    String::new(),
                ],
            )
        })
        .chain(timeline.gaps.iter().map(|g| {
            (
                g.start_ns,
                vec![
                    time::offset(g.start_offset_ns),
                    time::offset(g.end_offset_ns),
                    time::utc(g.start_ns),
                    time::utc(g.end_ns),
                    g.stream_id.clone(),
                    format!("gap ({})", g.kind),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    format!("{} frames", g.frames),
                    String::new(),
                    g.reason.clone(),
                ],
            )
        }))
        .collect();
    items.sort_by_key(|(start, _)| *start);
    let rows: Vec<Vec<String>> = items.into_iter().map(|(_, r)| r).collect();
    render_rows(
        &[
            "from",
            "to",
            "from (UTC)",
            "to (UTC)",
            "stream",
            "what",
            "category",
            "label",
            "tracks",
            "peak",
            "mean",
            "frames",
            "model",
            "reason",
        ],
        &rows,
        format,
        || json(timeline),
    )
}

/// Per-tool usage totals.
pub fn render_usage(usage: &[Usage], format: Format) -> String {
    let rows: Vec<Vec<String>> = usage
        .iter()
        .map(|u| {
            vec![
                u.category.clone(),
                u.label.clone(),
                u.appearances.to_string(),
                time::offset(u.visible_ns),
                format!("{:.1}%", u.share * 100.0),
                time::offset(u.first_offset_ns),
                time::offset(u.last_offset_ns),
                format!("{:.2}", u.peak_confidence),
            ]
        })
        .collect();
    render_rows(
        &[
            "category",
            "label",
            "appearances",
            "visible",
            "share",
            "first seen",
            "last seen",
            "peak",
        ],
        &rows,
        format,
        || json(&usage),
    )
}

/// A case's tool tracks, one row each (JSON also carries the sampled points).
pub fn render_tracks(timeline: &Timeline, format: Format) -> String {
    let rows: Vec<Vec<String>> = timeline
        .tracks
        .iter()
        .map(|t| {
            vec![
                t.stream_id.clone(),
                t.track_id.to_string(),
                t.label.clone(),
                time::offset(t.start_offset_ns),
                time::offset(t.end_offset_ns),
                time::seconds(t.end_ns - t.start_ns),
                format!("{:.3}", t.path_length),
                format!("{:.3}", t.mean_speed),
                format!("{:.3}", t.peak_speed),
                time::seconds(t.idle_ns),
                t.reentries.to_string(),
                t.frames_seen.to_string(),
                if t.open { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    render_rows(
        &[
            "stream",
            "track",
            "tool",
            "from",
            "to",
            "duration (s)",
            "path (frame units)",
            "mean (frame units/s)",
            "peak (frame units/s)",
            "idle (s)",
            "re-entries",
            "frames",
            "open",
        ],
        &rows,
        format,
        || json(&timeline.tracks),
    )
}

/// Per-tool motion totals.
pub fn render_motion(motion: &[ToolMotion], format: Format) -> String {
    let rows: Vec<Vec<String>> = motion
        .iter()
        .map(|m| {
            vec![
                m.label.clone(),
                m.tracks.to_string(),
                time::seconds(m.tracked_ns),
                format!("{:.3}", m.path_length),
                format!("{:.3}", m.mean_speed),
                format!("{:.3}", m.peak_speed),
                time::seconds(m.idle_ns),
                m.reentries.to_string(),
            ]
        })
        .collect();
    render_rows(
        &[
            "tool",
            "tracks",
            "tracked (s)",
            "path (frame units)",
            "mean (frame units/s)",
            "peak (frame units/s)",
            "idle (s)",
            "re-entries",
        ],
        &rows,
        format,
        || json(&motion),
    )
}

/// Per stream accounting of a case: the stream, then right-aligned counts.
pub fn render_accounting(rows: &[StreamAccounting], format: Format) -> String {
    const HEADER: [&str; 10] = [
        "stream",
        "published",
        "dropped",
        "results",
        "ok",
        "skipped",
        "errors",
        "redacted",
        "open",
        "complete",
    ];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.stream_id.clone(),
                r.published
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                r.dropped.to_string(),
                r.results.to_string(),
                r.ok.to_string(),
                r.skipped.to_string(),
                r.errors.to_string(),
                r.redacted.to_string(),
                r.open_events.to_string(),
                if r.complete { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    if format != Format::Table {
        return render_rows(&HEADER, &table, format, || json(&rows));
    }
    // Counts line up on the right, under headers as wide as the widest count column.
    let id_width = table
        .iter()
        .map(|r| r[0].chars().count())
        .chain([HEADER[0].len()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for line in std::iter::once(HEADER.map(str::to_owned).to_vec()).chain(table) {
        if let [id, numbers @ ..] = line.as_slice() {
            let _ = write!(out, "{id:<id_width$}");
            for n in numbers {
                let _ = write!(out, "  {n:>9}");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting_and_table_aligns() {
        let rows = vec![vec!["a,b".to_owned(), "say \"hi\"".to_owned()]];
        let csv = render_rows(&["x", "y"], &rows, Format::Csv, String::new);
        assert_eq!(csv, "x,y\n\"a,b\",\"say \"\"hi\"\"\"\n");
        let table = render_rows(&["x", "y"], &rows, Format::Table, String::new);
        assert_eq!(table, "x    y\n---  --------\na,b  say \"hi\"\n");
    }
}
