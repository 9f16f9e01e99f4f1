//! `orstream record`: the surgical record, read back (cases, timelines, usage, tool tracks and
//! their motion, pictures, and the accounting of every frame).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use orstream_proto::{FrameStatus, Outcome};
use orstream_sink::Store;
use orstream_sink::record::{self, Format};

/// Options of `orstream record`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The record: sqlite://PATH or postgres://user:password@host:port/database.
    #[arg(
        long,
        env = "ORSTREAM_SINK_STORE",
        default_value = "sqlite://orstream-record.db"
    )]
    store: String,
    #[command(subcommand)]
    view: View,
}

#[derive(Debug, clap::Subcommand)]
enum View {
    /// List the cases, newest first.
    Cases {
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
    },
    /// A case's timeline: tools and organs present, and gaps, in order.
    Timeline {
        /// The case id.
        case: String,
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
    },
    /// Per tool/organ totals of a case: appearances and time visible.
    Usage {
        /// The case id.
        case: String,
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
    },
    /// A case's tool tracks (one instrument followed over time on one stream): times, path
    /// and speeds, idle time, re-entries, whether still open; then the totals per tool.
    /// Positions are fractions of the frame's width and height ("frame units"), speeds per
    /// second. CSV: the two tables one after the other, a blank line between; JSON: one object
    /// with `tracks` (with their sampled points) and `motion`.
    Tracks {
        /// The case id.
        case: String,
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
    },
    /// Per stream of a case: frames published by ingest (from the stream's end), results
    /// stored and their statuses, and whether the record is complete (the stream ended, every
    /// published frame has a stored result, no interval is still open).
    Accounting {
        /// The case id.
        case: String,
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
    },
    /// A timeline picture of a case (SVG): one row per tool/organ, gaps shaded, a speed strip
    /// under each tracked tool.
    Picture {
        /// The case id.
        case: String,
        /// Where to write the SVG (standard output when absent).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// Output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Table,
    Json,
    Csv,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Table => Format::Table,
            FormatArg::Json => Format::Json,
            FormatArg::Csv => Format::Csv,
        }
    }
}

/// Prints the view asked for.
pub fn run(args: Args) -> Result<()> {
    if let Some(path) = args
        .store
        .strip_prefix("sqlite://")
        .filter(|p| !p.starts_with(":memory:"))
        && !std::path::Path::new(path).exists()
    {
        // Opening would create an empty record; say there is none instead.
        bail!("no record at {path}");
    }
    let mut store = Store::open(&args.store).with_context(|| {
        format!(
            "opening the record {}",
            orstream_sink::store::redact(&args.store)
        )
    })?;
    let text = match args.view {
        View::Cases { format } => record::render_cases(&record::cases(&mut store)?, format.into()),
        View::Timeline { case, format } => {
            record::render_timeline(&timeline(&mut store, &case)?, format.into())
        }
        View::Usage { case, format } => {
            record::render_usage(&record::usage(&timeline(&mut store, &case)?), format.into())
        }
        View::Tracks { case, format } => {
            let timeline = timeline(&mut store, &case)?;
            let motion = record::motion(&timeline);
            match format {
                FormatArg::Json => {
                    serde_json::to_string_pretty(&serde_json::json!({
                        "case_id": timeline.case_id,
                        "tracks": timeline.tracks,
                        "motion": motion,
                    }))
                    .context("encoding the tracks as JSON")?
                        + "\n"
                }
                FormatArg::Table => format!(
                    "{}\nper tool:\n{}",
                    record::render_tracks(&timeline, Format::Table),
                    record::render_motion(&motion, Format::Table)
                ),
                FormatArg::Csv => format!(
                    "{}\n{}",
                    record::render_tracks(&timeline, Format::Csv),
                    record::render_motion(&motion, Format::Csv)
                ),
            }
        }
        View::Accounting { case, format } => {
            let timeline = timeline(&mut store, &case)?;
            render_accounting(&accounting(&mut store, &timeline)?, format)
        }
        View::Picture { case, out } => {
            let svg = record::svg(&timeline(&mut store, &case)?);
            if let Some(path) = out {
                std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
                return Ok(());
            }
            svg
        }
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing to standard output")
}

fn timeline(store: &mut Store, case: &str) -> Result<record::Timeline> {
    record::timeline(store, case)?.with_context(|| format!("no case {case:?} in the record"))
}

/// One stream's accounting in a case: every published frame has exactly one stored result.
#[derive(Debug, Default, serde::Serialize)]
struct StreamAccounting {
    stream_id: String,
    /// Frames ingest published, from the stream's end events (None until it ended).
    published: Option<u64>,
    /// Frames ingest captured but dropped before publishing (live backpressure).
    dropped: u64,
    /// Results stored for the stream in the case.
    results: u64,
    /// Stored results by status (the `frames` table, kept when `store_frames` is on).
    ok: u64,
    skipped: u64,
    errors: u64,
    /// Presence intervals still open (the sink has not seen the frames that close them).
    open_events: u64,
    /// Ended, every published frame's result stored, nothing open.
    complete: bool,
}

fn accounting(store: &mut Store, timeline: &record::Timeline) -> Result<Vec<StreamAccounting>> {
    let mut by_stream: std::collections::BTreeMap<String, StreamAccounting> = timeline
        .streams
        .iter()
        .map(|s| {
            let row = StreamAccounting {
                stream_id: s.stream_id.clone(),
                results: s.results,
                ..StreamAccounting::default()
            };
            (s.stream_id.clone(), row)
        })
        .collect();
    let case = [timeline.case_id.as_str().into()];
    for r in store.query(
        "SELECT stream_id, status, COUNT(*) FROM frames WHERE case_id = $1 \
         GROUP BY stream_id, status",
        &case,
    )? {
        let row = by_stream.entry(r[0].text().to_owned()).or_default();
        let n = u64::try_from(r[2].int()).unwrap_or(0);
        match FrameStatus::from_name(r[1].text()).map_or(Outcome::Failed, FrameStatus::outcome) {
            Outcome::Ok => row.ok += n,
            Outcome::Skipped => row.skipped += n,
            Outcome::Failed => row.errors += n,
        }
    }
    for r in store.query(
        "SELECT stream_id, detail FROM stream_events WHERE case_id = $1 AND kind = 'ended'",
        &case,
    )? {
        let detail: serde_json::Value = serde_json::from_str(r[1].text())
            .with_context(|| format!("the end event of stream {}", r[0].text()))?;
        let count = |key: &str| detail.get(key).and_then(serde_json::Value::as_u64);
        let row = by_stream.entry(r[0].text().to_owned()).or_default();
        row.published = Some(row.published.unwrap_or(0) + count("frames_published").unwrap_or(0));
        row.dropped += count("frames_dropped").unwrap_or(0);
    }
    for e in timeline.events.iter().filter(|e| e.open) {
        by_stream
            .entry(e.stream_id.clone())
            .or_default()
            .open_events += 1;
    }
    Ok(by_stream
        .into_iter()
        .map(|(stream_id, mut row)| {
            row.stream_id = stream_id;
            row.complete = row.published == Some(row.results) && row.open_events == 0;
            row
        })
        .collect())
}

fn render_accounting(rows: &[StreamAccounting], format: FormatArg) -> String {
    const HEADER: [&str; 9] = [
        "stream",
        "published",
        "dropped",
        "results",
        "ok",
        "skipped",
        "errors",
        "open",
        "complete",
    ];
    if let FormatArg::Json = format {
        return serde_json::to_string_pretty(rows)
            .map_or_else(|e| format!("{{\"error\": \"{e}\"}}"), |s| s + "\n");
    }
    let table: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.stream_id.clone(),
                r.published
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                r.dropped.to_string(),
                r.results.to_string(),
                r.ok.to_string(),
                r.skipped.to_string(),
                r.errors.to_string(),
                r.open_events.to_string(),
                if r.complete { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    let mut out = String::new();
    if let FormatArg::Csv = format {
        // Stream ids are free of control characters but may hold commas.
        let cell = |c: &str| {
            if c.contains([',', '"']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_owned()
            }
        };
        for line in std::iter::once(HEADER.map(str::to_owned)).chain(table) {
            out.push_str(&line.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        return out;
    }
    let id_width = table
        .iter()
        .map(|r| r[0].chars().count())
        .chain([HEADER[0].len()])
        .max()
        .unwrap_or(0);
    for line in std::iter::once(HEADER.map(str::to_owned)).chain(table) {
        let [id, numbers @ ..] = &line;
        out.push_str(&format!("{id:<id_width$}"));
        for n in numbers {
            out.push_str(&format!("  {n:>9}"));
        }
        out.push('\n');
    }
    out
}
