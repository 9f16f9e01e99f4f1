//! The SQLite backend (rusqlite with its bundled SQLite).

use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{ErrorCode, TransactionBehavior};

use super::{BackendKind, Connection, Sql, Value};
use crate::error::StoreError;

const BACKEND: &str = BackendKind::Sqlite.name();

pub(super) struct SqliteConnection {
    conn: rusqlite::Connection,
}

fn error(op: &str, e: &rusqlite::Error) -> StoreError {
    // Busy and locked (another process holds the write lock), I/O and a full disk can pass;
    // a bad statement or a constraint cannot.
    let retriable = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        )
    );
    StoreError::Database {
        backend: BACKEND,
        op: op.to_owned(),
        reason: e.to_string(),
        retriable,
    }
}

/// The file a `sqlite:` URL names, or None for an in-memory database.
fn path_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    if rest == ":memory:" || rest == "//:memory:" {
        return None;
    }
    Some(rest.strip_prefix("//").unwrap_or(rest))
}

impl SqliteConnection {
    pub(super) fn open(url: &str) -> Result<Self, StoreError> {
        let conn = match path_of(url) {
            Some(path) => rusqlite::Connection::open(path),
            None => rusqlite::Connection::open_in_memory(),
        }
        .map_err(|e| error("open", &e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| error("busy_timeout", &e))?;
        conn.set_prepared_statement_cache_capacity(64);
        // WAL: readers (`orstream record`) never block the sink. synchronous=FULL: a
        // committed batch, with its offsets, survives power loss too, not only a crash.
        if path_of(url).is_some() {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| error("journal_mode=WAL", &e))?;
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| error("synchronous=FULL", &e))?;
        Ok(Self { conn })
    }
}

/// `$N` placeholders (PostgreSQL) as `?N` (SQLite's numbered form).
fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

fn execute(conn: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
    let sql = translate(sql);
    let mut statement = conn
        .prepare_cached(&sql)
        .map_err(|e| error(&format!("prepare {sql}"), &e))?;
    statement
        .execute(rusqlite::params_from_iter(params))
        .map(|n| n as u64)
        .map_err(|e| error(&sql, &e))
}

fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Vec<Value>>, StoreError> {
    let sql = translate(sql);
    let mut statement = conn
        .prepare_cached(&sql)
        .map_err(|e| error(&format!("prepare {sql}"), &e))?;
    let columns = statement.column_count();
    let mut rows = statement
        .query(rusqlite::params_from_iter(params))
        .map_err(|e| error(&sql, &e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| error(&sql, &e))? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match row.get_ref(i).map_err(|e| error(&sql, &e))? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                ValueRef::Blob(v) => Value::Blob(v.to_vec()),
            });
        }
        out.push(values);
    }
    Ok(out)
}

struct SqliteSql<'a> {
    conn: &'a rusqlite::Connection,
}

impl Sql for SqliteSql<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        execute(self.conn, sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        query(self.conn, sql, params)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| error("migration", &e))
    }
}

impl Sql for SqliteConnection {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        execute(&self.conn, sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        query(&self.conn, sql, params)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        SqliteSql { conn: &self.conn }.batch(sql)
    }
}

impl Connection for SqliteConnection {
    fn transaction(
        &mut self,
        work: &mut dyn FnMut(&mut dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock up front, so a concurrent writer waits at BEGIN
        // (busy_timeout) instead of failing half-way through the batch.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| error("begin", &e))?;
        work(&mut SqliteSql { conn: &tx })?;
        tx.commit().map_err(|e| error("commit", &e))
    }

    fn autocommit(&mut self) -> &mut dyn Sql {
        self
    }

    fn is_broken(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_translated() {
        assert_eq!(
            translate("UPDATE t SET a = $1 WHERE b = $12 AND c = '$x'"),
            "UPDATE t SET a = ?1 WHERE b = ?12 AND c = '$x'"
        );
    }

    #[test]
    fn urls_name_files_or_memory() {
        assert_eq!(path_of("sqlite://record.db"), Some("record.db"));
        assert_eq!(path_of("sqlite:///var/lib/r.db"), Some("/var/lib/r.db"));
        assert_eq!(path_of("sqlite::memory:"), None);
    }
}
