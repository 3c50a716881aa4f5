//! Every example under `config/` parses and validates.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use inferplane_gateway::FileConfig;
use std::path::Path;

#[test]
fn every_example_config_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = FileConfig::load(&path)
                .and_then(|f| Ok(f.validate()?))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!cfg.pools.is_empty(), "{} has no pools", path.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the example configs in {}",
        dir.display()
    );
}
