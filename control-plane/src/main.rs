//! `control-plane`: the command line. Each subcommand is a thin call into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::{
    config::{ControlPlaneSettings, Environment},
    db,
    domain::Role,
    store::audit,
    telemetry,
};
use control_plane::{app, ci, cli, lint, state};

#[derive(Debug, Parser)]
#[command(
    name = "control-plane",
    version,
    about = "migrate-hub control plane: web app, API, approvals and audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the web app and API (applies the tool database's migrations first).
    Serve {
        /// Do not apply the tool database's migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply the tool database's migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Import a folder of migration files (Flyway, golang-migrate, dbmate,
    /// goose or diesel layout, detected) into a project: all or nothing.
    Import {
        /// The project's slug.
        #[arg(long)]
        project: String,
        /// Recorded as the author of the imported migrations (default: the
        /// built-in import account, which cannot sign in).
        #[arg(long)]
        author: Option<String>,
        /// Allow versions lower than one already applied on a target of
        /// the project (refused otherwise, like Flyway without outOfOrder).
        #[arg(long)]
        allow_out_of_order: bool,
        /// The folder holding the migration files.
        dir: std::path::PathBuf,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the encryption keys of stored secrets.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// A client for CI pipelines over the API: sync migrations, request a
    /// run, wait for it. Needs only MH_URL and MH_TOKEN; exits 0 (done),
    /// 1 (conflicts, or the run did not succeed) or 2 (error).
    Ci {
        #[command(subcommand)]
        command: ci::CiCommand,
    },
    /// Review migration SQL offline (the hub's SQL review analyzers): prints
    /// `file:line: CODE severity message`; exits 0 (no error-level
    /// finding), 1 (some) or 2 (the paths could not be read).
    Lint(lint::LintArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-encrypt every stored secret with the newest key of MH_ENCRYPTION_KEYS
    /// (the last one); secrets already on it are skipped.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user, or update the role of an existing one.
    Add {
        #[arg(long)]
        email: String,
        /// user, manager or admin.
        #[arg(long)]
        role: Role,
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token for a user and print it, alone, on standard output.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// user, manager or admin; at most the user's own role (default: the user's role).
        #[arg(long)]
        role: Option<Role>,
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the audit hash chain; exits non-zero at the first broken row.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Pipelines have no tool database: the client and the linter run before
    // (and without) the control plane's settings.
    let command = match cli.command {
        Command::Ci { command } => return ci::main(command),
        Command::Lint(args) => return lint::main(args),
        command => command,
    };
    let settings = match ControlPlaneSettings::load(&Environment) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    // The trace exporter's batch task runs on the runtime.
    let telemetry = {
        let _entered = runtime.enter();
        telemetry::init(settings.common.log_format, settings.common.otel.as_ref())
    };
    let code = match runtime.block_on(run(command, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Exports the last spans while the runtime still runs the exporter.
    telemetry.shutdown();
    code
}

async fn run(command: Command, settings: ControlPlaneSettings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Ci { .. } | Command::Lint(_) => {
            unreachable!("`ci` and `lint` are dispatched in main, before the settings load")
        }
        Command::Serve { no_migrate } => {
            // Lazy: an unavailable tool database is reported on /readyz
            // instead of stopping the server.
            let pool = db::connect_lazy(&settings.common.database_url, 20)?;
            if !no_migrate {
                db::migrate(&pool).await?;
            }
            let listener = tokio::net::TcpListener::bind(settings.listen).await?;
            tracing::info!(listen = %settings.listen, public_url = %settings.public_url, "control plane listening");
            let state = state::AppState::new(pool, settings)?;
            app::serve(listener, state, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let pool = db::connect(&settings.common.database_url, 2).await?;
            db::migrate(&pool).await?;
            eprintln!("tool database is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command: UserCommand::Add { email, role, name },
        } => {
            let pool = db::connect(&settings.common.database_url, 2).await?;
            cli::user_add(&pool, &email, &name, role).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    email,
                    name,
                    role,
                    expires_in_days,
                },
        } => {
            let pool = db::connect(&settings.common.database_url, 2).await?;
            let token = cli::token_create(&pool, &email, &name, role, expires_in_days).await?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let pool = db::connect(&settings.common.database_url, 2).await?;
            let rotation = cli::keys_rotate(&pool, &settings.common.keys).await?;
            println!("{rotation}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            project,
            author,
            allow_out_of_order,
            dir,
        } => {
            let pool = db::connect(&settings.common.database_url, 2).await?;
            let state = state::AppState::new(pool, settings)?;
            let report = cli::import(
                &state,
                &project,
                author.as_deref(),
                &dir,
                allow_out_of_order,
            )
            .await?;
            Ok(if report {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let pool = db::connect(&settings.common.database_url, 2).await?;
            let result = audit::verify(&pool).await?;
            if result.ok {
                println!("audit chain intact: {} rows", result.rows_checked);
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "audit chain broken at row {}: {}",
                    result.first_broken_seq.unwrap_or_default(),
                    result.reason.unwrap_or_default()
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
