//! One module per service subcommand: its options (clap) and its run function.

pub mod admin;
pub mod api;
pub mod demo;
pub mod eval;
pub mod infer;
pub mod ingest;
pub mod load;
pub mod record;
pub mod sink;
