//! `inferplane sim`: run one or more simulated vLLM-compatible engines on real sockets.

use anyhow::{Context, bail};
use inferplane_sim::{EngineProfile, FaultConfig, KvEventsConfig, SimConfig, SimServer};
use std::net::{IpAddr, SocketAddr};

/// Arguments of `inferplane sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port of the single instance (0: the OS picks one). Ignored with --base-port.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// How many instances to run.
    #[arg(long, default_value_t = 1)]
    pub count: u16,
    /// First port when running several instances: they listen on consecutive ports.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Model name the instances serve.
    #[arg(long, default_value = "llama-3.1-8b")]
    pub model: String,
    /// Step-time profile preset (zero, tiny, llama-3.1-8b-a10g, llama-3.1-8b-h100, ...).
    #[arg(long, default_value = "llama-3.1-8b-h100")]
    pub profile: String,
    /// Build the profile from the planner's cost model for --model on this GPU
    /// (e.g. h100-sxm) instead of a preset; --model must then be a catalogue model.
    #[arg(long)]
    pub gpu: Option<String>,
    /// Tensor-parallel size (with --gpu).
    #[arg(long, default_value_t = 1)]
    pub tp: u32,
    /// Pipeline-parallel size (with --gpu).
    #[arg(long, default_value_t = 1)]
    pub pp: u32,
    /// Data-parallel size (with --gpu).
    #[arg(long, default_value_t = 1)]
    pub dp: u32,
    /// Expert-parallel size (with --gpu).
    #[arg(long, default_value_t = 1)]
    pub ep: u32,
    /// Override the profile's max_num_seqs.
    #[arg(long)]
    pub max_num_seqs: Option<u32>,
    /// Override the profile's KV-cache size, in blocks of 16 tokens.
    #[arg(long)]
    pub kv_blocks: Option<u32>,
    /// Virtual seconds per real second (e.g. 10 runs ten times faster than real time).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Stop outputs at a seeded length in 1..=max_tokens instead of always max_tokens.
    #[arg(long)]
    pub stop_seed: Option<u64>,
    /// max_tokens for chat requests that give none.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: u32,
    /// Require `Authorization: Bearer KEY` on /v1/* (like `vllm serve --api-key`).
    #[arg(long, env = "INFERPLANE_SIM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Publish KV usage under vLLM V0's name vllm:gpu_cache_usage_perc.
    #[arg(long)]
    pub legacy_metric_names: bool,
    /// Publish KV cache events like `vllm serve --kv-events-config`: JSON with vLLM's
    /// fields, e.g. '{"enable_kv_cache_events":true,"publisher":"zmq",
    /// "endpoint":"tcp://*:5557","replay_endpoint":"tcp://*:5558","topic":"kv-events"}'.
    /// With --count > 1, instance i binds each port + i (as vLLM offsets by DP rank).
    #[arg(long, value_parser = parse_kv_events_config)]
    pub kv_events_config: Option<KvEventsConfig>,
    /// Tokenize prompts with this Hugging Face tokenizer.json (chats through the chat
    /// template of the tokenizer_config.json beside it, or --chat-template), so cache
    /// blocks and KV events' token_ids are real token ids, as the gateway's pool with
    /// the same `tokenizer` hashes them; without it the stand-in (4 bytes per token).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<std::path::PathBuf>,
    /// The chat template for --tokenizer (Jinja text, or JSON with a chat_template field).
    #[arg(long, value_name = "PATH", requires = "tokenizer")]
    pub chat_template: Option<std::path::PathBuf>,
    /// Fault: fail the Nth completion request.
    #[arg(long)]
    pub fail_nth: Option<u64>,
    /// Fault: fail every completion request.
    #[arg(long)]
    pub fail_all: bool,
    /// Status code of injected failures.
    #[arg(long, default_value_t = 500)]
    pub fail_status: u16,
    /// Fault: accept requests but never answer.
    #[arg(long)]
    pub hang_before_first_token: bool,
    /// Fault: stall after this many tokens.
    #[arg(long)]
    pub hang_after_tokens: Option<u32>,
    /// Fault: run this many times slower.
    #[arg(long, default_value_t = 1.0)]
    pub slowdown: f64,
    /// Fault: report unhealthy on /health.
    #[arg(long)]
    pub unhealthy: bool,
    /// Fault: refuse connections.
    #[arg(long)]
    pub refuse_connections: bool,
}

impl SimArgs {
    /// The profile with overrides applied.
    pub fn profile(&self) -> anyhow::Result<EngineProfile> {
        let mut p = match &self.gpu {
            Some(gpu) => {
                let layout = inferplane_core::Layout {
                    tp: self.tp,
                    pp: self.pp,
                    dp: self.dp,
                    ep: self.ep,
                };
                EngineProfile::from_planner(
                    &self.model,
                    gpu,
                    layout,
                    &inferplane_planner::EngineOptions::default(),
                )?
            }
            None => EngineProfile::preset(&self.profile)?,
        };
        if let Some(n) = self.max_num_seqs {
            p.max_num_seqs = n;
        }
        if let Some(n) = self.kv_blocks {
            p.kv_blocks = n;
        }
        Ok(p)
    }

    fn faults(&self) -> FaultConfig {
        FaultConfig {
            fail_nth: self.fail_nth,
            fail_all: self.fail_all,
            fail_status: self.fail_status,
            hang_before_first_token: self.hang_before_first_token,
            hang_after_tokens: self.hang_after_tokens,
            slowdown: self.slowdown,
            unhealthy: self.unhealthy,
            refuse_connections: self.refuse_connections,
        }
    }
}

fn parse_kv_events_config(json: &str) -> Result<KvEventsConfig, String> {
    KvEventsConfig::from_json(json).map_err(|e| format!("invalid --kv-events-config: {e}"))
}

/// The endpoint with its TCP port moved up by `offset` (port 0 stays 0: the OS picks).
fn offset_port(endpoint: &str, offset: u16) -> anyhow::Result<String> {
    if offset == 0 {
        return Ok(endpoint.to_owned());
    }
    let (base, port) = endpoint
        .rsplit_once(':')
        .context("KV event endpoint has no port")?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("KV event endpoint port in {endpoint}"))?;
    if port == 0 {
        return Ok(endpoint.to_owned());
    }
    let port = port
        .checked_add(offset)
        .context("KV event port + instance index runs past 65535")?;
    Ok(format!("{base}:{port}"))
}

/// Runs `inferplane sim` until Ctrl-C.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let profile = args.profile()?;
    let tokenizer = match &args.tokenizer {
        Some(path) => Some(std::sync::Arc::new(
            inferplane_tokenize::PromptTokenizer::load(path, args.chat_template.as_deref())
                .map_err(|e| {
                    anyhow::anyhow!("--tokenizer: {}", inferplane_tokenize::ErrorChain(&e))
                })?,
        )),
        None => None,
    };
    let mut servers = Vec::new();
    for i in 0..args.count {
        let port = match args.base_port {
            Some(base) => base
                .checked_add(i)
                .context("--base-port + --count runs past port 65535")?,
            None if args.count == 1 => args.port,
            None => 0,
        };
        let mut cfg = SimConfig::new(args.model.clone(), profile.clone());
        cfg.instance_id = format!("sim-{i}");
        cfg.time_scale = args.time_scale;
        cfg.stop_seed = args.stop_seed;
        cfg.default_max_tokens = args.default_max_tokens;
        cfg.legacy_metric_names = args.legacy_metric_names;
        cfg.api_key = args.api_key.clone();
        cfg.faults = args.faults();
        cfg.tokenizer = tokenizer.clone();
        if let Some(kv) = &args.kv_events_config {
            let mut kv = kv.clone();
            kv.endpoint = offset_port(&kv.endpoint, i)?;
            kv.replay_endpoint = kv
                .replay_endpoint
                .as_deref()
                .map(|e| offset_port(e, i))
                .transpose()?;
            cfg.kv_events = Some(kv);
        }
        let server = SimServer::start(cfg, SocketAddr::new(args.host, port)).await?;
        println!(
            "sim-{i}: model {} profile {} on {}",
            args.model,
            profile.name,
            server.url()
        );
        if let Some(ep) = server.kv_events_endpoint() {
            match server.kv_events_replay_endpoint() {
                Some(replay) => println!("sim-{i}: KV events on {ep}, replay on {replay}"),
                None => println!("sim-{i}: KV events on {ep}"),
            }
        }
        servers.push(server);
    }
    if let Some(s) = servers.first() {
        println!(
            "try: curl -s {}/v1/chat/completions -H 'content-type: application/json' \\\n       -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}],\"max_tokens\":16}}'",
            s.url(),
            args.model
        );
    }
    println!("press Ctrl-C to stop");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    for s in servers {
        s.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_event_ports_move_up_by_the_instance_index() {
        assert_eq!(offset_port("tcp://*:5557", 0).unwrap(), "tcp://*:5557");
        assert_eq!(offset_port("tcp://*:5557", 2).unwrap(), "tcp://*:5559");
        assert_eq!(
            offset_port("tcp://127.0.0.1:0", 3).unwrap(),
            "tcp://127.0.0.1:0"
        );
        assert!(offset_port("tcp://*:65535", 1).is_err());
        assert!(offset_port("tcp://*:x", 1).is_err());
        assert!(parse_kv_events_config("{\"enable_kv_cache_events\": 1}").is_err());
    }
}
