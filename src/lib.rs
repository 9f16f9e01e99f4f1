//! The `orstream` command's library: everything the binary does, testable without it.
//!
//! - [`demo`]: the embedded demo — sources through the in-process bus, every frame accounted.
//!
//! `src/main.rs` only parses arguments and calls in here.

pub mod demo;
