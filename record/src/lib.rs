//! orstream-record: the surgical record. Written by the sink (`orstream_sink`), read by the
//! `orstream record` command and the embedded demo; it knows nothing of how the record is
//! derived.
//!
//! # Modules, in the order data meets them
//!
//! - [`value`]: one cell of a row ([`Value`]), shared by the typed rows and the stores.
//! - [`schema`]: the record's tables written once: one typed row per table ([`schema::Row`],
//!   [`schema::Table`]), and what the record keeps of the sink's derivation
//!   ([`schema::GapKind`], [`schema::DerivationState`]). The tables themselves are created by
//!   the migrations in `migrations/` (described in `SCHEMA.md`).
//! - [`store`]: [`Store`], one interface over PostgreSQL and SQLite; migrations; the batch
//!   transaction ([`store::WriteBatch`] of typed rows) with compare-and-set offsets and
//!   states; typed reads ([`Store::rows`]).
//! - [`query`]: the views read back: cases, a case's timeline (intervals, gaps, streams,
//!   tool tracks with their sampled speed), usage and motion totals, and the accounting of
//!   every frame ([`query::accounting`]).
//! - [`text`]: the views as aligned tables, CSV or JSON; [`time`] formats their times.
//! - [`svg`]: a case's timeline as an SVG picture.
//! - `error`: [`StoreError`].
//!
//! ```no_run
//! use orstream_record::{Store, query, text};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[derive(serde::Deserialize)] struct State { case_id: String }
//! # impl orstream_record::schema::DerivationState for State {
//! #     fn case_id(&self) -> &str { &self.case_id }
//! #     fn open_events(&self) -> Vec<orstream_record::schema::EventRow> { Vec::new() }
//! #     fn open_tracks(&self) -> Vec<orstream_record::schema::TrackRow> { Vec::new() }
//! # }
//! let mut store = Store::open("sqlite://record.db")?; // or "postgres://user:pass@host/db"
//! for case in query::cases::<State>(&mut store)? {
//!     // `State`: the sink's derivation state (`orstream_sink::derive::StreamState`).
//!     if let Some(timeline) = query::timeline::<State>(&mut store, &case.case_id)? {
//!         print!("{}", text::render_timeline(&timeline, text::Format::Table));
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod error;
pub mod query;
pub mod schema;
pub mod store;
pub mod svg;
pub mod text;
pub mod time;
pub mod value;

pub use error::StoreError;
pub use store::{BackendKind, Store};
pub use value::Value;
