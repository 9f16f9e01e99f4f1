//! orstream-sink: per-frame results -> temporal surgical events -> the surgical record
//! (PostgreSQL, or SQLite when embedded).
//!
//! Not built yet: this crate holds the place the sink takes in the workspace. Until it lands,
//! `orstream demo` stops at the consumer group of `or.frames.v1` and says so.
