//! `draven serve` and `draven migrate`: open storage, migrate, bootstrap, serve, drain.

use crate::config::{unknown_env_vars, Config, ServeArgs, StoreArgs};
use anyhow::{Context, Result};
use draven_api::telemetry::{init_logging, LogFormat};
use draven_api::{ApiConfig, Draining, Services};
use draven_blob::{Blobs, Location, S3Settings};
use draven_store::crypto::MasterKey;
use draven_store::Db;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub async fn open_db(config: &Config) -> Result<Db> {
    if config.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    }
    let db = Db::connect(&config.database_url)
        .await
        .context("opening the database")?;
    db.migrate().await.context("migrating the database")?;
    Ok(db)
}

pub async fn migrate(store: StoreArgs) -> Result<ExitCode> {
    let config = Config::resolve_store(&store)?;
    std::fs::create_dir_all(&config.data_dir).ok();
    let db = Db::connect(&config.database_url)
        .await
        .context("opening the database")?;
    let report = db.migrate().await.context("migrating")?;
    if report.applied.is_empty() {
        println!("database is up to date (migration {})", report.current);
    } else {
        for m in report.applied {
            println!("applied {m}");
        }
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The master key: from configuration, else the key file in the data dir (created 0600).
fn master_key(config: &Config) -> Result<MasterKey> {
    if let Some(k) = &config.master_key {
        return MasterKey::parse(k).context("DRAVEN_MASTER_KEY");
    }
    let path = config.data_dir.join("master.key");
    if !path.exists() {
        write_new_key_file(&path)?;
        tracing::info!(path = %path.display(), "created a new master key file (mode 0600); back it up: secrets cannot be read without it");
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    MasterKey::parse(&text).with_context(|| format!("master key file {}", path.display()))
}

fn write_new_key_file(path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(MasterKey::generate_hex().as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Removes payload objects left by a crash between an object write and its commit: a minute
/// after start, then hourly.
fn spawn_orphan_sweeper(registry: draven_registry::Registry) {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut every = tokio::time::interval_at(start, std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let tenants = match registry.db.all_tenant_ids().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "orphan sweep: cannot list tenants");
                    continue;
                }
            };
            for t in tenants {
                match registry.sweep_orphans(&t, draven_store::now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(tenant = %t, removed = n, "removed orphaned payloads"),
                    Err(e) => tracing::warn!(tenant = %t, error = %e, "orphan sweep failed"),
                }
            }
        }
    });
}

/// Fails running deploy jobs whose runner stopped heartbeating, every few seconds, so a dead
/// runner never holds an environment.
fn spawn_job_reaper(db: Db) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            match db
                .reap_lost_jobs(&draven_store::audit::Actor::system())
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::warn!(jobs = n, "failed deploy jobs whose runner was lost"),
                Err(e) => tracing::warn!(error = %e, "job reaper failed"),
            }
        }
    });
}

/// The functions engine with the local executor, and the Kubernetes one when configured.
fn functions_engine(
    config: &Config,
    db: &Db,
    kek: Arc<dyn draven_store::crypto::KeyEncryptionKey>,
    logs: &Path,
    max_body: usize,
    kube: Option<Arc<dyn draven_functions::executor::Executor>>,
) -> Result<draven_functions::Engine> {
    use draven_functions::executor::local::{LocalConfig, LocalExecutor};
    let allow = draven_functions::callback::AllowList::parse(&config.callback_allow)
        .map_err(|e| anyhow::anyhow!("DRAVEN_CALLBACK_ALLOW: {e}"))?;
    let engine_config = draven_functions::EngineConfig {
        limits: draven_functions::spec::SpecLimits {
            max_payload_bytes: max_body,
            ..Default::default()
        },
        invocation_capacity: config.invocation_retention,
        invocation_ttl: config.invocation_ttl,
        dlq_capacity: config.dlq_capacity,
        tenant_rate: config
            .tenant_invoke_rate
            .map(|r| draven_functions::spec::RateLimit {
                per_second: r,
                burst: None,
            }),
        callback_allow: allow,
        ..Default::default()
    };
    let local = LocalExecutor::new(LocalConfig::new(logs.to_owned()));
    let mut executors: Vec<Arc<dyn draven_functions::executor::Executor>> = vec![Arc::new(local)];
    executors.extend(kube);
    Ok(draven_functions::Engine::new(
        db.clone(),
        kek,
        executors,
        engine_config,
    ))
}

/// The provider dispatcher (jobs of github/gitlab/bitbucket projects) and the notifier.
fn spawn_pipelines(
    db: &Db,
    kek: &Arc<dyn draven_store::crypto::KeyEncryptionKey>,
    config: &Config,
) {
    use draven_deploy::dispatch::{DispatchConfig, Dispatcher};
    use draven_deploy::notify::{Notifier, NotifyConfig};
    Dispatcher::new(
        db.clone(),
        kek.clone(),
        DispatchConfig {
            public_url: config.public_url.clone(),
            poll_interval: config.provider_poll,
            lease: config.runner_lease,
            ..DispatchConfig::default()
        },
    )
    .spawn();
    Notifier::new(
        db.clone(),
        kek.clone(),
        NotifyConfig {
            public_url: config.public_url.clone(),
            ..NotifyConfig::default()
        },
    )
    .spawn();
}

/// `draven runner`: the agent loop until SIGTERM/SIGINT (a job in progress is finished first).
pub async fn runner(args: crate::config::RunnerArgs) -> Result<ExitCode> {
    init_logging(LogFormat::Json, "info");
    draven_core::Slug::parse("name", &args.name)?;
    let config = draven_runner::RunnerConfig {
        server: args.server,
        token: args.token,
        name: args.name,
        work_dir: args.work_dir,
    };
    tracing::info!(server = %config.server, name = %config.name, "runner started");
    draven_runner::run(config, wait_for_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Registers the SIGTERM/SIGINT handlers now (a signal arriving before the returned future is
/// first polled is not lost to the default action) and resolves on the first of them.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
    }
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = Config::resolve(&args)?;
    init_logging(
        if config.log_json {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        &config.log,
    );
    for var in unknown_env_vars() {
        tracing::warn!(variable = %var, "unknown DRAVEN_* environment variable ignored (typo?)");
    }
    let db = open_db(&config).await?;
    let location = Location::parse(&config.object_store)?;
    let s3 = S3Settings {
        endpoint: config.s3_endpoint.clone(),
        ..S3Settings::default()
    };
    let blobs = Blobs::open(&location, &s3).context("opening object storage")?;
    blobs
        .init_probe()
        .await
        .with_context(|| format!("writing to object storage ({})", blobs.describe()))?;
    let kek = master_key(&config)?;

    if let Some(b) = db.bootstrap(config.bootstrap_token.as_deref()).await? {
        if config.bootstrap_token.is_some() {
            println!("draven: first start: created tenant {:?} and system administrator {:?} with the token from DRAVEN_BOOTSTRAP_TOKEN", b.tenant, b.username);
        } else {
            println!(
                "draven: first start: created tenant {:?} and system administrator {:?}",
                b.tenant, b.username
            );
            println!(
                "draven: bootstrap admin token (shown once, store it now): {}",
                b.token
            );
        }
    }

    spawn_orphan_sweeper(draven_registry::Registry::new(db.clone(), blobs.clone()));
    spawn_job_reaper(db.clone());
    let kek: Arc<dyn draven_store::crypto::KeyEncryptionKey> = Arc::new(kek);
    let function_logs = config.data_dir.join("functions").join("logs");
    let engine = functions_engine(
        &config,
        &db,
        kek.clone(),
        &function_logs,
        config.max_body_bytes,
        crate::kube::executor(&args.kube).await?,
    )?;
    engine.spawn_refresher();
    spawn_pipelines(&db, &kek, &config);
    let draining = Draining::default();
    let app = draven_api::app(Services {
        db: db.clone(),
        blobs,
        kek,
        config: ApiConfig {
            max_body_bytes: config.max_body_bytes,
            idempotency_ttl: config.idempotency_ttl,
            runner_lease: config.runner_lease,
            session_ttl: config.ui_session_ttl,
            secure_cookies: config.ui_secure_cookies,
            ..ApiConfig::default()
        },
        draining: draining.clone(),
        git_cache: config.data_dir.join("git-cache"),
        functions: Some(engine.clone()),
        function_logs: Some(function_logs),
    })
    .map_err(anyhow::Error::msg)?;

    // Before anyone can learn the address: a SIGTERM from then on drains.
    let signalled = wait_for_signal();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %db.backend_name(), "listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delay = config.shutdown_delay;
    let grace = config.shutdown_grace;
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<usize>();
    tokio::spawn(async move {
        signalled.await;
        draining.start();
        // Functions: no new invocations from now; queued and running ones finish within the
        // grace period, then function instances stop.
        tokio::spawn(async move {
            let left = engine.drain(grace).await;
            let _ = drained_tx.send(left);
        });
        tokio::time::sleep(delay).await;
        let _ = stop_tx.send(true);
    });
    println!("draven: listening on http://{addr}");
    let mut graceful = stop_rx.clone();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|stop| *stop).await;
    });
    let mut grace_rx = stop_rx;
    tokio::select! {
        result = server => result.context("serving")?,
        _ = async move {
            let _ = grace_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace_secs = grace.as_secs(), "grace period over with requests still in flight; exiting"),
    }
    match drained_rx.await {
        Ok(0) => tracing::info!("function queues drained"),
        Ok(left) => {
            tracing::warn!(
                unfinished = left,
                "grace period over with invocations unfinished"
            )
        }
        Err(_) => {}
    }
    db.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
