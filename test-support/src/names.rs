//! Names no other test uses: tests run in parallel, in several processes, against one broker
//! and one database that keep what earlier runs left.

/// `prefix`, `-` and a random v4 UUID (32 hex digits): unique across the processes and runs
/// sharing a broker without relying on the clock, and valid as a topic, group, id or file
/// name when `prefix` is.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// `prefix`, `_` and a random v4 UUID (32 lowercase hex digits): like [`unique`], but an
/// unquoted SQL identifier (a PostgreSQL schema, say) when `prefix` is one.
pub fn unique_identifier(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
