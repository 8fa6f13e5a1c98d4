//! ① Accept: bind the API and admin listeners, serve HTTP/1.1 and h2c on each connection, and
//! shut down gracefully.

pub(crate) mod admin;
pub(crate) mod app;
pub(crate) mod boundary;
mod coarse_timer;
mod pacemaker;
pub mod reload;
pub(crate) mod request_id;
pub(crate) mod shutdown;
mod stall;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::Service;

use crate::config::load::{self, Env, Overrides, ProcessEnv};
use crate::config::{Origin, ServerSettings};
use crate::metrics::Metrics;
use crate::pipeline::Ctx;
use reload::State;

/// Liveness and readiness, shared with the admin listener.
#[derive(Default)]
pub(crate) struct Health {
    ready: AtomicBool,
}

impl Health {
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
    fn set_ready(&self, v: bool) {
        self.ready.store(v, Ordering::Release);
    }
}

/// A running gateway, as tests and `main` see it.
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<State>,
    /// Resolves when the gateway has shut down.
    pub done: tokio::task::JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl Running {
    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Loads the configuration and starts serving. Returns once the listeners are bound.
pub(crate) async fn start(origin: Origin, overrides: Overrides) -> anyhow::Result<Running> {
    start_with_env(origin, overrides, Box::new(ProcessEnv)).await
}

/// [`start`] with the environment secrets are read from.
pub async fn start_with_env(
    origin: Origin,
    overrides: Overrides,
    env: Box<dyn Env + Send + Sync>,
) -> anyhow::Result<Running> {
    let started = Instant::now();
    let loaded = load::load(&origin, &overrides, env.as_ref())
        .map_err(|p| anyhow::anyhow!("the configuration is invalid:\n{p}"))?;
    if !loaded.disabled.is_empty() {
        tracing::info!(deployments = ?loaded.disabled, "deployments left out: their keys are not set");
    }
    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let state = State::new(loaded, origin, overrides, env, metrics.clone());
    let settings = state.config().server.clone();

    let api = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let admin = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", settings.admin_listen))?;
    let api_addr = api.local_addr()?;
    let admin_addr = admin.local_addr()?;

    // Local backends that answer right away are routable from the first request.
    let _ = tokio::time::timeout(Duration::from_secs(2), state.discover()).await;
    tokio::spawn(reload::watch(state.clone()));
    tokio::spawn(reload::discovery(state.clone()));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (deadline_tx, deadline_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let ctx = Arc::new(Ctx {
        metrics: metrics.clone(),
        live: state.live.clone(),
        drain_deadline: deadline_rx,
        admission: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
        streams: Arc::new(Semaphore::new(settings.max_open_streams)),
        pools: state.pools.clone(),
        conversations: crate::conversations::Conversations::new(&state.config().responses)
            .map_err(|e| anyhow::anyhow!("responses.store: {e}"))?,
    });
    let api_svc = app::Api::new(ctx);
    let admin_svc = admin::AdminService::new(metrics.clone(), health.clone(), state.clone());

    health.set_ready(true);
    metrics.startup.observe(started.elapsed().as_secs_f64());
    tracing::info!(
        api = %api_addr,
        admin = %admin_addr,
        config = %state.config().hash,
        deployments = state.live.load().deployments.len(),
        "modelgate is serving"
    );
    // Whoever waits for this line (a supervisor, a test) sees it now, not a batch later.
    crate::telemetry::flush();

    let live = state.live.clone();
    let served = serve(
        api,
        admin,
        api_svc,
        admin_svc,
        settings,
        health,
        shutdown_rx,
        deadline_tx,
    );
    let done = tokio::spawn(async move {
        served.await;
        // The last requests' spans go out before the process does.
        let tracer = live.load().tracer.clone();
        if let Some(t) = tracer {
            t.flush(Duration::from_secs(5)).await;
        }
    });
    Ok(Running {
        api_addr,
        admin_addr,
        state,
        done,
        shutdown: shutdown_tx,
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of a running server, assembled once"
)]
async fn serve<M>(
    api: TcpListener,
    admin: TcpListener,
    api_svc: app::Api,
    admin_svc: M,
    settings: ServerSettings,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
    deadline: watch::Sender<bool>,
) where
    M: Service<
            Request<Incoming>,
            Response = Response<http_body_util::Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    M::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let sweep = Arc::new(coarse_timer::Sweep::default());
    tokio::spawn(pacemaker::run(
        pacemaker::period(settings.header_read_timeout),
        sweep.clone(),
    ));
    let timer = coarse_timer::CoarseTimer::new(sweep.clone());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(timer.clone())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(64 << 10);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(32 << 10);
    let permits = Arc::new(Semaphore::new(settings.max_connections));

    // The admin listener stays up through the drain, so probes see readiness fail.
    let admin_builder = builder.clone();
    let admin_task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = admin.accept().await else {
                continue;
            };
            let conn = admin_builder
                .serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(admin_svc.clone()),
                )
                .into_owned();
            tokio::spawn(conn);
        }
    });

    let signal = shutdown::signal(&mut shutdown);
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            accepted = api.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Over the connection limit: refuse by closing at once.
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // A timer of its own, which tells an idle connection from a slow head by
                // its reads (see `coarse_timer`).
                let reads = Arc::new(coarse_timer::Reads::default());
                let mut own = builder.clone();
                own.http1().timer(timer.for_connection(
                    reads.clone(),
                    settings.header_read_timeout,
                    settings.idle_timeout,
                ));
                let io = stall::StallGuard::new(TokioIo::new(stream), settings.write_stall_timeout)
                    .counting(reads);
                let conn = own.serve_connection_with_upgrades(io, api_svc.clone());
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
        }
    }

    // Stop accepting, fail readiness, let in-flight work finish up to the drain deadline.
    health.set_ready(false);
    drop(api);
    tracing::info!(drain_timeout = ?settings.drain_timeout, "shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(settings.drain_timeout) => {
            // Streams still open end with an error event rather than a silent cut.
            let _ = deadline.send(true);
            tokio::time::sleep(Duration::from_millis(500)).await;
            tracing::warn!("drain deadline passed; remaining connections closed");
        }
    }
    admin_task.abort();
}

/// Runs until SIGTERM or SIGINT and a graceful drain.
pub async fn run(origin: Origin, overrides: Overrides) -> anyhow::Result<()> {
    let running = start(origin, overrides).await?;
    let Running { done, shutdown, .. } = running;
    let on_signal = async move {
        shutdown::os_signal().await;
        let _ = shutdown.send(true);
    };
    tokio::spawn(on_signal);
    done.await.context("the server task failed")?;
    Ok(())
}
