//! Names no other test uses: tests run in parallel, in several processes, against one broker
//! and one database that keep what earlier runs left.

/// `prefix`, `-` and a random v4 UUID (32 hex digits): unique across the processes and runs
/// sharing a broker without relying on the clock, and valid as a topic, group, id or file
/// name when `prefix` is.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
