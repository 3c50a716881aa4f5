//! Engine launch commands for a plan: `vllm serve ...` and `python -m sglang.launch_server ...`.
//!
//! Flags follow research Appendix A and the AIConfigurator flag table (§1.2): vLLM world =
//! TP x PP x DP and `--enable-expert-parallel` makes EP = TP x DP; SGLang with
//! `--enable-dp-attention` takes the world size as `--tp` and splits it with `--dp`. The
//! values the planner assumed (utilisation, context length, batch cap, KV dtype) are always
//! written out rather than left to engine defaults (Appendix A, "Version notes").

use crate::dtype::{KvDtype, WeightDtype};
use crate::memory::MemoryEstimate;
use crate::model::ModelSpec;
use crate::options::{Engine, EngineOptions};
use crate::workload::Cluster;
use inferplane_core::Layout;
use serde::Serialize;

/// One command to run on one node, for one instance (run `replicas` copies of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchCommand {
    /// What this command is.
    pub description: String,
    /// Nodes one instance spans.
    pub nodes: u32,
    /// This command's node rank within the instance.
    pub node_rank: u32,
    /// GPUs this command uses on its node.
    pub local_gpus: u32,
    /// GPUs of the whole instance (all its nodes).
    pub instance_gpus: u32,
    /// Copies of the instance to run, each on its own GPUs and port.
    pub replicas: u32,
    /// The command, one argument per element.
    pub argv: Vec<String>,
}

impl LaunchCommand {
    /// The command as one shell line.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }
}

fn push(argv: &mut Vec<String>, flag: &str, value: impl ToString) {
    argv.push(flag.to_string());
    argv.push(value.to_string());
}

/// Launch commands for `replicas` instances of `layout`.
#[allow(clippy::too_many_arguments)]
pub fn commands(
    model: &ModelSpec,
    layout: Layout,
    replicas: u32,
    opts: &EngineOptions,
    dtype: WeightDtype,
    mem: &MemoryEstimate,
    max_num_seqs: u64,
    cluster: &Cluster,
) -> Vec<LaunchCommand> {
    let gpn = cluster.gpus_per_node.max(1);
    let g = layout.gpu_count();
    let nodes = g.div_ceil(gpn).max(1);
    let local = g.min(gpn);
    let moe_dp = model.is_moe() && layout.dp > 1;
    (0..nodes)
        .map(|rank| {
            let mut argv: Vec<String> = Vec::new();
            if replicas > 1 && g < gpn {
                let ids: Vec<String> = (0..g).map(|i| i.to_string()).collect();
                argv.push(format!("CUDA_VISIBLE_DEVICES={}", ids.join(",")));
            }
            match opts.engine {
                Engine::Vllm => vllm(&mut argv, model, layout, opts, dtype, mem, max_num_seqs, nodes, rank, gpn),
                Engine::Sglang => sglang(&mut argv, model, layout, opts, dtype, mem, max_num_seqs, nodes, rank, moe_dp),
            }
            let mut description = format!("{} instance of {g} GPU(s)", opts.engine.as_str());
            if nodes > 1 {
                description.push_str(&format!(", node {rank} of {nodes} (replace <HEAD_IP>)"));
            }
            if replicas > 1 {
                description.push_str(&format!(
                    "; run {replicas} copies on disjoint GPUs (CUDA_VISIBLE_DEVICES) with distinct --port, behind the inferplane gateway"
                ));
            }
            if dtype != model.native_dtype && matches!(dtype, WeightDtype::Int4 | WeightDtype::Int8 | WeightDtype::Mxfp4) {
                description.push_str(&format!("; point the model path at a {dtype} checkpoint"));
            }
            LaunchCommand { description, nodes, node_rank: rank, local_gpus: local, instance_gpus: g, replicas, argv }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn vllm(
    argv: &mut Vec<String>,
    model: &ModelSpec,
    l: Layout,
    opts: &EngineOptions,
    dtype: WeightDtype,
    mem: &MemoryEstimate,
    seqs: u64,
    nodes: u32,
    rank: u32,
    gpn: u32,
) {
    argv.extend(["vllm".to_string(), "serve".to_string(), model.hf_id.clone()]);
    push(argv, "--tensor-parallel-size", l.tp);
    push(argv, "--pipeline-parallel-size", l.pp);
    if l.dp > 1 {
        push(argv, "--data-parallel-size", l.dp);
    }
    if l.ep > 1 {
        argv.push("--enable-expert-parallel".into());
    }
    push(
        argv,
        "--gpu-memory-utilization",
        format!("{:.2}", mem.utilization),
    );
    push(argv, "--max-model-len", mem.max_model_len);
    // Per DP rank in vLLM.
    push(
        argv,
        "--max-num-seqs",
        seqs.div_ceil(l.dp.max(1) as u64).max(1),
    );
    if opts.kv_dtype == KvDtype::Fp8 {
        push(argv, "--kv-cache-dtype", "fp8");
    }
    if dtype == WeightDtype::Fp8 && model.native_dtype != WeightDtype::Fp8 {
        push(argv, "--quantization", "fp8");
    }
    if nodes > 1 {
        if l.dp > 1 {
            // Multi-node DP(+EP): DP ranks per node, head address and RPC port (Appendix A).
            let local_dp = (gpn / (l.tp * l.pp)).max(1);
            push(argv, "--data-parallel-size-local", local_dp);
            push(argv, "--data-parallel-address", "<HEAD_IP>");
            push(argv, "--data-parallel-rpc-port", 13345);
            if rank > 0 {
                push(argv, "--data-parallel-start-rank", rank * local_dp);
                argv.push("--headless".into());
            }
        } else {
            push(argv, "--nnodes", nodes);
            push(argv, "--node-rank", rank);
            push(argv, "--master-addr", "<HEAD_IP>");
            if rank > 0 {
                argv.push("--headless".into());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sglang(
    argv: &mut Vec<String>,
    model: &ModelSpec,
    l: Layout,
    opts: &EngineOptions,
    dtype: WeightDtype,
    mem: &MemoryEstimate,
    seqs: u64,
    nodes: u32,
    rank: u32,
    moe_dp: bool,
) {
    argv.extend([
        "python".to_string(),
        "-m".to_string(),
        "sglang.launch_server".to_string(),
    ]);
    push(argv, "--model-path", &model.hf_id);
    if moe_dp {
        // DP-attention: --tp is the world size, attn_tp = tp / dp (§1.5).
        push(argv, "--tp", l.tp * l.dp);
        push(argv, "--dp", l.dp);
        argv.push("--enable-dp-attention".into());
    } else {
        push(argv, "--tp", l.tp);
        if l.dp > 1 {
            push(argv, "--dp", l.dp);
        }
    }
    if l.pp > 1 {
        push(argv, "--pp-size", l.pp);
    }
    if l.ep > 1 {
        push(argv, "--ep-size", l.ep);
    }
    push(
        argv,
        "--mem-fraction-static",
        format!("{:.3}", mem.utilization),
    );
    push(argv, "--context-length", mem.max_model_len);
    push(argv, "--max-running-requests", seqs.max(1));
    if opts.kv_dtype == KvDtype::Fp8 {
        push(argv, "--kv-cache-dtype", "fp8_e4m3");
    }
    if dtype == WeightDtype::Fp8 && model.native_dtype != WeightDtype::Fp8 {
        push(argv, "--quantization", "fp8");
    }
    if nodes > 1 {
        push(argv, "--nnodes", nodes);
        push(argv, "--node-rank", rank);
        push(argv, "--dist-init-addr", "<HEAD_IP>:5000");
    }
}

/// The parallel world size a command's flags describe (TP x PP x DP with each engine's
/// semantics). Used by tests and tools to check that commands match the GPUs they claim.
pub fn world_size(argv: &[String]) -> u32 {
    let get = |flag: &str| -> u32 {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    };
    if argv.iter().any(|a| a == "sglang.launch_server") {
        let dp = if argv.iter().any(|a| a == "--enable-dp-attention") {
            1
        } else {
            get("--dp")
        };
        get("--tp") * get("--pp-size") * dp
    } else {
        get("--tensor-parallel-size")
            * get("--pipeline-parallel-size")
            * get("--data-parallel-size")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::find_model;
    use crate::gpu::find_gpu;
    use crate::memory;

    fn cmds(model: &str, l: Layout, engine: Engine, nodes: u32) -> Vec<LaunchCommand> {
        let m = find_model(model).unwrap();
        let gpu = find_gpu("h200").unwrap();
        let cluster = Cluster {
            gpu: gpu.clone(),
            gpus_per_node: 8,
            nodes,
        };
        let opts = EngineOptions {
            engine,
            max_model_len: Some(4096),
            kv_dtype: KvDtype::Fp8,
            ..EngineOptions::default()
        };
        let dtype = opts.weight_dtype_for(&m).unwrap();
        let (mem, _) = memory::estimate(&m, &gpu, l, &opts, dtype, 4096).unwrap();
        commands(&m, l, 1, &opts, dtype, &mem, 256, &cluster)
    }

    #[test]
    fn vllm_dep_command_enables_expert_parallel_and_data_parallel() {
        let c = cmds(
            "deepseek-v3",
            Layout {
                tp: 1,
                pp: 1,
                dp: 8,
                ep: 8,
            },
            Engine::Vllm,
            1,
        );
        let line = c[0].command_line();
        assert!(
            line.starts_with("vllm serve deepseek-ai/DeepSeek-V3 --tensor-parallel-size 1"),
            "{line}"
        );
        assert!(
            line.contains("--data-parallel-size 8 --enable-expert-parallel"),
            "{line}"
        );
        assert!(
            line.contains("--kv-cache-dtype fp8") && line.contains("--max-model-len 4096"),
            "{line}"
        );
        assert_eq!(world_size(&c[0].argv), 8);
    }

    #[test]
    fn multi_node_tp_pp_gets_one_command_per_node_with_headless_workers() {
        let c = cmds(
            "llama-3.1-405b",
            Layout {
                tp: 8,
                pp: 2,
                dp: 1,
                ep: 1,
            },
            Engine::Vllm,
            2,
        );
        assert_eq!(c.len(), 2);
        assert!(
            c[0].command_line()
                .contains("--nnodes 2 --node-rank 0 --master-addr <HEAD_IP>")
        );
        assert!(c[1].command_line().ends_with("--headless"));
        assert!(
            c.iter()
                .all(|c| world_size(&c.argv) == 16 && c.local_gpus * c.nodes == 16)
        );
    }

    #[test]
    fn sglang_dp_attention_uses_world_size_as_tp() {
        let c = cmds(
            "deepseek-v3",
            Layout {
                tp: 1,
                pp: 1,
                dp: 8,
                ep: 8,
            },
            Engine::Sglang,
            1,
        );
        let line = c[0].command_line();
        assert!(
            line.contains("--tp 8 --dp 8 --enable-dp-attention --ep-size 8"),
            "{line}"
        );
        assert!(line.contains("--kv-cache-dtype fp8_e4m3"), "{line}");
        assert_eq!(world_size(&c[0].argv), 8);
    }
}
