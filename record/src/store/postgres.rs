//! The PostgreSQL backend (the `postgres` crate: a blocking client over tokio-postgres).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, GenericClient, Row, Statement};

use super::pg_tls::TlsSettings;
use super::{BackendKind, Connection, Sql, Value};
use crate::error::StoreError;

const BACKEND: &str = BackendKind::Postgres.name();

/// tokio-postgres's keepalive idle time when the URL sets none (2 hours).
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Longest a statement or a lock wait may take on the server, in milliseconds, unless the
/// URL's `options` set `statement_timeout`. Generous: the sink's largest transaction takes
/// milliseconds.
const STATEMENT_TIMEOUT_MS: u64 = 30_000;

/// Bounds the statement cache; the sink uses a few dozen distinct statements.
const CACHE_CAP: usize = 256;

pub(super) struct PgConnection {
    client: Client,
    cache: HashMap<String, Statement>,
}

/// TLS failures that are the configuration's, not the network's: trying again fails the same
/// way (a server certificate no trusted CA signed, or naming another host; a server without
/// TLS where TLS is required).
const TLS_REFUSALS: [&str; 3] = [
    "certificate verify failed",
    "server does not support TLS",
    "no hostname provided for TLS",
];

fn error(op: &str, e: &postgres::Error) -> StoreError {
    // Connection loss, server shutdown, resource exhaustion, timeouts and serialization
    // failures pass;
    // anything else (a bad statement, a constraint, a TLS refusal) will fail the same way again.
    // The whole chain: tokio-postgres's own text names only the step ("error performing TLS
    // handshake"), its source says what went wrong ("certificate verify failed").
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    let refused = TLS_REFUSALS.iter().any(|r| text.contains(r));
    let retriable = !refused
        && (e.is_closed()
            || e.code().is_none_or(|code| {
                let c = code.code();
                c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P")
                || c == "40001"
                || c == "40P01"
                // statement_timeout / lock_timeout: the server was slow, not the statement wrong
                || c == "57014"
                || c == "55P03"
            }));
    StoreError::Database {
        backend: BACKEND,
        op: op.to_owned(),
        reason: e.as_db_error().map_or(text, ToString::to_string),
        retriable,
    }
}

impl PgConnection {
    pub(super) fn connect(url: &str) -> Result<Self, StoreError> {
        let settings_error = |op: &str, reason: String| StoreError::Database {
            backend: BACKEND,
            op: op.to_owned(),
            reason,
            retriable: false,
        };
        let (tls, url) = TlsSettings::take(url).map_err(|e| settings_error("parse URL", e))?;
        let mut config =
            Config::from_str(&url).map_err(|e| settings_error("parse URL", e.to_string()))?;
        config.ssl_mode(tls.mode.ssl_mode());
        let connector = tls
            .connector()
            .map_err(|e| settings_error("TLS settings", e))?;
        if config.get_connect_timeout().is_none() {
            // A server that is down must show as "not ready" quickly, not after the OS's
            // TCP timeout.
            config.connect_timeout(Duration::from_secs(5));
        }
        // A server that vanishes (a host down, a network cut) is noticed by the connection
        // itself: keepalive probes after 10 s of silence, and data unacknowledged for 30 s
        // ends it. A server that is there but does not answer (paused, overloaded) is the
        // caller's to notice (the sink's dependency watch). The URL's own settings win.
        if config.get_keepalives_idle() == DEFAULT_KEEPALIVES_IDLE {
            config
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(10))
                .keepalives_interval(Duration::from_secs(5))
                .keepalives_retries(3);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        // A statement that runs away on the server (a lock wait behind another session) ends
        // with an error the sink retries, instead of holding the batch for ever.
        if config
            .get_options()
            .is_none_or(|o| !o.contains("statement_timeout"))
        {
            let options = config.get_options().unwrap_or_default();
            let options = format!(
                "{options} -c statement_timeout={STATEMENT_TIMEOUT_MS} \
                 -c lock_timeout={STATEMENT_TIMEOUT_MS}"
            );
            config.options(options.trim());
        }
        if config.get_application_name().is_none() {
            config.application_name("orstream-sink");
        }
        let client = config
            .connect(connector)
            .map_err(|e| error("connect", &e))?;
        Ok(Self {
            client,
            cache: HashMap::new(),
        })
    }
}

struct PgSql<'a, C: GenericClient> {
    client: &'a mut C,
    cache: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> PgSql<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.cache.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .prepare(sql)
            .map_err(|e| error(&format!("prepare {}", head(sql)), &e))?;
        if self.cache.len() >= CACHE_CAP {
            self.cache.clear();
        }
        self.cache.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

fn head(sql: &str) -> &str {
    let end = sql.char_indices().nth(60).map_or(sql.len(), |(i, _)| i);
    &sql[..end]
}

impl<C: GenericClient> Sql for PgSql<'_, C> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.client
            .execute(&statement, &refs)
            .map_err(|e| error(head(sql), &e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        let statement = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self
            .client
            .query(&statement, &refs)
            .map_err(|e| error(head(sql), &e))?;
        rows.iter().map(|r| read_row(r, sql)).collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.client
            .batch_execute(sql)
            .map_err(|e| error("migration", &e))
    }
}

fn read_row(row: &Row, sql: &str) -> Result<Vec<Value>, StoreError> {
    let read = |i: usize, ty: &Type| -> Result<Value, postgres::Error> {
        Ok(match *ty {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)?
                .map_or(Value::Null, Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map_or(Value::Null, |v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map_or(Value::Null, |v| Value::Int(v.into())),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)?
                .map_or(Value::Null, Value::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map_or(Value::Null, |v| Value::Real(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map_or(Value::Null, |v| Value::Int(v.into())),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)?
                .map_or(Value::Null, Value::Blob),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => row
                .try_get::<_, Option<String>>(i)?
                .map_or(Value::Null, Value::Text),
            // Nothing the sink reads has another type (void from pg_advisory_xact_lock).
            _ => Value::Null,
        })
    };
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, c)| read(i, c.type_()).map_err(|e| error(&format!("read {}", head(sql)), &e)))
        .collect()
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Text(v) => v.to_sql(ty, out),
            Value::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // Checked per value in to_sql: the schema uses BIGINT, DOUBLE PRECISION, TEXT, BYTEA.
        true
    }

    to_sql_checked!();
}

impl Connection for PgConnection {
    fn transaction(
        &mut self,
        work: &mut dyn FnMut(&mut dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.client.transaction().map_err(|e| error("begin", &e))?;
        let result = work(&mut PgSql {
            client: &mut tx,
            cache: &mut self.cache,
        });
        match result {
            Ok(()) => tx.commit().map_err(|e| error("commit", &e)),
            Err(e) => {
                // Dropping the transaction rolls it back; say so explicitly to surface errors.
                if let Err(rollback) = tx.rollback() {
                    tracing::debug!(error = %rollback, "rollback after a failed transaction");
                }
                Err(e)
            }
        }
    }

    fn autocommit(&mut self) -> &mut dyn Sql {
        // A PgSql borrowing both fields cannot be returned by reference; keep one in self.
        self
    }

    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }
}

impl Sql for PgConnection {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        PgSql {
            client: &mut self.client,
            cache: &mut self.cache,
        }
        .execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        PgSql {
            client: &mut self.client,
            cache: &mut self.cache,
        }
        .query(sql, params)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        PgSql {
            client: &mut self.client,
            cache: &mut self.cache,
        }
        .batch(sql)
    }
}
