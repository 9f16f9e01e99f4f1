//! Stores no other test sees, so tests run in parallel: a fresh PostgreSQL schema, or a fresh
//! SQLite file, dropped with the value.
//!
//! PostgreSQL is found through `$ORSTREAM_POSTGRES_URL` (default [`DEFAULT_POSTGRES_URL`], the
//! project's local cluster). When it does not answer, [`isolated`] fails with a message that
//! says so: tests that need it fail, they never pass silently.

use std::time::Duration;

use orstream_record::StoreError;
use orstream_record::store::{BackendKind, Store};

use crate::names::{unique, unique_identifier};

/// The project's local test database (`scripts/postgres.sh url`).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://orstream:orstream@127.0.0.1:55432/orstream_test";

/// `$ORSTREAM_POSTGRES_URL`, or [`DEFAULT_POSTGRES_URL`].
pub fn postgres_url() -> String {
    std::env::var("ORSTREAM_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A store no other test sees; dropped (schema or file removed) when this value is.
#[derive(Debug)]
pub struct IsolatedStore {
    url: String,
    kind: BackendKind,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Schema { base_url: String, schema: String },
    File(std::path::PathBuf),
}

impl IsolatedStore {
    /// The store's URL (for a child process or a second connection).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Opens a connection to it.
    pub fn open(&self) -> Result<Store, StoreError> {
        Store::open(&self.url)
    }
}

impl Drop for IsolatedStore {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Schema { base_url, schema } => {
                if let Ok(mut client) = postgres::Client::connect(base_url, postgres::NoTls) {
                    let _ =
                        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                }
            }
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

/// A fresh, empty store of `kind`: a new schema in the PostgreSQL database of
/// [`postgres_url`], or a new SQLite file in the temporary directory. The error says what to
/// start when PostgreSQL does not answer.
pub fn isolated(kind: BackendKind) -> Result<IsolatedStore, String> {
    match kind {
        BackendKind::Sqlite => {
            let path = std::env::temp_dir().join(format!("{}.db", unique("orstream-sink")));
            Ok(IsolatedStore {
                url: format!("sqlite://{}", path.display()),
                kind,
                cleanup: Cleanup::File(path),
            })
        }
        BackendKind::Postgres => {
            let base_url = postgres_url();
            let mut config: postgres::Config = base_url
                .parse()
                .map_err(|e| format!("ORSTREAM_POSTGRES_URL is not a PostgreSQL URL: {e}"))?;
            config.connect_timeout(Duration::from_secs(3));
            let mut client = config.connect(postgres::NoTls).map_err(|e| {
                format!(
                    "no PostgreSQL answers at {} ({e}): run `scripts/postgres.sh start`",
                    orstream_record::store::redact(&base_url)
                )
            })?;
            let schema = unique_identifier("t");
            client
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .map_err(|e| format!("creating schema {schema}: {e}"))?;
            let separator = if base_url.contains('?') { '&' } else { '?' };
            Ok(IsolatedStore {
                url: format!("{base_url}{separator}options=-csearch_path%3D{schema}"),
                kind,
                cleanup: Cleanup::Schema { base_url, schema },
            })
        }
    }
}
