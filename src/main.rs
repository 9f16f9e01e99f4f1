//! The `orstream` command: a thin entry over the `orstream` library.
//!
//! Every subcommand starts the same way: signal handlers, arguments, then telemetry
//! ([`orstream::telemetry::configure`] and [`orstream::telemetry::init`]), kept until the
//! command ends so buffered spans and metrics are flushed. Exit codes follow
//! [`orstream_shell::exit`]; the demo adds [`EXIT_UNACCOUNTED`].

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orstream::telemetry::{self, TelemetryArgs};

/// Live operating-room video to a surgical record.
#[derive(Debug, Parser)]
#[command(name = "orstream", version, about)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play the demo clip (or a camera) through ingest, infer and sink in one process.
    Demo(orstream::commands::demo::Args),
    /// Run the pipeline over clips with ground truth and score the record against it.
    Eval(orstream::commands::eval::Args),
    /// Publish camera, file and test streams as frames to Kafka.
    Ingest(orstream::commands::ingest::Args),
    /// Run the model on frames from Kafka and publish one result per frame.
    Infer(orstream::commands::infer::Args),
    /// Turn results into the surgical record.
    Sink(orstream::commands::sink::Args),
    /// Read the surgical record: cases, timelines, usage, pictures.
    Record(orstream::commands::record::Args),
    /// Play cameras into a running deployment and measure its latency and exactness.
    Load(orstream::commands::load::Args),
    /// Serve the surgical record over an authenticated, read-only HTTP API.
    Api(orstream::commands::api::Args),
    /// Start or end a room's case on a running ingest (its admin API).
    Case(orstream::commands::admin::CaseArgs),
    /// Add or remove a room's camera on a running ingest (its admin API).
    Camera(orstream::commands::admin::CameraArgs),
    /// Rooms, their open cases and cameras, from a running ingest (its admin API).
    Status(orstream::commands::admin::StatusArgs),
}

impl Command {
    /// The service (the `<SERVICE>` of its `ORSTREAM_<SERVICE>_*` variables) and the
    /// configuration file its `[telemetry]` table is read from.
    fn telemetry_source(&self) -> (&'static str, Option<&Path>) {
        match self {
            Self::Demo(_) => ("demo", None),
            Self::Eval(_) => ("eval", None),
            Self::Ingest(args) => ("ingest", args.config.as_deref()),
            Self::Infer(args) => ("infer", args.config.as_deref()),
            Self::Sink(args) => ("sink", args.config.as_deref()),
            Self::Record(_) => ("record", None),
            Self::Load(args) => ("load", args.config.as_deref()),
            Self::Api(args) => ("api", args.config.as_deref()),
            Self::Case(_) | Self::Camera(_) | Self::Status(_) => ("admin", None),
        }
    }
}

/// Exit code when a run finished but not every frame was accounted for.
const EXIT_UNACCOUNTED: u8 = 4;

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(orstream_shell::exit::exit_code(error))
}

fn main() -> ExitCode {
    // Signal handlers first: a SIGTERM from here on drains instead of killing the process.
    let _shutdown = orstream_shell::signals::root();
    let cli = Cli::parse();
    let (service, file) = cli.command.telemetry_source();
    let guard = match telemetry::configure(service, file, &cli.telemetry)
        .and_then(|config| telemetry::init(&config))
    {
        Ok(guard) => guard,
        Err(error) => return fail(&error),
    };
    let health = guard.health();
    let result = match cli.command {
        Command::Demo(args) => orstream::commands::demo::run(args),
        Command::Eval(args) => orstream::commands::eval::run(args),
        Command::Ingest(args) => orstream::commands::ingest::run(args, health).map(|()| true),
        Command::Infer(args) => orstream::commands::infer::run(args).map(|()| true),
        Command::Sink(args) => orstream::commands::sink::run(args, health).map(|()| true),
        Command::Record(args) => orstream::commands::record::run(args).map(|()| true),
        Command::Load(args) => orstream::commands::load::run(args),
        Command::Api(args) => orstream::commands::api::run(args, health).map(|()| true),
        Command::Case(args) => orstream::commands::admin::run_case(args).map(|()| true),
        Command::Camera(args) => orstream::commands::admin::run_camera(args).map(|()| true),
        Command::Status(args) => orstream::commands::admin::run_status(args).map(|()| true),
    };
    // Flush spans and metrics before the process ends.
    drop(guard);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: not every frame was accounted for");
            ExitCode::from(EXIT_UNACCOUNTED)
        }
        Err(error) => fail(&error),
    }
}
