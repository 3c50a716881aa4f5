//! `inferplane serve`: configuration from file, flags and INFERPLANE_* variables, checked
//! with `--check` (no server is started).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::process::Command;

fn serve(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferplane"));
    cmd.arg("serve").args(args).arg("--check");
    for var in [
        "INFERPLANE_CONFIG",
        "INFERPLANE_LISTEN",
        "INFERPLANE_INSTANCES",
        "INFERPLANE_MODEL",
        "INFERPLANE_ADMIN_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn config(name: &str) -> String {
    format!("{}/../../config/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_config_file_checks_ok() {
    let (ok, out) = serve(&["--config", &config("single-pool.toml")], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("1 pool(s), 3 instance(s)"), "{out}");
}

#[test]
fn flags_and_environment_override_the_file_and_errors_name_the_path() {
    let (ok, out) = serve(
        &["--config", &config("minimal.toml")],
        &[("INFERPLANE_LISTEN", "not-an-address")],
    );
    assert!(!ok);
    assert!(out.contains("server.listen"), "{out}");
    let (ok, out) = serve(
        &["--instance", "http://127.0.0.1:9", "--model", "m"],
        &[(
            "INFERPLANE_INSTANCES",
            "http://127.0.0.1:10,http://127.0.0.1:11",
        )],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("1 instance(s)"),
        "a flag beats the variable: {out}"
    );
    let (ok, out) = serve(
        &["--model", "m"],
        &[(
            "INFERPLANE_INSTANCES",
            "http://127.0.0.1:10,http://127.0.0.1:11",
        )],
    );
    assert!(ok, "{out}");
    assert!(out.contains("2 instance(s)"), "{out}");
}

#[test]
fn missing_engines_and_bad_urls_are_clear_errors() {
    let (ok, out) = serve(&[], &[]);
    assert!(!ok);
    assert!(out.contains("no engines configured"), "{out}");
    let (ok, out) = serve(&["--instance", "https://x:1", "--model", "m"], &[]);
    assert!(!ok);
    assert!(out.contains("https"), "{out}");
    let (ok, out) = serve(&["--instance", "http://127.0.0.1:9"], &[]);
    assert!(
        !ok,
        "no engine listens there, so its model cannot be discovered"
    );
    assert!(out.contains("pass --model"), "{out}");
    let (ok, out) = serve(&["--config", "/nonexistent.toml"], &[]);
    assert!(!ok);
    assert!(out.contains("cannot read /nonexistent.toml"), "{out}");
}

#[test]
fn engine_api_keys_can_come_from_the_environment_and_a_missing_one_names_its_path() {
    let dir = std::env::temp_dir().join(format!("inferplane-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.toml");
    std::fs::write(
        &path,
        "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"http://127.0.0.1:9\"\napi_key = \"env:INFERPLANE_TEST_ENGINE_KEY\"\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let (ok, out) = serve(
        &["--config", path],
        &[("INFERPLANE_TEST_ENGINE_KEY", "s3cret")],
    );
    assert!(ok, "{out}");
    assert!(!out.contains("s3cret"));
    let (ok, out) = serve(&["--config", path], &[]);
    assert!(!ok);
    assert!(out.contains("pools[0].instances[0].api_key"), "{out}");
    assert!(
        out.contains("INFERPLANE_TEST_ENGINE_KEY is not set"),
        "{out}"
    );
}

#[test]
fn a_kubernetes_discovery_section_needs_no_pools_and_a_build_without_the_feature_says_so() {
    let dir = std::env::temp_dir().join(format!("inferplane-serve-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k8s.toml");
    std::fs::write(
        &path,
        "[discovery.kubernetes]\nnamespace = \"llm\"\nservice = \"vllm-llama\"\nport = \"http\"\n",
    )
    .unwrap();
    let (ok, out) = serve(&["--config", path.to_str().unwrap()], &[]);
    if cfg!(feature = "kubernetes") {
        assert!(ok, "{out}");
        assert!(out.contains("0 pool(s)"), "{out}");
        assert!(out.contains("discovered from Kubernetes"), "{out}");
    } else {
        assert!(!ok);
        assert!(
            out.contains("discovery.kubernetes")
                && out.contains("without the `kubernetes` feature"),
            "{out}"
        );
        assert!(!out.contains("no engines configured"), "{out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
