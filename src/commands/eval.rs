//! `orstream eval`: the record against the ground truth of a set of clips (see [`crate::eval`]).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::eval::{EvalOptions, Targets, evaluate, render_clip, render_summary};

/// Options of `orstream eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of clips: each NAME.mp4 with its NAME.timeline.json (and NAME.tracks.json for
    /// the tool tracks).
    #[arg(long, value_name = "DIR")]
    pub clips: PathBuf,
    /// Only this clip (by name, without .mp4); repeat for several.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// TorchScript model (its card is the same path with .toml).
    #[arg(long, default_value = "models/demo/seg.pt")]
    pub model: PathBuf,
    /// Device for the model: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Directory for each clip's record and timeline picture.
    #[arg(long, default_value = "eval-output")]
    pub out: PathBuf,
    /// Write the evaluation as JSON here (default: OUT/eval.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Print only the summary table, not each clip's events and tracks.
    #[arg(long)]
    pub brief: bool,
    /// Fail (exit code 1) when the record misses any target.
    #[arg(long)]
    pub strict: bool,
}

/// Runs the evaluation, prints it and writes its JSON; with `--strict`, an error when a
/// target is missed.
pub fn run(args: Args) -> Result<bool> {
    let options = EvalOptions {
        clips_dir: args.clips,
        only: args.only,
        model: args.model,
        device: args.device,
        out_dir: args.out.clone(),
        targets: Targets::default(),
    };
    let brief = args.brief;
    let set = evaluate(
        &options,
        &orstream_shell::signals::root(),
        |name, eval| match eval {
            None => eprintln!("evaluating {name} ..."),
            Some(eval) if !brief => println!("\n== {name} ==\n{}", render_clip(eval)),
            Some(_) => {}
        },
    )?;
    println!("\n{}", render_summary(&set));
    let json = args.json.unwrap_or_else(|| args.out.join("eval.json"));
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&set).context("encoding the evaluation")?;
    std::fs::write(&json, text + "\n").with_context(|| format!("writing {}", json.display()))?;
    println!("evaluation written to {}", json.display());
    if args.strict && !set.meets_targets {
        anyhow::bail!("the record misses its targets: {}", set.failures.join("; "));
    }
    Ok(set.overall.unaccounted_clips == 0)
}
