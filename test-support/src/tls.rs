//! The stack's certificates (`scripts/tls.sh`): its CA, the server certificate PostgreSQL and
//! the broker's TLS listeners present, client certificates, and CAs nobody trusts.

use std::path::{Path, PathBuf};

/// Runs `scripts/tls.sh <args>` and returns what it printed (a directory).
fn tls_script(args: &[&str]) -> String {
    crate::scripts::run("tls.sh", args)
}

/// The stack's CA certificate (made if missing).
pub fn stack_ca() -> PathBuf {
    PathBuf::from(tls_script(&["ensure"])).join("ca.crt")
}

/// A client certificate signed by the stack's CA whose common name is `name`, and its key.
pub fn client_certificate(name: &str) -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(tls_script(&["client", name]));
    (
        dir.join(format!("client-{name}.crt")),
        dir.join(format!("client-{name}.key")),
    )
}

/// A CA certificate of a new CA in `dir`, which signed nothing the stack serves.
pub fn untrusted_ca(dir: &Path) -> PathBuf {
    tls_script(&["ca", dir.to_str().unwrap()]);
    dir.join("ca.crt")
}
