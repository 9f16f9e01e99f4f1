//! `orstream record`: the surgical record, read back (cases, timelines, usage, pictures).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
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
    /// A timeline picture of a case (SVG): one row per tool/organ, gaps shaded.
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
