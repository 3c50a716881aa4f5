//! End-to-end tests of `inferplane plan` through the built binary.

use std::process::Command;

fn plan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_inferplane"))
        .arg("plan")
        .args(args)
        .output()
        .expect("run inferplane")
}

#[test]
fn plan_prints_a_ranked_table_with_launch_commands() {
    let out = plan(&[
        "--model",
        "llama-3.1-70b",
        "--gpu",
        "h100-sxm",
        "--gpus-per-node",
        "8",
        "--explain",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rank") && text.contains("TPOT ms"), "{text}");
    assert!(
        text.contains("vllm serve meta-llama/Llama-3.1-70B-Instruct --tensor-parallel-size"),
        "{text}"
    );
    assert!(text.contains("estimates"), "{text}");
    assert!(
        text.contains("Rejected layouts") && text.contains("exceed"),
        "{text}"
    );
}

#[test]
fn plan_json_parses_and_has_ranked_plans() {
    let out = plan(&[
        "--model",
        "qwen3-30b-a3b",
        "--gpu",
        "h100-sxm",
        "--engine",
        "sglang",
        "--input-tokens",
        "1024",
        "--output-tokens",
        "128",
        "--concurrency",
        "32",
        "--objective",
        "latency",
        "--top",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plans = v["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 3);
    assert_eq!(plans[0]["rank"], 1);
    assert!(plans[0]["perf"]["tpot_ms"].as_f64().unwrap() > 0.0);
    let cmd = plans[0]["commands"][0]["argv"].as_array().unwrap();
    assert_eq!(cmd[2], "sglang.launch_server");
}

#[test]
fn unknown_model_fails_with_a_clear_message() {
    let out = plan(&["--model", "llama-9000", "--gpu", "h100-sxm"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown model `llama-9000`") && err.contains("llama-3.1-70b"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn too_large_model_and_bad_gpu_are_clear_errors() {
    let out = plan(&["--model", "llama-3.1-405b", "--gpu", "l40s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs at least"));
    let out = plan(&["--model", "llama-3.1-8b", "--gpu", "tpu"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown GPU `tpu`"));
}

#[test]
fn custom_gpu_figures_and_config_json_path_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":4096,"num_hidden_layers":32,
        "num_attention_heads":32,"num_key_value_heads":8,"intermediate_size":14336,
        "vocab_size":128256,"max_position_embeddings":131072}"#,
    )
    .unwrap();
    let out = plan(&[
        "--model",
        path.to_str().unwrap(),
        "--gpu-memory-gib",
        "44",
        "--gpu-bandwidth-gbps",
        "864",
        "--gpu-tflops",
        "362",
        "--gpus-per-node",
        "4",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpu"], "custom");
}
