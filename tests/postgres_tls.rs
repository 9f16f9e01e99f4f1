//! The record over TLS, against the stack's PostgreSQL (`scripts/postgres.sh start` serves TLS
//! with a certificate for localhost and 127.0.0.1 signed by the stack's CA, `scripts/tls.sh`):
//! each `sslmode` does what libpq's does, a server certificate that no trusted CA signed or
//! that names another host is refused with an error that says so (and is not retried), a client
//! certificate logs in, `orstream record` works over verify-full and refuses a wrong CA, and
//! the sink stops on a wrong CA, saying why.
//! (The sink runs over verify-full in `e2e_distributed`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::process::Command;

use orstream_record::store::{BackendKind, Store};
use orstream_record::{StoreError, Value};
use orstream_test_support::store::{IsolatedStore, isolated};
use orstream_test_support::tls::{client_certificate, stack_ca, untrusted_ca};

fn store() -> IsolatedStore {
    isolated(BackendKind::Postgres).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether the store's connection runs over TLS, by the server's own account.
fn over_tls(store: &mut Store) -> bool {
    let rows = store
        .query(
            "SELECT (CASE WHEN ssl THEN 1 ELSE 0 END)::bigint FROM pg_stat_ssl \
             WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap();
    rows[0][0] == Value::Int(1)
}

/// The error of opening `url`, which must fail, as text, and whether it is retriable.
fn refusal(url: &str) -> (String, bool) {
    let err: StoreError = match Store::open(url) {
        Ok(_) => panic!("the connection to {url} was not refused"),
        Err(err) => err,
    };
    (err.to_string(), err.is_retriable())
}

#[test]
fn each_sslmode_does_what_libpq_does() {
    let isolated = store();
    let ca = stack_ca();
    let with = |params: &str| format!("{}&{params}", isolated.url());

    let mut plain = Store::open(&with("sslmode=disable")).unwrap();
    assert!(!over_tls(&mut plain), "sslmode=disable ran over TLS");
    for params in [
        // The default: TLS when offered.
        String::new(),
        "sslmode=prefer".to_owned(),
        // TLS, the certificate unchecked.
        "sslmode=require".to_owned(),
        format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ] {
        let url = if params.is_empty() {
            isolated.url().to_owned()
        } else {
            with(&params)
        };
        let mut store = Store::open(&url).unwrap_or_else(|e| panic!("{params}: {e}"));
        assert!(over_tls(&mut store), "{params:?} did not run over TLS");
    }
    // The host by name: the certificate names localhost too.
    let by_name = with(&format!("sslmode=verify-full&sslrootcert={}", ca.display()))
        .replace("@127.0.0.1:", "@localhost:");
    assert!(over_tls(&mut Store::open(&by_name).unwrap()));
}

#[test]
fn a_server_no_trusted_ca_signed_is_refused_and_not_retried() {
    let isolated = store();
    let dir = tempfile::tempdir().unwrap();
    let wrong = untrusted_ca(dir.path());
    for mode in ["verify-ca", "verify-full", "require"] {
        let (text, retriable) = refusal(&format!(
            "{}&sslmode={mode}&sslrootcert={}",
            isolated.url(),
            wrong.display()
        ));
        assert!(
            text.contains("certificate verify failed"),
            "{mode} with a wrong CA: {text}"
        );
        assert!(!retriable, "{mode} with a wrong CA is retried: {text}");
    }
    // A CA file that is not there is named.
    let (text, retriable) = refusal(&format!(
        "{}&sslmode=verify-full&sslrootcert={}",
        isolated.url(),
        dir.path().join("missing.crt").display()
    ));
    assert!(
        text.contains("sslrootcert") && text.contains("missing.crt"),
        "{text}"
    );
    assert!(!retriable);
}

#[test]
fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let isolated = store();
    let ca = stack_ca();
    // The right server, by an address, under a name its certificate does not carry.
    let elsewhere = format!(
        "{}&sslrootcert={}&hostaddr=127.0.0.1",
        isolated
            .url()
            .replace("@127.0.0.1:", "@records.example.org:"),
        ca.display()
    );
    let (text, retriable) = refusal(&format!("{elsewhere}&sslmode=verify-full"));
    assert!(text.contains("certificate verify failed"), "{text}");
    assert!(!retriable, "{text}");
    let mut store = Store::open(&format!("{elsewhere}&sslmode=verify-ca")).unwrap();
    assert!(over_tls(&mut store));
}

#[test]
fn a_client_certificate_logs_in() {
    let isolated = store();
    let (cert, key) = client_certificate("orstream_cert");
    // orstream_cert has no password: pg_hba.conf lets it in by certificate only.
    let as_cert_user = isolated
        .url()
        .replacen("orstream:orstream@", "orstream_cert@", 1);
    let url = format!(
        "{as_cert_user}&sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        stack_ca().display(),
        cert.display(),
        key.display()
    );
    let mut store = Store::open(&url).unwrap_or_else(|e| panic!("{e}"));
    let rows = store.query("SELECT current_user::text", &[]).unwrap();
    assert_eq!(rows[0][0], Value::Text("orstream_cert".into()));
    let (text, _) = refusal(&format!(
        "{as_cert_user}&sslmode=verify-full&sslrootcert={}",
        stack_ca().display()
    ));
    assert!(text.contains("certificate"), "{text}");
    // A key that is not the certificate's is named before anything is sent.
    let (other_cert, _) = client_certificate("orstream_other");
    let (text, _) = refusal(&format!(
        "{as_cert_user}&sslmode=verify-full&sslcert={}&sslkey={}",
        other_cert.display(),
        key.display()
    ));
    assert!(text.contains("is not the key of sslcert"), "{text}");
}

#[test]
fn orstream_record_works_over_verify_full_and_refuses_a_wrong_ca() {
    let isolated = store();
    let record = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_orstream"))
            .args(["record", "cases", "--format", "csv"])
            .env("ORSTREAM_SINK_STORE", url)
            .output()
            .unwrap()
    };
    let ok = record(&format!(
        "{}&sslmode=verify-full&sslrootcert={}",
        isolated.url(),
        stack_ca().display()
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let refused = record(&format!(
        "{}&sslmode=verify-full&sslrootcert={}",
        isolated.url(),
        untrusted_ca(dir.path()).display()
    ));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    // The password never shows in the error.
    assert!(!stderr.contains("orstream:orstream@"), "{stderr}");
}

#[test]
fn the_sink_stops_on_a_wrong_ca_naming_the_refusal() {
    let isolated = store();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_orstream"))
        .arg("sink")
        .env(
            "ORSTREAM_SINK_STORE",
            format!(
                "{}&sslmode=verify-full&sslrootcert={}",
                isolated.url(),
                untrusted_ca(dir.path()).display()
            ),
        )
        .env(
            "ORSTREAM_SINK_KAFKA__BOOTSTRAP_SERVERS",
            orstream_test_support::kafka::config().bootstrap_servers,
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("certificate verify failed")
            && stderr.contains("self-signed certificate in certificate chain"),
        "{stderr}"
    );
    assert!(!stderr.contains("orstream:orstream@"), "{stderr}");
}
