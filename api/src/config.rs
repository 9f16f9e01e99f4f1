//! The API service's settings: where it listens, the record it reads, the tokens' file.
//! Read in layers as every service's (`ORSTREAM_API_<KEY>`; `ORSTREAM_API_STORE_FILE` reads a
//! connection string holding a password from a file).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The `<SERVICE>` of the API's `ORSTREAM_API_<KEY>` variables.
pub const SERVICE: &str = "api";

/// The API service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve the API on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The record: `sqlite://PATH` or `postgres://...` (the sink's store).
    #[serde(default = "default_store")]
    pub store: String,
    /// The tokens' file: `NAME ROLE ROOMS TOKEN` lines ([`crate::access`]); required.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9480))
}

fn default_store() -> String {
    "sqlite://demo-output/record.db".to_owned()
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            store: default_store(),
            tokens_file: None,
        }
    }
}

impl ApiConfig {
    /// Every problem at once, each naming its key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(self.store.starts_with("sqlite:")
            || self.store.starts_with("postgres://")
            || self.store.starts_with("postgresql://"))
        {
            problems.push(format!(
                "store: {:?} is not sqlite://PATH or postgres://...",
                orstream_record::store::redact(&self.store)
            ));
        }
        if self.tokens_file.is_none() {
            problems.push(
                "tokens_file: the API needs its tokens' file (it answers nobody without one)"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
