//! The project's own scripts (`scripts/*.sh`), as tests call them for the stack's addresses,
//! users and certificates.

use std::path::Path;
use std::process::Command;

/// Runs `scripts/<name> <args>`; what it printed, trimmed. Fails naming the script and its
/// error output when it fails.
pub fn run(name: &str, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    let output = Command::new(&script).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
