//! What a worker did, counted as it goes ([`Counters`], shared by the stages) and read as a
//! snapshot ([`Stats`]). Results and dead letters are counted when they become visible
//! (their transaction committed, or, without transactions, their offsets committed), so the
//! figures describe the output, not work that was thrown away and redone.

use std::sync::atomic::{AtomicU64, Ordering};

use orstream_proto::FrameStatus;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, updated by the pipeline stages.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A snapshot of [`Counters`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// The values now, each read on its own: counters bumped meanwhile may be read
            /// before or after the bump.
            pub fn snapshot(&self) -> Stats {
                Stats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }

            /// Adds a tally of committed output.
            pub(crate) fn add(&self, tally: &Stats) {
                $(self.$name.fetch_add(tally.$name, Ordering::Relaxed);)*
            }
        }
    };
}

counters! {
    /// Messages read from the frames topic (including ones read again after a rewind).
    consumed,
    /// Committed results with status OK.
    ok,
    /// Committed results with status SKIPPED_STALE.
    skipped_stale,
    /// Committed results with status SKIPPED_OVERLOAD.
    skipped_overload,
    /// Committed results with status DECODE_ERROR.
    decode_error,
    /// Committed results with status INVALID.
    invalid,
    /// Committed results with status MODEL_ERROR.
    model_error,
    /// Committed results with status REDACTED (withheld by ingest's privacy gate).
    redacted,
    /// Committed dead letters.
    dead_letters,
    /// Committed dead letters whose frame identity was unreadable (no result possible).
    unanswerable,
    /// Batches run by the replicas.
    batches,
    /// Frames in those batches.
    batched_frames,
    /// Transactions (or offset commits, without transactions) that succeeded.
    commits,
    /// Transactions aborted (rebalance, abortable error).
    aborts,
    /// Rewinds of the consumer to the committed offsets after an abort.
    rewinds,
    /// Transactional producers recreated after a fatal error.
    producer_restarts,
    /// Answers thrown away because their frames will be read again (after a rebalance or a
    /// rewind).
    discarded,
    /// Times the consumer was paused because every in-flight credit was taken (it goes on
    /// polling, so it stays in its group).
    pauses,
}

impl Stats {
    /// Committed results of every status.
    pub fn results(&self) -> u64 {
        self.ok
            + self.skipped_stale
            + self.skipped_overload
            + self.decode_error
            + self.invalid
            + self.model_error
            + self.redacted
    }

    /// Counts one result of `status` in this tally.
    pub(crate) fn count_status(&mut self, status: i32) {
        match FrameStatus::try_from(status) {
            Ok(FrameStatus::Ok) => self.ok += 1,
            Ok(FrameStatus::SkippedStale) => self.skipped_stale += 1,
            Ok(FrameStatus::SkippedOverload) => self.skipped_overload += 1,
            Ok(FrameStatus::DecodeError) => self.decode_error += 1,
            Ok(FrameStatus::Invalid) => self.invalid += 1,
            Ok(FrameStatus::Redacted) => self.redacted += 1,
            Ok(FrameStatus::ModelError) | Ok(FrameStatus::Unspecified) | Err(_) => {
                self.model_error += 1;
            }
        }
    }
}
