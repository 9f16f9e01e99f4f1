//! The committed example configuration parses, is valid, and states the defaults.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails at the first broken expectation"
)]

use std::path::PathBuf;

use orstream_infer::InferConfig;

#[test]
fn the_example_config_parses_and_matches_the_defaults() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/infer.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = InferConfig::from_toml(&text, &path).unwrap();
    config.validate().unwrap();
    assert_eq!(
        config,
        InferConfig::default(),
        "the example must show the defaults"
    );
}
