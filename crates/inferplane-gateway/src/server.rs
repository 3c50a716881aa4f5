//! `Gateway`: the control plane behind the HTTP edge on a real socket, with graceful
//! shutdown (stop accepting, let in-flight streams finish within the grace period, exit).
//! With `[discovery.kubernetes]` (and the `kubernetes` feature) it also starts the
//! discovery task, and stops it first on shutdown.

use crate::config::GatewayConfig;
use crate::control_plane::{ControlPlane, StartError};
use crate::http::{AppState, app};
use crate::listener::ClientLimits;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest wait on the shared store for an admin API key change.
const KEY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The control plane could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Kubernetes discovery could not start.
    #[cfg(feature = "kubernetes")]
    #[error("kubernetes discovery cannot start")]
    Discovery(#[source] crate::discovery::kubernetes::DiscoveryError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    cp: ControlPlane,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    grace: std::time::Duration,
    delay: std::time::Duration,
    /// The Kubernetes discovery task, with `[discovery.kubernetes]`.
    #[cfg(feature = "kubernetes")]
    discovery: Option<crate::discovery::kubernetes::Discovery>,
}

impl Gateway {
    /// Binds the configured address (port 0: the OS picks), starts the control plane and
    /// serves.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let listen = config.listen;
        let grace = config.shutdown_grace;
        let delay = config.shutdown_delay;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: listen,
            source,
        })?;
        let cp = ControlPlane::start(config)?;
        #[cfg(feature = "kubernetes")]
        let discovery = match cp.config().kubernetes.clone() {
            Some(k) => match crate::discovery::kubernetes::start(cp.clone(), k).await {
                Ok(d) => Some(d),
                Err(e) => {
                    cp.shutdown();
                    return Err(GatewayError::Discovery(e));
                }
            },
            None => None,
        };
        #[cfg(not(feature = "kubernetes"))]
        if cp.config().kubernetes.is_some() {
            // validation refuses the section in such a build; a config made by hand may not
            tracing::error!(
                "[discovery.kubernetes] is set but this binary was built without the `kubernetes` feature: nothing is discovered"
            );
        }
        let tenants = Arc::new(crate::tenants::Tenants::new(&cp.config().tenants));
        let keystore = match &cp.config().shared {
            Some(s) => {
                let store = crate::tenants::KeyStore::new(
                    s.redis.expose(),
                    &s.key_prefix,
                    s.fallback_after.min(KEY_STORE_TIMEOUT),
                )
                .map(Arc::new)
                .map_err(|e| {
                    cp.shutdown();
                    GatewayError::Start(StartError::Shared(e))
                })?;
                crate::tenants::keystore::spawn_sync(store.clone(), Arc::downgrade(&tenants));
                Some(store)
            }
            None => None,
        };
        let state = Arc::new(AppState {
            cp: cp.clone(),
            loopback: addr.ip().is_loopback(),
            listen: addr.to_string(),
            tenants,
            keystore,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let router = app(state);
        let limits: ClientLimits = cp.config().client;
        let task = tokio::spawn(crate::listener::serve(listener, router, limits, stopped));
        tracing::info!(%addr, "gateway listening");
        Ok(Gateway {
            addr,
            cp,
            stop: Some(stop),
            task,
            grace,
            delay,
            #[cfg(feature = "kubernetes")]
            discovery,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The control plane behind it.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// Stops accepting connections, lets in-flight requests finish within the grace
    /// period, then stops the control plane. Returns whether everything finished in time.
    pub async fn shutdown(mut self) -> bool {
        // no more instance changes from Kubernetes while the rest drains
        #[cfg(feature = "kubernetes")]
        if let Some(d) = self.discovery.take() {
            d.stop();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let finished = tokio::time::timeout(self.grace, &mut self.task)
            .await
            .is_ok();
        if !finished {
            tracing::warn!(grace = ?self.grace, "in-flight requests did not finish within the grace period");
            // streams end with an error event, not a cut connection; a moment to write it
            self.cp.cut_streams();
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(500), &mut self.task).await;
            self.task.abort();
        }
        // what the last requests counted and spent reaches the store (bounded by its
        // timeout; a failed report is lost from the fleet's totals, never from limits)
        if let Err(e) = self.cp.limiter().report(crate::tenants::now_ms()).await {
            tracing::warn!(error = %e, "shared store: the last usage totals were not reported");
        }
        self.cp.shutdown();
        finished
    }

    /// Leaves as a replica behind a load balancer should: `/ready` fails at once, it
    /// serves on for `delay` so the balancer stops sending it traffic, then drains as
    /// [`Self::shutdown`] does. Returns whether everything finished within the grace.
    pub async fn leave(self, delay: std::time::Duration) -> bool {
        self.cp.begin_leaving();
        tokio::time::sleep(delay).await;
        self.shutdown().await
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully; or until the dispatcher
    /// stops (a bug), then at once: a gateway that cannot schedule must not keep accepting
    /// connections. The caller exits non-zero unless this is [`Stopped::Clean`].
    ///
    /// On SIGTERM (what Kubernetes sends) `/ready` fails at once and the gateway keeps
    /// serving for `shutdown_delay`, so the load balancer stops routing to it before it
    /// stops accepting; a second signal, or SIGINT, skips the rest of the delay. Then it
    /// drains within `shutdown_grace`, as [`Self::shutdown`] does.
    pub async fn run_until_signal(self) -> Stopped {
        let cp = self.cp.clone();
        let dispatcher_gone = |cp: ControlPlane| async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            while cp.is_alive() {
                tick.tick().await;
            }
        };
        let mut signals = Signals::new();
        tokio::select! {
            signal = signals.next() => {
                self.cp.begin_leaving();
                if signal == Signal::Terminate && !self.delay.is_zero() {
                    tracing::info!(
                        delay = ?self.delay,
                        "SIGTERM: /ready fails now; serving on until load balancers notice"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(self.delay) => {}
                        _ = signals.next() => tracing::info!("second signal: not waiting any longer"),
                        () = dispatcher_gone(self.cp.clone()) => {}
                    }
                }
                if !self.cp.is_alive() {
                    tracing::error!("the dispatcher stopped: shutting down");
                    self.shutdown().await;
                    return Stopped::DispatcherFailed;
                }
                tracing::info!("shutting down: no new connections, draining in-flight requests");
                if self.shutdown().await {
                    Stopped::Clean
                } else {
                    Stopped::GraceExceeded
                }
            }
            () = dispatcher_gone(cp) => {
                tracing::error!("the dispatcher stopped: shutting down");
                self.shutdown().await;
                Stopped::DispatcherFailed
            }
        }
    }
}

/// How [`Gateway::run_until_signal`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// On a signal, every request finished within the grace period.
    Clean,
    /// On a signal, some requests were cut at the end of the grace period.
    GraceExceeded,
    /// The dispatcher task ended on its own (a bug).
    DispatcherFailed,
}

/// Which shutdown signal came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (an orchestrator stopping the process).
    Terminate,
}

/// The process's shutdown signals, installed once so a second one is seen too.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only"))
                .ok(),
        }
    }

    /// Waits for the next SIGINT or SIGTERM.
    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}
