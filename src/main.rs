//! The `orstream` command: a thin entry over the `orstream` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Live operating-room video to a surgical record.
#[derive(Debug, Parser)]
#[command(name = "orstream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play the demo clip (or a camera) through ingest, infer and sink in one process.
    Demo(orstream::commands::demo::Args),
    /// Publish camera, file and test streams as frames to Kafka.
    Ingest(orstream::commands::ingest::Args),
    /// Run the model on frames from Kafka and publish one result per frame.
    Infer(orstream::commands::infer::Args),
    /// Turn results into the surgical record.
    Sink(orstream::commands::sink::Args),
    /// Read the surgical record: cases, timelines, usage, pictures.
    Record(orstream::commands::record::Args),
}

/// Exit code when a run finished but not every frame was accounted for.
const EXIT_UNACCOUNTED: u8 = 4;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORSTREAM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Signal handlers first: a SIGTERM from here on drains instead of killing the process.
    let _shutdown = orstream::shutdown::root();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => orstream::commands::demo::run(args),
        Command::Ingest(args) => orstream::commands::ingest::run(args).map(|()| true),
        Command::Infer(args) => orstream::commands::infer::run(args).map(|()| true),
        Command::Sink(args) => orstream::commands::sink::run(args).map(|()| true),
        Command::Record(args) => orstream::commands::record::run(args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: not every frame was accounted for");
            ExitCode::from(EXIT_UNACCOUNTED)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
