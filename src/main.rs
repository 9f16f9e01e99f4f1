//! The `orstream` command: a thin entry over the `orstream` library.

use std::process::ExitCode;
use std::time::Duration;

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
    /// Run the embedded demo in one process over the in-process bus (no servers).
    Demo {
        /// Concurrent streams.
        #[arg(long, default_value_t = 2)]
        streams: usize,
        /// Frames per stream.
        #[arg(long, default_value_t = 150)]
        frames: u32,
        /// Frame width in pixels.
        #[arg(long, default_value_t = 640)]
        width: u32,
        /// Frame height in pixels.
        #[arg(long, default_value_t = 360)]
        height: u32,
        /// Process as fast as possible instead of at camera pace.
        #[arg(long)]
        archive: bool,
    },
    /// Publish camera, file and test streams as frames to Kafka.
    Ingest(orstream::commands::ingest::Args),
    /// Run the model on frames from Kafka and publish one result per frame.
    Infer(orstream::commands::infer::Args),
    /// Turn results into the surgical record.
    Sink(orstream::commands::sink::Args),
    /// Read the surgical record: cases, timelines, usage, pictures.
    Record(orstream::commands::record::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORSTREAM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo {
            streams,
            frames,
            width,
            height,
            archive,
        } => {
            let options = orstream::demo::DemoOptions {
                streams,
                frames,
                width,
                height,
                live: !archive,
                progress_every: Some(Duration::from_secs(1)),
            };
            orstream::demo::run(&options).map(|report| {
                orstream::demo::print_report(&report);
                report.all_accounted()
            })
        }
        Command::Ingest(args) => orstream::commands::ingest::run(args).map(|()| true),
        Command::Infer(args) => orstream::commands::infer::run(args).map(|()| true),
        Command::Sink(args) => orstream::commands::sink::run(args).map(|()| true),
        Command::Record(args) => orstream::commands::record::run(args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: not every frame was accounted for");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
