//! What every request shares: the tool database, settings, templates, the
//! identity provider, rate limits and the shared reads.

use std::sync::Arc;

use common::{config::ControlPlaneSettings, crypto::Keyring};
use minijinja::Environment;
use sqlx::PgPool;

use crate::{
    auth::{bearer::SharedBearer, oidc::Oidc, rate_limit::RateLimits},
    live::LiveRuns,
    run_view::RunSnapshot,
    shared_reads::{SharedReads, WriteMark},
    templates,
};

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub settings: Arc<ControlPlaneSettings>,
    pub templates: Arc<Environment<'static>>,
    /// `None` when SSO is not configured.
    pub oidc: Option<Arc<Oidc>>,
    /// Sign-in and API-token budgets of this process.
    pub limits: Arc<RateLimits>,
    /// Reads of a run shared by the requests that watch it (run page, its
    /// live fragment, `GET /api/v1/runs/{id}`).
    pub run_reads: Arc<SharedReads<uuid::Uuid, RunSnapshot>>,
    /// API-token lookups shared by concurrent requests with one token.
    pub token_reads: Arc<SharedReads<Vec<u8>, SharedBearer>>,
    /// The last write this process answered: shared reads older than it
    /// are not served.
    pub writes: Arc<WriteMark>,
    /// The runs watched live on this replica (`…/events` streams).
    pub live: Arc<LiveRuns>,
}

impl AppState {
    pub fn new(db: PgPool, settings: ControlPlaneSettings) -> anyhow::Result<Self> {
        let oidc = match &settings.oidc {
            Some(o) => Some(Arc::new(Oidc::new(o.clone(), &settings.public_url)?)),
            None => None,
        };
        // Deaf until `serve` listens for changes made elsewhere.
        let writes = Arc::new(WriteMark::deaf());
        let max_age = settings.read_max_age;
        Ok(Self {
            db,
            run_reads: Arc::new(SharedReads::new("run", max_age, writes.clone())),
            token_reads: Arc::new(SharedReads::new("token", max_age, writes.clone())),
            writes,
            live: Arc::new(LiveRuns::default()),
            limits: Arc::new(RateLimits::new(&settings.rate_limits)),
            settings: Arc::new(settings),
            templates: Arc::new(templates::templates()),
            oidc,
        })
    }

    pub fn keys(&self) -> &Keyring {
        &self.settings.common.keys
    }
}
