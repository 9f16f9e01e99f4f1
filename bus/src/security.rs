//! How a Kafka client proves who it is and keeps its traffic private: `[kafka.security]` of
//! every service's configuration.
//!
//! - `protocol = "plaintext"` (the default, for a development stack): no encryption, no
//!   authentication;
//! - `protocol = "ssl"`: TLS; with `certificate` and `key`, mutual TLS (the broker maps the
//!   certificate's subject to the principal);
//! - `protocol = "sasl_ssl"`: TLS, and SASL (`SCRAM-SHA-512` by default) with `username` and
//!   `password`.
//!
//! SASL without TLS is not offered: the password and every frame would cross the network in
//! clear. The password and the key's password are [`Secret`]s: never shown by `Debug`, and
//! best given from a file (`password_file`, or the configuration's `_FILE` rule:
//! `ORSTREAM_<SERVICE>_KAFKA__SECURITY__PASSWORD_FILE`).

use std::fmt;
use std::path::PathBuf;

use orstream_shell::config::{ConfigError, read_secret};
use serde::{Deserialize, Serialize};

/// A value that must not show in logs or errors: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that hands it to librdkafka.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The client's security protocol (`security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// No encryption, no authentication.
    #[default]
    Plaintext,
    /// TLS; mutual TLS with a client certificate.
    Ssl,
    /// SASL inside TLS.
    SaslSsl,
}

/// The SASL mechanism (`sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// SCRAM with SHA-512: the password never crosses the network.
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// The password itself, inside TLS; for brokers whose users live elsewhere (LDAP).
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
        }
    }
}

/// `[kafka.security]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl` or `sasl_ssl`.
    pub protocol: Protocol,
    /// The CA certificates (PEM) the brokers' certificates must chain to (`ssl.ca.location`);
    /// none: the system's trust store.
    pub ca: Option<PathBuf>,
    /// The client's certificate (PEM), for mutual TLS (`ssl.certificate.location`).
    pub certificate: Option<PathBuf>,
    /// Its private key (PEM) (`ssl.key.location`).
    pub key: Option<PathBuf>,
    /// The key's password, when it is encrypted (`ssl.key.password`).
    pub key_password: Option<Secret>,
    /// Whether the broker's certificate must name the host connected to
    /// (`ssl.endpoint.identification.algorithm = https`). On by default; off only for brokers
    /// reached by an address their certificate does not carry.
    pub verify_hostname: bool,
    /// `SCRAM-SHA-512` (the default), `SCRAM-SHA-256` or `PLAIN`.
    pub sasl_mechanism: SaslMechanism,
    /// The SASL user (`sasl.username`): the service's principal.
    pub username: Option<String>,
    /// Its password (`sasl.password`).
    pub password: Option<Secret>,
    /// A file holding the password instead (its final line end dropped), read whenever a
    /// client is made: the password is then in no configuration file and no variable.
    pub password_file: Option<PathBuf>,
}

impl Default for KafkaSecurity {
    fn default() -> Self {
        Self {
            protocol: Protocol::Plaintext,
            ca: None,
            certificate: None,
            key: None,
            key_password: None,
            verify_hostname: true,
            sasl_mechanism: SaslMechanism::ScramSha512,
            username: None,
            password: None,
            password_file: None,
        }
    }
}

/// librdkafka properties that `[kafka.security]` sets: the pass-through map must not.
pub(crate) const SECURITY_KEYS: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.key.location",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
];

impl KafkaSecurity {
    /// Problems with these settings, each naming its key (`security.<key>`).
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let tls = self.protocol != Protocol::Plaintext;
        let sasl = self.protocol == Protocol::SaslSsl;
        if !tls {
            for (key, set) in [
                ("ca", self.ca.is_some()),
                ("certificate", self.certificate.is_some()),
                ("key", self.key.is_some()),
                ("key_password", self.key_password.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "security.{key}: set, but security.protocol is plaintext (no TLS); \
                         set protocol = \"ssl\" or \"sasl_ssl\""
                    ));
                }
            }
        }
        if self.certificate.is_some() != self.key.is_some() {
            problems.push(
                "security.certificate and security.key go together: a client certificate needs \
                 its key"
                    .to_owned(),
            );
        }
        if self.key_password.is_some() && self.key.is_none() {
            problems.push("security.key_password: set without security.key".to_owned());
        }
        for (key, path) in [
            ("ca", &self.ca),
            ("certificate", &self.certificate),
            ("key", &self.key),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                problems.push(format!(
                    "security.{key}: {} is not a readable file",
                    path.display()
                ));
            }
        }
        if sasl {
            if self.username.as_deref().is_none_or(|u| u.trim().is_empty()) {
                problems.push("security.username: required with protocol = \"sasl_ssl\"".into());
            }
            match (&self.password, &self.password_file) {
                (Some(_), Some(_)) => problems
                    .push("security.password and security.password_file: set one of them".into()),
                (None, None) => problems.push(
                    "security.password: required with protocol = \"sasl_ssl\" (or \
                     security.password_file)"
                        .into(),
                ),
                (Some(password), None) if password.expose().is_empty() => {
                    problems.push("security.password: empty".into());
                }
                (None, Some(path)) => match read_password(path) {
                    Ok(password) if password.expose().is_empty() => problems.push(format!(
                        "security.password_file: {} is empty",
                        path.display()
                    )),
                    Ok(_) => {}
                    Err(e) => problems.push(format!("security.password_file: {e}")),
                },
                _ => {}
            }
        } else {
            for (key, set) in [
                ("username", self.username.is_some()),
                ("password", self.password.is_some()),
                ("password_file", self.password_file.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "security.{key}: set, but security.protocol is not \"sasl_ssl\""
                    ));
                }
            }
        }
        for (key, value) in [
            ("username", self.username.as_deref()),
            ("password", self.password.as_ref().map(Secret::expose)),
            (
                "key_password",
                self.key_password.as_ref().map(Secret::expose),
            ),
        ] {
            if value.is_some_and(|v| v.contains('\0')) {
                problems.push(format!("security.{key}: holds a NUL byte"));
            }
        }
        problems
    }

    /// The librdkafka properties of these settings.
    pub(crate) fn properties(&self) -> Vec<(String, String)> {
        let mut props = Vec::new();
        let mut set = |k: &str, v: &str| props.push((k.to_owned(), v.to_owned()));
        match self.protocol {
            Protocol::Plaintext => {
                set("security.protocol", "plaintext");
                return props;
            }
            Protocol::Ssl => set("security.protocol", "ssl"),
            Protocol::SaslSsl => {
                set("security.protocol", "sasl_ssl");
                set("sasl.mechanism", self.sasl_mechanism.name());
                if let Some(user) = &self.username {
                    set("sasl.username", user);
                }
                // An unreadable file is reported by `problems` before any client is made.
                let from_file = self
                    .password_file
                    .as_deref()
                    .and_then(|path| read_password(path).ok());
                if let Some(password) = self.password.as_ref().or(from_file.as_ref()) {
                    set("sasl.password", password.expose());
                }
            }
        }
        set(
            "ssl.endpoint.identification.algorithm",
            if self.verify_hostname {
                "https"
            } else {
                "none"
            },
        );
        if let Some(ca) = &self.ca {
            set("ssl.ca.location", &ca.display().to_string());
        }
        if let Some(cert) = &self.certificate {
            set("ssl.certificate.location", &cert.display().to_string());
        }
        if let Some(key) = &self.key {
            set("ssl.key.location", &key.display().to_string());
        }
        if let Some(password) = &self.key_password {
            set("ssl.key.password", password.expose());
        }
        props
    }
}

/// The password in `path`, its final line end dropped (the configuration's `_FILE` rule).
fn read_password(path: &std::path::Path) -> Result<Secret, ConfigError> {
    read_secret(path).map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl() -> KafkaSecurity {
        KafkaSecurity {
            protocol: Protocol::SaslSsl,
            username: Some("infer".into()),
            password: Some(Secret::new("s3cret-pw")),
            ..KafkaSecurity::default()
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let security = KafkaSecurity {
            key_password: Some(Secret::new("key-pw")),
            ..sasl()
        };
        let shown = format!("{security:?} {}", Secret::new("x"));
        assert!(
            !shown.contains("s3cret-pw") && !shown.contains("key-pw"),
            "{shown}"
        );
        assert!(shown.contains("***"));
    }

    #[test]
    fn sasl_ssl_sets_scram_and_verifies_the_host() {
        let props = sasl().properties();
        let get = |k: &str| {
            props
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("infer"));
        assert_eq!(get("sasl.password"), Some("s3cret-pw"));
        assert_eq!(get("ssl.endpoint.identification.algorithm"), Some("https"));
        assert!(sasl().problems().is_empty(), "{:?}", sasl().problems());
    }

    #[test]
    fn incomplete_or_contradictory_settings_are_named() {
        let no_password = KafkaSecurity {
            password: None,
            ..sasl()
        };
        assert!(no_password.problems()[0].contains("security.password: required"));
        let plaintext_with_user = KafkaSecurity {
            protocol: Protocol::Plaintext,
            ..sasl()
        };
        let problems = plaintext_with_user.problems().join("\n");
        assert!(problems.contains("security.username: set"), "{problems}");
        let half_mtls = KafkaSecurity {
            protocol: Protocol::Ssl,
            certificate: Some("/no/such/cert.pem".into()),
            ..KafkaSecurity::default()
        };
        let problems = half_mtls.problems().join("\n");
        assert!(problems.contains("go together"), "{problems}");
        assert!(
            problems.contains("/no/such/cert.pem is not a readable file"),
            "{problems}"
        );
        let nul = KafkaSecurity {
            password: Some(Secret::new("a\0b")),
            ..sasl()
        };
        assert!(nul.problems().join("\n").contains("NUL"));
    }

    #[test]
    fn the_password_comes_from_a_file() {
        let path = std::env::temp_dir().join(format!("orstream-kafka-pw-{}", std::process::id()));
        std::fs::write(&path, "from-file-pw\n").unwrap();
        let security = KafkaSecurity {
            password: None,
            password_file: Some(path.clone()),
            ..sasl()
        };
        assert!(security.problems().is_empty(), "{:?}", security.problems());
        let props = security.properties();
        assert!(props.contains(&("sasl.password".to_owned(), "from-file-pw".to_owned())));
        let both = KafkaSecurity {
            password_file: Some(path.clone()),
            ..sasl()
        };
        assert!(both.problems()[0].contains("set one of them"));
        std::fs::remove_file(&path).unwrap();
        let problems = security.problems().join("\n");
        assert!(problems.contains("cannot read"), "{problems}");
    }

    #[test]
    fn reads_from_toml() {
        let security: KafkaSecurity = toml::from_str(
            r#"
            protocol = "sasl_ssl"
            sasl_mechanism = "SCRAM-SHA-256"
            username = "sink"
            password = "pw"
            ca = "/etc/ca.crt"
            verify_hostname = false
            "#,
        )
        .unwrap();
        assert_eq!(security.sasl_mechanism, SaslMechanism::ScramSha256);
        assert!(!security.verify_hostname);
        assert!(toml::from_str::<KafkaSecurity>("protocol = \"sasl_plaintext\"").is_err());
    }
}
