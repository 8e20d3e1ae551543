//! `worker --pool P [--concurrency N]`: executes the jobs of one worker pool
//! until SIGINT or SIGTERM, then finishes its running jobs and exits.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use common::config::{Environment, WorkerSettings};
use worker::Worker;

/// migrate-hub worker: executes approved runs against the database targets
/// of one worker pool. Settings come from MH_* environment variables
/// (MH_DATABASE_URL and MH_ENCRYPTION_KEYS are required); the flags below
/// override their variables.
#[derive(Debug, Parser)]
#[command(name = "worker", version)]
struct Cli {
    /// Worker pool whose jobs this process executes [env: MH_WORKER_POOL, default: default]
    #[arg(long, value_name = "POOL")]
    pool: Option<String>,
    /// Jobs (targets) executed at once by this process [env: MH_WORKER_CONCURRENCY, default: 4]
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match WorkerSettings::load(&Environment, cli.pool, cli.concurrency) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("worker: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporter's batch task runs on the runtime.
    let telemetry = {
        let _entered = runtime.enter();
        common::telemetry::init(settings.common.log_format, settings.common.otel.as_ref())
    };
    let code = match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "worker failed");
            eprintln!("worker: {err:#}");
            ExitCode::FAILURE
        }
    };
    // Exports the last spans while the runtime still runs the exporter.
    telemetry.shutdown();
    code
}

async fn serve(settings: WorkerSettings) -> anyhow::Result<()> {
    // Each running job needs a tool-database connection now and then; the
    // queue consumer needs a few of its own (fetch, heartbeat, LISTEN).
    let connections = u32::try_from(settings.concurrency)
        .unwrap_or(u32::MAX)
        .saturating_add(4);
    let db = common::db::connect(&settings.common.database_url, connections)
        .await
        .context("cannot connect to the tool database (MH_DATABASE_URL)")?;
    // The control plane owns the tool database's schema; a worker never
    // migrates it, but refuses to run against one it does not understand.
    if !common::db::migrations_current(&db)
        .await
        .context("cannot read the tool database's migration state")?
    {
        anyhow::bail!(
            "the tool database schema is not current: migrate it with the control plane first"
        );
    }
    // Before any work is claimed: a port taken by another worker on this
    // host stops this one here, naming the setting (`:0` picks a free port).
    let metrics = worker::metrics::bind(settings.metrics_listen).await?;
    tracing::info!(
        listen = %metrics.local_addr().context("reading the metrics address")?,
        "metrics endpoint listening"
    );
    tokio::spawn(async move {
        if let Err(err) = worker::metrics::serve(metrics).await {
            tracing::error!(error = %err, "metrics endpoint stopped");
        }
    });
    let worker = Worker::new(
        db,
        settings.common.keys,
        settings.pool,
        settings.concurrency,
        settings.lock_wait_ms,
    )
    .drift_scan(
        (settings.drift_scan_minutes > 0)
            .then(|| Duration::from_secs(settings.drift_scan_minutes.saturating_mul(60))),
    );
    worker.run(shutdown_signal()).await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what orchestrators send).
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
