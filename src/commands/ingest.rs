//! `orstream ingest`.

/// Options of `orstream ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the service until it is stopped.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("orstream ingest is not part of this build yet")
}
