//! `orstream record`: the surgical record, read back (cases, timelines, usage, tool tracks and
//! their motion, pictures, and the accounting of every frame), and deleted: one case, or every
//! case quiet for longer than a given time, each deletion leaving a row in an append-only
//! audit.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use orstream_record::query::{self, Timeline};
use orstream_record::store::{Deleter, Deletion};
use orstream_record::text::{self, Format};
use orstream_record::{Store, svg};
use orstream_sink::derive::StreamState;

/// Options of `orstream record`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The record: sqlite://PATH or postgres://user:password@host:port/database. Its value in
    /// the environment is never shown (it may hold a password).
    #[arg(
        long,
        env = "ORSTREAM_SINK_STORE",
        hide_env_values = true,
        default_value = "sqlite://orstream-record.db"
    )]
    store: String,
    /// A file holding the record's URL (its final line end dropped), so a password never
    /// sits on the command line or in the environment; takes the place of --store.
    #[arg(long, env = "ORSTREAM_SINK_STORE_FILE")]
    store_file: Option<PathBuf>,
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
    /// Deletes everything the record holds of a case, in one transaction, and leaves a row in
    /// the audit (who, when, what, how many rows) that no deletion can remove.
    Delete {
        /// The case id.
        case: String,
        /// Who deletes, for the audit.
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
    /// Deletes every case quiet for longer than `--older-than` (no frame captured and no
    /// stream event since: closed, as far as the record knows), each in its own transaction
    /// with its own audit row.
    Purge {
        /// How long a case must have been quiet, e.g. `30d`, `12h`.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Who deletes, for the audit.
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        /// List the cases that would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The audit of deletions, oldest first.
    Audit {
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
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
pub fn run(mut args: Args) -> Result<()> {
    if let Some(file) = &args.store_file {
        args.store = orstream_shell::config::read_secret(file)
            .with_context(|| format!("reading the record's URL from {}", file.display()))?;
    }
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
            orstream_record::store::redact(&args.store)
        )
    })?;
    let text = match args.view {
        View::Cases { format } => {
            text::render_cases(&query::cases::<StreamState>(&mut store)?, format.into())
        }
        View::Timeline { case, format } => {
            text::render_timeline(&timeline(&mut store, &case)?, format.into())
        }
        View::Usage { case, format } => {
            text::render_usage(&query::usage(&timeline(&mut store, &case)?), format.into())
        }
        View::Tracks { case, format } => {
            let timeline = timeline(&mut store, &case)?;
            let motion = query::motion(&timeline);
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
                    text::render_tracks(&timeline, Format::Table),
                    text::render_motion(&motion, Format::Table)
                ),
                FormatArg::Csv => format!(
                    "{}\n{}",
                    text::render_tracks(&timeline, Format::Csv),
                    text::render_motion(&motion, Format::Csv)
                ),
            }
        }
        View::Accounting { case, format } => {
            if store.case_start(&case)?.is_none() {
                bail!("no case {case:?} in the record");
            }
            text::render_accounting(
                &query::accounting::<StreamState>(&mut store, &case)?,
                format.into(),
            )
        }
        View::Delete { case, by } => {
            let deleter = Deleter {
                actor: &by,
                action: "delete",
            };
            let deletion = store.delete_case::<StreamState>(&case, &deleter)?;
            describe_deletion(&deletion)
        }
        View::Purge {
            older_than,
            by,
            dry_run,
        } => purge(&mut store, older_than, &by, dry_run)?,
        View::Audit { format } => text::render_audit(&store.audit()?, format.into()),
        View::Picture { case, out } => {
            let svg = svg::svg(&timeline(&mut store, &case)?);
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

/// One line per deletion: the case, the rows removed in all, and per table.
fn describe_deletion(deletion: &Deletion) -> String {
    let tables: Vec<String> = deletion
        .rows
        .iter()
        .map(|(table, n)| format!("{table} {n}"))
        .collect();
    format!(
        "deleted case {}: {} rows ({})\n",
        deletion.case_id,
        deletion.total(),
        if tables.is_empty() {
            "it had none".to_owned()
        } else {
            tables.join(", ")
        }
    )
}

/// Deletes (or, dry, lists) every case quiet for longer than `older_than`.
fn purge(
    store: &mut Store,
    older_than: std::time::Duration,
    by: &str,
    dry_run: bool,
) -> Result<String> {
    let now_ns = orstream_shell::clock::now_ns();
    let cutoff = now_ns.saturating_sub(i64::try_from(older_than.as_nanos()).unwrap_or(i64::MAX));
    let cases = store.cases_quiet_since(cutoff)?;
    let age = humantime_serde::re::humantime::format_duration(older_than);
    if dry_run {
        let mut out = format!("{} cases quiet for more than {age}\n", cases.len());
        for case in &cases {
            out.push_str(case);
            out.push('\n');
        }
        return Ok(out);
    }
    let action = format!("purge --older-than {age}");
    let deleter = Deleter {
        actor: by,
        action: &action,
    };
    let mut out = String::new();
    for case in &cases {
        let deletion = store.delete_case::<StreamState>(case, &deleter)?;
        out.push_str(&describe_deletion(&deletion));
    }
    out.push_str(&format!(
        "purged {} cases quiet for more than {age}\n",
        cases.len()
    ));
    Ok(out)
}

fn timeline(store: &mut Store, case: &str) -> Result<Timeline> {
    query::timeline::<StreamState>(store, case)?
        .with_context(|| format!("no case {case:?} in the record"))
}
