//! `inferplane serve`: the gateway, configured by a TOML file, flags and `INFERPLANE_*`
//! variables (flags and variables override the file).

use anyhow::{Context, bail};
use inferplane_gateway::config::check_url;
use inferplane_gateway::{FileConfig, Gateway, Stopped};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `inferplane serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). See config/ for examples.
    #[arg(long, env = "INFERPLANE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides `[server] listen`).
    #[arg(long, env = "INFERPLANE_LISTEN")]
    pub listen: Option<String>,
    /// An engine base URL; repeat for several. Comma-separated in INFERPLANE_INSTANCES.
    #[arg(long = "instance", env = "INFERPLANE_INSTANCES", value_delimiter = ',')]
    pub instances: Vec<String>,
    /// Model served by the --instance engines; asked from their /v1/models when absent.
    #[arg(long, env = "INFERPLANE_MODEL")]
    pub model: Option<String>,
    /// Bearer token for /admin/* (overrides `[admin] token`).
    #[arg(long, env = "INFERPLANE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check: bool,
}

/// Asks an engine which model it serves.
async fn discover_model(url: &str) -> anyhow::Result<String> {
    let resp: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/v1/models"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}/v1/models to learn its model; pass --model"))?
        .json()
        .await
        .with_context(|| format!("{url}/v1/models did not answer JSON; pass --model"))?;
    resp["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{url}/v1/models lists no model; pass --model"))
}

/// Builds the validated configuration from file, flags and environment.
pub async fn load(args: &ServeArgs) -> anyhow::Result<inferplane_gateway::GatewayConfig> {
    let mut file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    if let Some(listen) = &args.listen {
        file.server.listen = listen.clone();
    }
    if let Some(token) = &args.admin_token {
        file.admin.token = Some(token.clone());
    }
    for url in args.instances.iter().filter(|u| !u.trim().is_empty()) {
        let url = check_url(url.trim()).map_err(|m| anyhow::anyhow!("--instance: {m}"))?;
        let model = match &args.model {
            Some(m) => m.clone(),
            None => discover_model(&url).await?,
        };
        file.add_instance_url(&model, &url);
    }
    // with [discovery.kubernetes] the engines come from the Kubernetes API
    if file.pools.is_empty() && file.discovery.kubernetes.is_none() {
        bail!(
            "no engines configured: pass --instance URL, or --config with [[pools]] or \
             [discovery.kubernetes] (see config/)"
        );
    }
    Ok(file.validate()?)
}

/// Runs the gateway until SIGINT/SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args).await?;
    if args.check {
        println!(
            "configuration OK: {} pool(s), {} instance(s), listening on {}",
            config.pools.len(),
            config
                .pools
                .iter()
                .map(|p| p.instances.len())
                .sum::<usize>(),
            config.listen
        );
        if let Some(k) = &config.kubernetes {
            println!("instances also discovered from Kubernetes: {:?}", k.target);
        }
        return Ok(());
    }
    let gw = Gateway::start(config).await?;
    println!("inferplane gateway listening on {}", gw.url());
    println!("models: {}", gw.control_plane().models().join(", "));
    match gw.run_until_signal().await {
        Stopped::Clean => Ok(()),
        Stopped::GraceExceeded => {
            bail!("some requests did not finish within the shutdown grace period")
        }
        Stopped::DispatcherFailed => {
            bail!("the dispatcher stopped unexpectedly; the gateway cannot serve")
        }
    }
}
