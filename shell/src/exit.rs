//! Exit codes and their reasons, the same in every service.
//!
//! | code | constant | meaning |
//! |---|---|---|
//! | 0 | [`OK`] | finished or drained cleanly after SIGINT/SIGTERM |
//! | 1 | [`FAILURE`] | failed while running (a fatal bus or database error, a panic) |
//! | 2 | [`CONFIG`] | bad configuration or command line (as clap exits on bad flags) |
//! | 3 | [`UNAVAILABLE`] | a dependency (broker, database, model file) unreachable at start |
//! | 130 | [`FORCED`] | a second signal cut the drain short |
//!
//! An error is classified by attaching an [`ExitReason`] as anyhow context
//! (`.context(ExitReason::Config)`); [`exit_code`] finds it anywhere in the chain, and an
//! unclassified error is a runtime failure. Supervisors restart on 1 and 3, not on 2.

use std::fmt;

/// Finished, or drained cleanly after SIGINT/SIGTERM.
pub const OK: u8 = 0;
/// Failed while running.
pub const FAILURE: u8 = 1;
/// Bad configuration or command line.
pub const CONFIG: u8 = 2;
/// A dependency was unreachable at start.
pub const UNAVAILABLE: u8 = 3;
/// A second signal cut the drain short ([`crate::signals`]).
pub const FORCED: u8 = 130;

/// Why a service ends with an error; attach it as context to pick the exit code:
/// `config.validate().context(ExitReason::Config)?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Failed while running ([`FAILURE`]).
    Failure,
    /// Bad configuration ([`CONFIG`]).
    Config,
    /// A dependency unreachable at start ([`UNAVAILABLE`]).
    Unavailable,
}

impl ExitReason {
    /// The exit code.
    pub const fn code(self) -> u8 {
        match self {
            Self::Failure => FAILURE,
            Self::Config => CONFIG,
            Self::Unavailable => UNAVAILABLE,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Failure => "runtime failure",
            Self::Config => "configuration error",
            Self::Unavailable => "dependency unavailable at start",
        })
    }
}

/// The exit code for an error: the [`ExitReason`] attached anywhere in its chain (the
/// outermost wins), else [`FAILURE`].
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<ExitReason>()
        .map_or(FAILURE, |reason| reason.code())
}

#[cfg(test)]
mod tests {
    use anyhow::{Context, Result};

    use super::*;

    #[test]
    fn exit_codes_follow_the_attached_reason() {
        let plain = anyhow::anyhow!("boom");
        assert_eq!(exit_code(&plain), FAILURE);

        let config: Result<()> = Err(anyhow::anyhow!("bad key")).context(ExitReason::Config);
        let config = config.context("starting orstream infer").unwrap_err();
        assert_eq!(exit_code(&config), CONFIG);
        assert_eq!(
            format!("{config:#}"),
            "starting orstream infer: configuration error: bad key"
        );

        let down: Result<()> =
            Err(std::io::Error::other("connection refused")).context(ExitReason::Unavailable);
        assert_eq!(exit_code(&down.unwrap_err()), UNAVAILABLE);
    }
}
