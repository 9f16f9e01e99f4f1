//! TLS to PostgreSQL, set in the store's URL with libpq's parameters:
//!
//! - `sslmode`: `disable` (never), `prefer` (the default: TLS when the server offers it, its
//!   certificate unchecked), `require` (TLS or no connection; the certificate is checked only
//!   when `sslrootcert` is given, as libpq does), `verify-ca` (the certificate must chain to a
//!   trusted CA), `verify-full` (that, and it must name the host connected to);
//! - `sslrootcert`: the file of the CA certificates to trust (PEM); without it, the system's
//!   trust store;
//! - `sslcert` and `sslkey`: a client certificate (PEM) and its key, for servers that ask for
//!   one (`cert` authentication, or `clientcert=verify-full`).
//!
//! tokio-postgres reads only `sslmode` (and not the verifying modes), so these four are taken
//! out of the URL here and turned into an OpenSSL connector.

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres::config::SslMode;
use postgres_openssl::MakeTlsConnector;

/// How much the connection insists on TLS and checks the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            // `allow` (plaintext first) is not offered: nothing should fall back to plaintext.
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ));
            }
        })
    }

    /// tokio-postgres's own setting: whether TLS is tried, and required.
    pub(super) fn ssl_mode(self) -> SslMode {
        match self {
            Self::Disable => SslMode::Disable,
            Self::Prefer => SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => SslMode::Require,
        }
    }
}

/// The URL's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsSettings {
    pub mode: TlsMode,
    pub root_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The parameters read here.
const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl TlsSettings {
    /// Takes the TLS parameters out of `url` (a `postgres://` URL or libpq's `key=value` form):
    /// the settings, and the URL without them for tokio-postgres.
    pub(super) fn take(url: &str) -> Result<(Self, String), String> {
        let (pairs, rest) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            take_from_query(url)
        } else {
            take_from_key_values(url)
        };
        let mut settings = Self {
            mode: TlsMode::Prefer,
            root_cert: None,
            cert: None,
            key: None,
        };
        for (key, value) in pairs {
            let path = || {
                if value.is_empty() || value.contains('\0') {
                    Err(format!("{key} is not a file path"))
                } else {
                    Ok(Some(PathBuf::from(&value)))
                }
            };
            match key.as_str() {
                "sslmode" => settings.mode = TlsMode::parse(&value)?,
                "sslrootcert" => settings.root_cert = path()?,
                "sslcert" => settings.cert = path()?,
                _ => settings.key = path()?,
            }
        }
        if settings.cert.is_some() != settings.key.is_some() {
            return Err(
                "sslcert and sslkey go together: a client certificate needs its key".into(),
            );
        }
        Ok((settings, rest))
    }

    /// The connector these settings ask for. Errors name the setting and file at fault.
    pub(super) fn connector(&self) -> Result<MakeTlsConnector, String> {
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(|e| format!("TLS: {e}"))?;
        if let Some(root) = &self.root_cert {
            builder
                .set_ca_file(root)
                .map_err(|e| format!("sslrootcert {}: not a PEM CA file: {e}", root.display()))?;
        }
        let verify = match self.mode {
            TlsMode::Disable | TlsMode::Prefer => false,
            TlsMode::Require => self.root_cert.is_some(),
            TlsMode::VerifyCa | TlsMode::VerifyFull => true,
        };
        if !verify {
            builder.set_verify(SslVerifyMode::NONE);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| format!("sslcert {}: not a PEM certificate: {e}", cert.display()))?;
            let mismatch = || {
                format!(
                    "sslkey {} is not the key of sslcert {}",
                    key.display(),
                    cert.display()
                )
            };
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|e| {
                    if e.to_string().contains("key values mismatch") {
                        mismatch()
                    } else {
                        format!("sslkey {}: not a PEM private key: {e}", key.display())
                    }
                })?;
            builder.check_private_key().map_err(|_| mismatch())?;
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        if self.mode != TlsMode::VerifyFull {
            connector.set_callback(|config, _host| {
                config.set_verify_hostname(false);
                Ok(())
            });
        }
        Ok(connector)
    }
}

/// `postgres://…?a=b&sslmode=…`: the TLS pairs (percent-decoded), and the URL without them.
fn take_from_query(url: &str) -> (Vec<(String, String)>, String) {
    let Some((base, query)) = url.split_once('?') else {
        return (Vec::new(), url.to_owned());
    };
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        if KEYS.contains(&key.as_str()) {
            taken.push((key, percent_decode(value)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (taken, rest)
}

/// `host=… sslmode=… sslrootcert='/a b/ca.crt'`: the TLS pairs, and the string without them.
/// Values may be single-quoted, with `\'` and `\\` inside, as libpq reads them.
fn take_from_key_values(text: &str) -> (Vec<(String, String)>, String) {
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        // key
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_some_and(|&(_, c)| c == '=') {
            chars.next();
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        // value
        let mut value = String::new();
        if chars.peek().is_some_and(|&(_, c)| c == '\'') {
            chars.next();
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        if KEYS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(&text[start..end]);
        }
    }
    (taken, kept.join(" "))
}

/// `%XX` sequences decoded (a path in a URL's query); anything malformed is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(url: &str) -> (TlsSettings, String) {
        TlsSettings::take(url).unwrap()
    }

    #[test]
    fn the_tls_parameters_leave_the_url_and_the_rest_stays() {
        let (tls, rest) = take(
            "postgres://u:p@db:5432/rec?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20dir%2Fca.crt&sslcert=/c.crt&sslkey=/c.key&connect_timeout=3",
        );
        assert_eq!(tls.mode, TlsMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca dir/ca.crt")));
        assert_eq!(tls.cert, Some(PathBuf::from("/c.crt")));
        assert_eq!(tls.key, Some(PathBuf::from("/c.key")));
        assert_eq!(
            rest,
            "postgres://u:p@db:5432/rec?application_name=x&connect_timeout=3"
        );
        let (tls, rest) = take("postgresql://db/rec?sslmode=require");
        assert_eq!(
            (tls.mode, rest.as_str()),
            (TlsMode::Require, "postgresql://db/rec")
        );
        let (tls, rest) = take("postgres://db/rec");
        assert_eq!((tls.mode, tls.root_cert), (TlsMode::Prefer, None));
        assert_eq!(rest, "postgres://db/rec");
    }

    #[test]
    fn key_value_strings_are_read_with_quotes() {
        let (tls, rest) =
            take("host=db user=u sslmode = verify-ca sslrootcert='/a b/it\\'s.crt' dbname=rec");
        assert_eq!(tls.mode, TlsMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/a b/it's.crt")));
        assert_eq!(rest, "host=db user=u dbname=rec");
    }

    #[test]
    fn bad_settings_are_named() {
        let err = TlsSettings::take("postgres://db/rec?sslmode=allow").unwrap_err();
        assert!(err.contains("sslmode `allow`"), "{err}");
        let err = TlsSettings::take("postgres://db/rec?sslcert=/c.crt").unwrap_err();
        assert!(err.contains("sslcert and sslkey"), "{err}");
        let err = TlsSettings::take("postgres://db/rec?sslrootcert=").unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
        let (tls, _) = take("postgres://db/rec?sslmode=verify-full&sslrootcert=/no/such/ca.crt");
        let err = tls.connector().err().unwrap();
        assert!(err.contains("sslrootcert /no/such/ca.crt"), "{err}");
    }

    #[test]
    fn tls_is_required_from_require_on() {
        assert_eq!(TlsMode::Disable.ssl_mode(), SslMode::Disable);
        assert_eq!(TlsMode::Prefer.ssl_mode(), SslMode::Prefer);
        for mode in [TlsMode::Require, TlsMode::VerifyCa, TlsMode::VerifyFull] {
            assert_eq!(mode.ssl_mode(), SslMode::Require);
        }
    }
}
