//! `orstream infer`.

/// Options of `orstream infer`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the service until it is stopped.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("orstream infer is not part of this build yet")
}
