//! One way to configure every service: defaults, then the TOML file, then the environment,
//! then the command line.
//!
//! The naming rule, the same for every key of every service: the key's path in the file,
//! upper-cased, tables joined by `__`, after `ORSTREAM_<SERVICE>_`. `store` of the sink is
//! `ORSTREAM_SINK_STORE`; `bootstrap_servers` in the sink's `[kafka]` table is
//! `ORSTREAM_SINK_KAFKA__BOOTSTRAP_SERVERS`; `log_filter` in infer's `[telemetry]` table is
//! `ORSTREAM_INFER_TELEMETRY__LOG_FILTER` ([`variable`] spells it). A key whose value is a
//! secret (a password, a connection string with one) can be read from a file instead:
//! `ORSTREAM_SINK_STORE_FILE=/run/secrets/store` reads the file and drops its final line end; an
//! empty `_FILE` value unsets the key, as an empty value does.
//! `ORSTREAM_<SERVICE>_CONFIG` names the file itself and is not a key.
//!
//! The environment gives strings; each is read as the type its key wants (`500` for a number,
//! `true` for a flag, `["a", "b"]` for a list, `5s` for a duration that takes one), and an empty
//! value unsets an optional key. A quoted value in the file is read the same way, so a value
//! means one thing wherever it is written.
//! Flags are applied by each command to the typed configuration [`Layers::extract`] gives, so a
//! flag always wins. Every error names where the bad value came from: the file or the variable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use toml::Value;

/// First word of every variable.
pub const PREFIX: &str = "ORSTREAM";
/// Joins nested keys in a variable's name.
pub const NESTING: &str = "__";
/// Ends a variable that names a file holding the value.
pub const FILE_SUFFIX: &str = "_FILE";
/// Key after `ORSTREAM_<SERVICE>_` that names the configuration file, not a key in it.
pub const CONFIG_VARIABLE: &str = "CONFIG";

/// The variable that sets `key` (a dotted path: `kafka.bootstrap_servers`) of `service`.
pub fn variable(service: &str, key: &str) -> String {
    format!(
        "{}{}",
        prefix(service),
        key.split('.')
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join(NESTING)
    )
}

/// `ORSTREAM_<SERVICE>_`: every variable of `service` starts so.
pub fn prefix(service: &str) -> String {
    format!("{PREFIX}_{}_", service.to_ascii_uppercase())
}

/// What went wrong, naming where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the value at fault came from: the file, a variable, or the layers as a whole
    /// (a missing or unknown key may come from any of them).
    pub origin: String,
    /// The dotted path of the key at fault; empty when the fault is not one key's.
    pub key: String,
    /// What is wrong, without the origin and key (the `Display` form puts those first).
    pub message: String,
}

impl ConfigError {
    fn new(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            key: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            origin,
            key,
            message,
        } = self;
        if key.is_empty() {
            write!(f, "{origin}: {message}")
        } else {
            write!(f, "{origin}: {key}: {message}")
        }
    }
}

impl std::error::Error for ConfigError {}

/// A service's configuration before it is typed: the file's table with the environment laid
/// over it. [`Layers::split`] sets a table apart for another reader (`[telemetry]`, `[kafka]`),
/// [`Layers::extract`] types what is left.
#[derive(Debug, Clone)]
pub struct Layers {
    service: String,
    file: Option<PathBuf>,
    table: toml::Table,
    /// Dotted key → the variable that set it.
    variables: BTreeMap<String, String>,
    /// Where this part sits in the whole (`telemetry`), for messages.
    base: String,
}

impl Layers {
    /// The file at `file` (when given) under the process environment's variables for `service`.
    pub fn load(service: &str, file: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => Some((path, read(path)?)),
            None => None,
        };
        let mut vars = Vec::new();
        let prefix = prefix(service);
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(&prefix) {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| ConfigError::new(name, "the value is not UTF-8"))?;
            vars.push((name.to_owned(), value));
        }
        Self::from_sources(
            service,
            text.as_ref().map(|(path, text)| (*path, text.as_str())),
            vars,
        )
    }

    /// The file's text (with the path it came from) under `vars`; variables not of `service`
    /// are ignored. `_FILE` variables are read from disk.
    pub fn from_sources(
        service: &str,
        file: Option<(&Path, &str)>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let table = match file {
            Some((path, text)) => toml::from_str(text).map_err(|e| {
                ConfigError::new(path.display().to_string(), syntax_error(text, &e))
            })?,
            None => toml::Table::new(),
        };
        let mut layers = Self {
            service: service.to_owned(),
            file: file.map(|(path, _)| path.to_owned()),
            table,
            variables: BTreeMap::new(),
            base: String::new(),
        };
        let prefix = prefix(service);
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .collect();
        // A stable order, so a key set twice (`X` and `X_FILE`) fails the same way every time.
        vars.sort();
        for (name, value) in vars {
            let rest = &name[prefix.len()..];
            if rest == CONFIG_VARIABLE {
                continue;
            }
            let (rest, value) = match rest.strip_suffix(FILE_SUFFIX) {
                // No file: the key is unset, as an empty value unsets it.
                Some(rest) if value.is_empty() => (rest, value),
                Some(rest) => (rest, read_secret(Path::new(&value))?),
                None => (rest, value),
            };
            layers.set_variable(&name, rest, value)?;
        }
        Ok(layers)
    }

    fn set_variable(&mut self, name: &str, rest: &str, value: String) -> Result<(), ConfigError> {
        let path: Vec<String> = rest.split(NESTING).map(str::to_ascii_lowercase).collect();
        let problem = |message: &str| ConfigError::new(name, message);
        if path.iter().any(String::is_empty) {
            return Err(problem("names an empty key"));
        }
        let key = path.join(".");
        if let Some(other) = self.variables.get(&key) {
            return Err(problem(&format!("sets `{key}`, which {other} sets too")));
        }
        let Some((last, tables)) = path.split_last() else {
            return Err(problem("names no key"));
        };
        let mut table = &mut self.table;
        for part in tables {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| Value::Table(toml::Table::new()));
            table = match entry {
                Value::Table(inner) => inner,
                _ => return Err(problem(&format!("`{part}` is not a table"))),
            };
        }
        if matches!(table.get(last), Some(Value::Table(_))) {
            return Err(problem(&format!(
                "`{key}` is a table; set its keys ({name}{NESTING}<KEY>)"
            )));
        }
        table.insert(last.clone(), Value::String(value));
        self.variables.insert(key, name.to_owned());
        Ok(())
    }

    /// Takes the table `key` out (empty when absent), with the variables that set it, so the
    /// rest can be typed by a configuration that refuses unknown keys.
    pub fn split(&mut self, key: &str) -> Layers {
        let table = match self.table.remove(key) {
            Some(Value::Table(table)) => table,
            // Not a table: left for extract to report, as the file gave it.
            Some(other) => {
                self.table.insert(key.to_owned(), other);
                toml::Table::new()
            }
            None => toml::Table::new(),
        };
        let inner = format!("{key}.");
        let (moved, kept) = std::mem::take(&mut self.variables)
            .into_iter()
            .partition(|(k, _)| k.starts_with(&inner));
        self.variables = kept;
        Layers {
            service: self.service.clone(),
            file: self.file.clone(),
            table,
            variables: moved
                .into_iter()
                .map(|(k, v): (String, String)| (k[inner.len()..].to_owned(), v))
                .collect(),
            base: join(&self.base, key),
        }
    }

    /// Sets `key` (top level) to `value` where no layer set it.
    pub fn default_value(&mut self, key: &str, value: impl Into<Value>) {
        self.table
            .entry(key.to_owned())
            .or_insert_with(|| value.into());
    }

    /// Whether no layer set anything here.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The variables applied, by name.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.values().map(String::as_str)
    }

    /// The layers typed as `T`; keys no layer set take `T`'s serde defaults.
    pub fn extract<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let value = Lenient(Value::Table(self.table.clone()));
        serde_path_to_error::deserialize(value).map_err(|error| {
            let key = error.path().to_string();
            let key = if key == "." { String::new() } else { key };
            ConfigError {
                origin: self.origin(&key),
                key: join(&self.base, &key),
                message: error.into_inner().message().trim().to_owned(),
            }
        })
    }

    /// Where the value at `key` came from: its variable, else the file, else every variable
    /// applied (a missing or unknown key may be any of them).
    fn origin(&self, key: &str) -> String {
        if let Some(name) = self.variables.get(key) {
            return name.clone();
        }
        let service = &self.service;
        let mut parts = Vec::new();
        if let Some(path) = &self.file {
            parts.push(path.display().to_string());
        }
        if !self.variables.is_empty() {
            parts.push(self.variables().collect::<Vec<_>>().join(", "));
        }
        if parts.is_empty() {
            format!("the {service} configuration")
        } else {
            format!("the {service} configuration ({})", parts.join("; "))
        }
    }
}

/// `base.key`, either part possibly empty.
fn join(base: &str, key: &str) -> String {
    match (base.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}.{key}"),
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))
}

/// A secret file's content without its final line end (editors and `echo` add one): the
/// `_FILE` rule, for a command that takes a secret from a file outside the layers too.
pub fn read_secret(path: &Path) -> Result<String, ConfigError> {
    let text = read(path)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

/// Reads a TOML value as the type asked for, where a variable gave a string: the same value a
/// file would have given, written as text.
struct Lenient(Value);

type Error = toml::de::Error;

/// A TOML syntax error as its place (line and column) and what is wrong there, without the
/// line itself, which may hold a password.
fn syntax_error(text: &str, error: &Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

impl Lenient {
    fn text(&self) -> Option<&str> {
        match &self.0 {
            Value::String(s) => Some(s.trim()),
            _ => None,
        }
    }

    fn not_a(kind: &str, text: &str) -> Error {
        de::Error::custom(format!("`{text}` is not {kind}"))
    }
}

macro_rules! lenient_number {
    ($($method:ident => $parse:ty, $visit:ident, $kind:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.text() {
                Some(text) => match text.parse::<$parse>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(Self::not_a($kind, text)),
                },
                None => self.0.$method(visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Lenient {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Table(table) => visitor.visit_map(Entries {
                entries: table.into_iter(),
                value: None,
            }),
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.text() {
            Some("true" | "1") => visitor.visit_bool(true),
            Some("false" | "0") => visitor.visit_bool(false),
            Some(text) => Err(Self::not_a("true or false", text)),
            None => self.0.deserialize_bool(visitor),
        }
    }

    lenient_number! {
        deserialize_i8 => i64, visit_i64, "an integer";
        deserialize_i16 => i64, visit_i64, "an integer";
        deserialize_i32 => i64, visit_i64, "an integer";
        deserialize_i64 => i64, visit_i64, "an integer";
        deserialize_u8 => u64, visit_u64, "a whole number";
        deserialize_u16 => u64, visit_u64, "a whole number";
        deserialize_u32 => u64, visit_u64, "a whole number";
        deserialize_u64 => u64, visit_u64, "a whole number";
        deserialize_f32 => f64, visit_f64, "a number";
        deserialize_f64 => f64, visit_f64, "a number";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.text() {
            Some("") => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.text() {
            Some(text) => {
                let parsed: toml::Table = toml::from_str(&format!("v = {text}"))
                    .map_err(|_| Self::not_a("a list such as [\"a\", \"b\"]", text))?;
                match parsed.get("v") {
                    Some(Value::Array(items)) => {
                        visitor.visit_seq(Items(items.clone().into_iter()))
                    }
                    _ => Err(Self::not_a("a list such as [\"a\", \"b\"]", text)),
                }
            }
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct map
        struct identifier ignored_any
    }
}

/// A table's entries, each value read leniently.
struct Entries {
    entries: toml::map::IntoIter<String, Value>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("a value without its key"))?;
        seed.deserialize(Lenient(value))
    }
}

/// A list's items, each read leniently.
struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        self.0
            .next()
            .map(|value| seed.deserialize(Lenient(value)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Service {
        store: String,
        port: u16,
        ratio: f64,
        enabled: bool,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        password: Option<String>,
        endpoint: Option<String>,
        topics: Vec<String>,
        mode: Mode,
        kafka: Kafka,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        #[default]
        Live,
        Archive,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Kafka {
        bootstrap_servers: String,
        librdkafka: BTreeMap<String, String>,
    }

    impl Default for Service {
        fn default() -> Self {
            Self {
                store: "sqlite://record.db".into(),
                port: 9464,
                ratio: 0.1,
                enabled: true,
                timeout: Duration::from_secs(5),
                password: None,
                endpoint: Some("http://collector:4318".into()),
                topics: vec!["or.frames.v1".into()],
                mode: Mode::Live,
                kafka: Kafka::default(),
            }
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> Option<(&'static Path, &str)> {
        Some((Path::new("sink.toml"), text))
    }

    #[test]
    fn the_rule_spells_every_key_the_same_way() {
        assert_eq!(variable("sink", "store"), "ORSTREAM_SINK_STORE");
        assert_eq!(
            variable("sink", "kafka.bootstrap_servers"),
            "ORSTREAM_SINK_KAFKA__BOOTSTRAP_SERVERS"
        );
        assert_eq!(
            variable("infer", "telemetry.log_filter"),
            "ORSTREAM_INFER_TELEMETRY__LOG_FILTER"
        );
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        let layers = Layers::from_sources("sink", None, vars(&[])).unwrap();
        assert!(layers.is_empty());
        assert_eq!(layers.extract::<Service>().unwrap(), Service::default());
    }

    #[test]
    fn variables_replace_the_file_and_are_read_as_their_keys_types() {
        let layers = Layers::from_sources(
            "sink",
            file("store = \"postgres://db/record\"\nport = 1\n[kafka]\nbootstrap_servers = \"k:1\"\n"),
            vars(&[
                ("ORSTREAM_SINK_PORT", "9000"),
                ("ORSTREAM_SINK_RATIO", " 0.5 "),
                ("ORSTREAM_SINK_ENABLED", "false"),
                ("ORSTREAM_SINK_TIMEOUT", "250ms"),
                // Digits where a string is wanted stay a string.
                ("ORSTREAM_SINK_PASSWORD", "0123"),
                ("ORSTREAM_SINK_ENDPOINT", ""),
                ("ORSTREAM_SINK_TOPICS", "[\"a\", \"b\"]"),
                ("ORSTREAM_SINK_MODE", "archive"),
                ("ORSTREAM_SINK_KAFKA__BOOTSTRAP_SERVERS", "broker:9092"),
                // Other services' variables and the file's own are not keys.
                ("ORSTREAM_INFER_PORT", "x"),
                ("ORSTREAM_SINK_CONFIG", "sink.toml"),
                ("ORSTREAM_KAFKA_BOOTSTRAP", "x"),
            ]),
        )
        .unwrap();
        let service: Service = layers.extract().unwrap();
        assert_eq!(
            service,
            Service {
                store: "postgres://db/record".into(),
                port: 9000,
                ratio: 0.5,
                enabled: false,
                timeout: Duration::from_millis(250),
                password: Some("0123".into()),
                endpoint: None,
                topics: vec!["a".into(), "b".into()],
                mode: Mode::Archive,
                kafka: Kafka {
                    bootstrap_servers: "broker:9092".into(),
                    librdkafka: BTreeMap::new(),
                },
            }
        );
    }

    #[test]
    fn a_secret_comes_from_the_file_its_variable_names() {
        let path = std::env::temp_dir().join(format!(
            "orstream-secret-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, "postgres://u:p@db/record\n").unwrap();
        let layers = Layers::from_sources(
            "sink",
            None,
            vars(&[("ORSTREAM_SINK_STORE_FILE", path.to_str().unwrap())]),
        );
        std::fs::remove_file(&path).unwrap();
        let service: Service = layers.unwrap().extract().unwrap();
        assert_eq!(service.store, "postgres://u:p@db/record");

        let missing = Layers::from_sources(
            "sink",
            None,
            vars(&[("ORSTREAM_SINK_STORE_FILE", "/nonexistent/secret")]),
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/secret"),
            "{missing}"
        );

        // An empty path unsets the key, as an empty value does.
        let unset = Layers::from_sources(
            "sink",
            file("password = \"from-the-file\""),
            vars(&[("ORSTREAM_SINK_PASSWORD_FILE", "")]),
        );
        let service: Service = unset.unwrap().extract().unwrap();
        assert_eq!(service.password, None);

        let twice = Layers::from_sources(
            "sink",
            None,
            vars(&[
                ("ORSTREAM_SINK_PORT", "1"),
                ("ORSTREAM_SINK_PORT_FILE", "/dev/null"),
            ]),
        )
        .unwrap_err();
        assert!(twice.to_string().contains("ORSTREAM_SINK_PORT"), "{twice}");
    }

    #[test]
    fn errors_name_the_variable_or_the_file() {
        let bad = Layers::from_sources("sink", None, vars(&[("ORSTREAM_SINK_PORT", "high")]))
            .unwrap()
            .extract::<Service>()
            .unwrap_err();
        assert_eq!(
            bad.to_string(),
            "ORSTREAM_SINK_PORT: port: `high` is not a whole number"
        );
        let range = Layers::from_sources("sink", None, vars(&[("ORSTREAM_SINK_PORT", "70000")]))
            .unwrap()
            .extract::<Service>()
            .unwrap_err();
        assert!(
            range.to_string().starts_with("ORSTREAM_SINK_PORT: port:"),
            "{range}"
        );

        let unknown = Layers::from_sources("sink", None, vars(&[("ORSTREAM_SINK_STOER", "x")]))
            .unwrap()
            .extract::<Service>()
            .unwrap_err();
        let text = unknown.to_string();
        assert!(
            text.contains("ORSTREAM_SINK_STOER") && text.contains("stoer"),
            "{text}"
        );

        let quoted = Layers::from_sources("sink", file("port = \"9000\""), vars(&[]))
            .unwrap()
            .extract::<Service>()
            .unwrap();
        assert_eq!(quoted.port, 9000);
        let typed = Layers::from_sources("sink", file("port = true"), vars(&[]))
            .unwrap()
            .extract::<Service>()
            .unwrap_err();
        let text = typed.to_string();
        assert!(
            text.contains("sink.toml") && text.contains("port"),
            "{text}"
        );

        let table = Layers::from_sources("sink", None, vars(&[("ORSTREAM_SINK_KAFKA", "x")]))
            .unwrap()
            .extract::<Service>()
            .unwrap_err();
        assert!(table.to_string().contains("ORSTREAM_SINK_KAFKA"), "{table}");
        let into_table = Layers::from_sources(
            "sink",
            file("[kafka]\nbootstrap_servers = \"k:1\""),
            vars(&[("ORSTREAM_SINK_KAFKA", "x")]),
        )
        .unwrap_err();
        assert_eq!(into_table.origin, "ORSTREAM_SINK_KAFKA");

        let syntax = Layers::from_sources("sink", file("port = "), vars(&[])).unwrap_err();
        assert_eq!(syntax.origin, "sink.toml");

        // The line in error may hold a secret: its place is given, never its text.
        let secret = Layers::from_sources(
            "sink",
            file("port = 1\nstore = \"postgres://u:hunter2@h/db\n"),
            vars(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(!secret.contains("hunter2"), "{secret}");
        assert!(secret.contains("line 2"), "{secret}");
    }

    #[test]
    fn a_table_set_apart_takes_its_variables_with_it() {
        let mut layers = Layers::from_sources(
            "sink",
            file("store = \"s\"\n[telemetry]\nlog_filter = \"info\"\n"),
            vars(&[("ORSTREAM_SINK_TELEMETRY__SAMPLING_RATIO", "x")]),
        )
        .unwrap();
        let mut telemetry = layers.split("telemetry");
        telemetry.default_value("service_name", "orstream-sink");
        let service: Service = layers.extract().unwrap();
        assert_eq!(service.store, "s");

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Telemetry {
            service_name: String,
            log_filter: String,
            sampling_ratio: f64,
        }
        let error = telemetry.extract::<Telemetry>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "ORSTREAM_SINK_TELEMETRY__SAMPLING_RATIO: telemetry.sampling_ratio: `x` is not a number"
        );
        let mut telemetry = Layers::from_sources(
            "sink",
            file("[telemetry]\nlog_filter = \"info\"\n"),
            vars(&[("ORSTREAM_SINK_TELEMETRY__SAMPLING_RATIO", "0.25")]),
        )
        .unwrap()
        .split("telemetry");
        telemetry.default_value("service_name", "orstream-sink");
        let telemetry: Telemetry = telemetry.extract().unwrap();
        assert_eq!(telemetry.service_name, "orstream-sink");
        assert_eq!(telemetry.log_filter, "info");
        assert_eq!(telemetry.sampling_ratio, 0.25);
    }

    #[test]
    fn librdkafka_properties_keep_their_dotted_names() {
        let layers = Layers::from_sources(
            "sink",
            file("[kafka.librdkafka]\n\"socket.timeout.ms\" = \"5000\"\n"),
            vars(&[]),
        )
        .unwrap();
        let service: Service = layers.extract().unwrap();
        assert_eq!(
            service
                .kafka
                .librdkafka
                .get("socket.timeout.ms")
                .map(String::as_str),
            Some("5000")
        );
    }
}
