//! GPU catalogue ([`GpuSpec`], [`find_gpu`]) and custom figures.
//!
//! Figures are research §4 (NVIDIA datasheets, AIConfigurator `systems/*.yaml`,
//! llm-analysis GPU configs) and the link table of §2.6. `memory_gib` is the memory the
//! engine sees (torch-visible), not the marketing number: H100 80GB = 79.18 GiB (measured
//! by llm-d, research §2.4); H200 139.6 GiB is the research's derived estimate; the others
//! are estimates of the same kind (nvidia-smi total less about 0.5 GiB) and are marked so.

use serde::{Deserialize, Serialize};

/// GPU architecture generation; decides FP8/FP4 support and vLLM's batch defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// A100, A10G (SM80/86): no FP8 compute; FP8 weights run weight-only (Marlin).
    Ampere,
    /// L40S (SM89): FP8 compute.
    Ada,
    /// H100, H200 (SM90).
    Hopper,
    /// B200 (SM100): FP8 and FP4 compute.
    Blackwell,
}

impl Arch {
    /// Whether FP8 tensor-core compute exists (SM89+, research §2.5 rule 10).
    pub fn has_fp8(self) -> bool {
        !matches!(self, Arch::Ampere)
    }
}

/// One GPU model's figures. All link speeds are per GPU, per direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSpec {
    /// Catalogue name, e.g. `h100-sxm`.
    pub name: String,
    /// Memory usable by the engine (torch-visible), GiB.
    pub memory_gib: f64,
    /// HBM/GDDR bandwidth, GB/s (10^9 bytes/s).
    pub hbm_gbps: f64,
    /// Dense BF16 tensor TFLOPS.
    pub bf16_tflops: f64,
    /// Dense FP8 tensor TFLOPS, when the GPU has FP8 compute.
    pub fp8_tflops: Option<f64>,
    /// GPU-to-GPU bandwidth inside a node, GB/s per direction (NVLink, else PCIe).
    pub intra_node_gbps: f64,
    /// Whether the intra-node link is NVLink/NVSwitch (false: PCIe only).
    pub nvlink: bool,
    /// Network bandwidth to other nodes, GB/s per GPU per direction.
    pub inter_node_gbps: f64,
    /// Architecture generation.
    pub arch: Arch,
}

impl GpuSpec {
    /// Custom figures for a GPU not in the catalogue. Assumes PCIe Gen4 between GPUs
    /// (32 GB/s), a 12.5 GB/s network and no FP8 unless set afterwards.
    pub fn custom(memory_gib: f64, hbm_gbps: f64, bf16_tflops: f64) -> GpuSpec {
        GpuSpec {
            name: "custom".to_string(),
            memory_gib,
            hbm_gbps,
            bf16_tflops,
            fp8_tflops: None,
            intra_node_gbps: 32.0,
            nvlink: false,
            inter_node_gbps: 12.5,
            arch: Arch::Ampere,
        }
    }

    /// Peak dense TFLOPS for matmuls with these weights: FP8/INT8 weights use the FP8 rate
    /// where it exists; 4-bit formats dequantise to BF16 (W4A16).
    pub fn peak_tflops(&self, fp8_compute: bool) -> f64 {
        match (fp8_compute, self.fp8_tflops) {
            (true, Some(f)) => f,
            _ => self.bf16_tflops,
        }
    }

    /// Whether vLLM treats this as a large GPU: at least 70 GiB and not an A100
    /// (`get_batch_defaults`: max_num_seqs 1024, else 256; research §1.4).
    pub fn vllm_large_defaults(&self) -> bool {
        self.memory_gib >= 70.0 && !self.name.starts_with("a100")
    }
}

#[allow(clippy::too_many_arguments)]
fn gpu(
    name: &str,
    memory_gib: f64,
    hbm_gbps: f64,
    bf16_tflops: f64,
    fp8_tflops: Option<f64>,
    intra_node_gbps: f64,
    nvlink: bool,
    inter_node_gbps: f64,
    arch: Arch,
) -> GpuSpec {
    GpuSpec {
        name: name.to_string(),
        memory_gib,
        hbm_gbps,
        bf16_tflops,
        fp8_tflops,
        intra_node_gbps,
        nvlink,
        inter_node_gbps,
        arch,
    }
}

/// The whole GPU catalogue.
pub fn gpu_catalog() -> Vec<GpuSpec> {
    use Arch::*;
    vec![
        // A10G: 24 GB, 600 GB/s, ~70 TFLOPS (llm-analysis a10g-pcie-24gb), PCIe Gen4; network
        // estimate: g5.48xlarge 100 Gb/s shared by 8 GPUs.
        gpu("a10g", 22.0, 600.0, 70.0, None, 32.0, false, 1.6, Ampere),
        // L40S: 46,068 MiB usable, 864 GB/s, 362/733 TFLOPS, no NVLink (§4); network estimate.
        gpu(
            "l40s",
            44.5,
            864.0,
            362.0,
            Some(733.0),
            32.0,
            false,
            12.5,
            Ada,
        ),
        // A100 SXM4: 1,555 / 2,039 GB/s, 312 TFLOPS, NVLink3 300 GB/s/dir, HDR 25 GB/s (§4, §2.6).
        gpu(
            "a100-40gb",
            39.4,
            1555.0,
            312.0,
            None,
            300.0,
            true,
            25.0,
            Ampere,
        ),
        gpu(
            "a100-80gb",
            79.15,
            2039.0,
            312.0,
            None,
            300.0,
            true,
            25.0,
            Ampere,
        ),
        // H100 PCIe: 2.0 TB/s, 756/1,513 TFLOPS, PCIe Gen5 64 GB/s/dir (§4, §2.6).
        gpu(
            "h100-pcie",
            79.18,
            2000.0,
            756.0,
            Some(1513.0),
            64.0,
            false,
            25.0,
            Hopper,
        ),
        // H100 SXM: 79.18 GiB torch-visible (llm-d), 3.35 TB/s, 989/1,979, NVLink 450, NDR 50.
        gpu(
            "h100-sxm",
            79.18,
            3350.0,
            989.0,
            Some(1979.0),
            450.0,
            true,
            50.0,
            Hopper,
        ),
        // H200: 139.6 GiB (research §2.4 derived), 4.8 TB/s, 989/1,979, NVLink 450, NDR 50.
        gpu(
            "h200",
            139.6,
            4800.0,
            989.0,
            Some(1979.0),
            450.0,
            true,
            50.0,
            Hopper,
        ),
        // B200: ~179 GiB nvidia-smi (Vultr), 8 TB/s, 2,250/4,500, NVLink5 900, XDR 100.
        gpu(
            "b200",
            178.5,
            8000.0,
            2250.0,
            Some(4500.0),
            900.0,
            true,
            100.0,
            Blackwell,
        ),
    ]
}

/// Looks a GPU up by name, ignoring case and punctuation (`h100-sxm`, `H100_SXM`,
/// `h100sxm`). `h100` alone means the SXM part, `a100` the 80 GB part.
pub fn find_gpu(name: &str) -> Option<GpuSpec> {
    let key = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect()
    };
    let k = key(name);
    let k = match k.as_str() {
        "h100" | "h100sxm5" | "h10080gb" => "h100sxm".to_string(),
        "a100" | "a100sxm" | "a10080g" => "a10080gb".to_string(),
        "a10040g" | "a100sxm40gb" => "a10040gb".to_string(),
        "h200sxm" | "h200141gb" => "h200".to_string(),
        "b200sxm" => "b200".to_string(),
        _ => k,
    };
    gpu_catalog().into_iter().find(|g| key(&g.name) == k)
}

/// Catalogue names, comma-separated, for error messages.
pub fn gpu_names() -> String {
    gpu_catalog()
        .iter()
        .map(|g| g.name.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_the_required_gpus_and_aliases() {
        for n in [
            "a10g",
            "l40s",
            "a100-40gb",
            "a100-80gb",
            "h100-pcie",
            "h100-sxm",
            "h200",
            "b200",
        ] {
            assert!(find_gpu(n).is_some(), "{n}");
        }
        assert_eq!(find_gpu("H100").unwrap().name, "h100-sxm");
        assert_eq!(find_gpu("H100_SXM").unwrap().name, "h100-sxm");
        assert!(find_gpu("tpu-v5").is_none());
    }

    #[test]
    fn pcie_parts_have_no_nvlink_and_ampere_has_no_fp8() {
        assert!(!find_gpu("l40s").unwrap().nvlink);
        assert!(!find_gpu("h100-pcie").unwrap().nvlink);
        assert!(find_gpu("h100-sxm").unwrap().nvlink);
        let a100 = find_gpu("a100").unwrap();
        assert!(!a100.arch.has_fp8());
        assert_eq!(a100.peak_tflops(true), 312.0);
        assert!(!a100.vllm_large_defaults());
        assert!(find_gpu("h100-sxm").unwrap().vllm_large_defaults());
    }
}
