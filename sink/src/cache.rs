//! What the sink holds of the store between batches: the stored offsets (where each partition
//! resumes), the derivation state of each stream it has seen, and case starts. Preparing a
//! batch reads and changes only this copy; the store is touched before (loading what the batch
//! needs) and after (the transaction). Everything is dropped on a rebalance or a store conflict,
//! since another instance may have moved on, and read again from the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use orstream_bus::TopicPartition;
use orstream_record::StoreError;
use orstream_record::store::Store;

use crate::derive::StreamState;

/// A stream's state as cached between batches.
#[derive(Debug)]
pub(crate) struct Cached {
    /// The version in the store (0: not stored yet).
    pub(crate) version: i64,
    pub(crate) state: StreamState,
    /// Changed by the batch being prepared.
    pub(crate) dirty: bool,
}

impl Cached {
    /// A stream the store has no state for.
    pub(crate) fn new(stream_id: &str) -> Self {
        Self::stored(0, StreamState::new(stream_id))
    }

    fn stored(version: i64, state: StreamState) -> Self {
        Self {
            version,
            state,
            dirty: false,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// The store's offsets as last read or written: the next offset to read per partition.
    pub(crate) offsets: BTreeMap<TopicPartition, i64>,
    pub(crate) offsets_loaded: bool,
    pub(crate) states: HashMap<String, Cached>,
    /// Known case starts (capture time of the first frame).
    pub(crate) cases: HashMap<String, i64>,
}

impl Cache {
    /// Drops what another instance may have changed; offsets are read again before reading on.
    pub(crate) fn clear(&mut self) {
        self.states.clear();
        self.cases.clear();
        self.offsets_loaded = false;
    }

    /// Reads the stored offsets: where each partition resumes.
    pub(crate) fn load_offsets(&mut self, store: &mut Store) -> Result<(), StoreError> {
        self.offsets = store.offsets()?;
        self.offsets_loaded = true;
        Ok(())
    }

    /// Reads the states of `streams` and the starts of `cases` that are not held yet (a stream
    /// the store does not know starts afresh).
    pub(crate) fn load(
        &mut self,
        store: &mut Store,
        streams: &BTreeSet<String>,
        cases: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        for stream_id in streams {
            if self.states.contains_key(stream_id) {
                continue;
            }
            let cached = match store.load_state(stream_id)? {
                Some((version, state)) => Cached::stored(version, state),
                None => Cached::new(stream_id),
            };
            self.states.insert(stream_id.clone(), cached);
        }
        for case_id in cases {
            if let Some(start) = store.case_start(case_id)? {
                self.cases.insert(case_id.clone(), start);
            }
        }
        Ok(())
    }

    /// The batch that moved partitions to `next_offsets` and changed the dirty states is
    /// stored: this copy matches the store again.
    pub(crate) fn committed(&mut self, next_offsets: &BTreeMap<TopicPartition, i64>) {
        for (tp, next) in next_offsets {
            self.offsets.insert(tp.clone(), *next);
        }
        for cached in self.states.values_mut() {
            if cached.dirty {
                cached.version += 1;
                cached.dirty = false;
            }
        }
    }
}
