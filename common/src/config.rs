//! Typed settings from `MH_*` environment variables.
//!
//! A missing or malformed variable is reported as one line that names it, so
//! an operator can fix a deployment without reading code.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use crate::crypto::Keyring;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {}: {}", self.variable, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Where settings come from: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct Environment;

impl Source for Environment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Source for HashMap<&str, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }
}

fn required(src: &dyn Source, variable: &'static str) -> Result<String, ConfigError> {
    src.get(variable).ok_or(ConfigError {
        variable,
        reason: "is required but not set".into(),
    })
}

fn parsed<T: FromStr>(
    src: &dyn Source,
    variable: &'static str,
    default: T,
    expected: &str,
) -> Result<T, ConfigError> {
    match src.get(variable) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| ConfigError {
            variable,
            reason: format!("expected {expected}, got {raw:?}"),
        }),
    }
}

fn at_most<T: PartialOrd + std::fmt::Display>(
    value: T,
    max: T,
    variable: &'static str,
) -> Result<T, ConfigError> {
    if value > max {
        Err(ConfigError {
            variable,
            reason: format!("must be at most {max}"),
        })
    } else {
        Ok(value)
    }
}

fn list(src: &dyn Source, variable: &'static str) -> Vec<String> {
    src.get(variable)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Settings both binaries share.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub database_url: String,
    pub keys: Keyring,
    pub log_format: Option<LogFormat>,
    /// Where traces go; `None` when no OTLP endpoint is configured.
    pub otel: Option<OtelSettings>,
}

/// OpenTelemetry trace export, from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSettings {
    /// The OTLP/HTTP traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as
    /// given, or `OTEL_EXPORTER_OTLP_ENDPOINT` followed by `/v1/traces`.
    pub traces_endpoint: String,
    /// `OTEL_SERVICE_NAME`, or the binary's own name.
    pub service_name: String,
}

impl OtelSettings {
    /// `None` when neither endpoint variable is set, or `OTEL_SDK_DISABLED`
    /// is `true`. `default_service` names the binary when
    /// `OTEL_SERVICE_NAME` is unset.
    pub fn load(src: &dyn Source, default_service: &str) -> Result<Option<Self>, ConfigError> {
        if src
            .get("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        let (variable, traces_endpoint) =
            if let Some(url) = src.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.trim().to_owned())
            } else if let Some(base) = src.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("{}/v1/traces", base.trim().trim_end_matches('/')),
                )
            } else {
                return Ok(None);
            };
        // The exporter speaks plain HTTP (a collector next to the process);
        // refusing https here beats silently dropping every span.
        if !traces_endpoint.starts_with("http://") {
            return Err(ConfigError {
                variable,
                reason: "expected an http:// URL of an OTLP/HTTP collector (e.g. \
                         http://localhost:4318); https is not supported"
                    .into(),
            });
        }
        let service_name = src
            .get("OTEL_SERVICE_NAME")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| default_service.to_owned());
        Ok(Some(Self {
            traces_endpoint,
            service_name,
        }))
    }
}

impl CommonSettings {
    /// `service` is the binary's OpenTelemetry service name unless
    /// `OTEL_SERVICE_NAME` says otherwise.
    pub fn load(src: &dyn Source, service: &str) -> Result<Self, ConfigError> {
        let database_url = required(src, "MH_DATABASE_URL")?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError {
                variable: "MH_DATABASE_URL",
                reason: "expected a postgres:// URL".into(),
            });
        }
        let keys =
            Keyring::parse(&required(src, "MH_ENCRYPTION_KEYS")?).map_err(|e| ConfigError {
                variable: "MH_ENCRYPTION_KEYS",
                reason: e.to_string(),
            })?;
        let log_format = match src.get("MH_LOG_FORMAT").as_deref() {
            None => None,
            Some("json") => Some(LogFormat::Json),
            Some("text") => Some(LogFormat::Text),
            Some(other) => {
                return Err(ConfigError {
                    variable: "MH_LOG_FORMAT",
                    reason: format!("expected json or text, got {other:?}"),
                });
            }
        };
        Ok(Self {
            database_url,
            keys,
            log_format,
            otel: OtelSettings::load(src, service)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    Off,
    Domain,
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    pub common: CommonSettings,
    pub listen: SocketAddr,
    pub public_url: String,
    /// `None` when no client id is configured: SSO is off, API tokens work.
    pub oidc: Option<OidcSettings>,
    pub allowed_domains: Vec<String>,
    pub provisioning: Provisioning,
    pub bootstrap_admins: Vec<String>,
    pub session_idle_minutes: u32,
    pub session_max_hours: u32,
    pub max_sql_bytes: usize,
    pub rate_limits: RateLimits,
    /// `MH_READ_MAX_AGE_MS`: how old a shared read of a run or an API token
    /// may be when it serves a request (writes answered by this process
    /// always retire older reads); zero makes every request wait for a
    /// read of its own time.
    pub read_max_age: std::time::Duration,
    /// `MH_REQUEST_TIMEOUT_SECS` (default 60): a request still unanswered
    /// after it gets 408.
    pub request_timeout: std::time::Duration,
    /// `MH_SNAPSHOT_RETENTION_DAYS` (default 90; 0 keeps every snapshot):
    /// schema snapshots older than this are removed, except each target's
    /// newest.
    pub snapshot_retention_days: u32,
    /// `MH_TRUSTED_PROXIES`: the reverse proxies whose `X-Forwarded-For`
    /// names the client; empty (the default) trusts no header.
    pub trusted_proxies: TrustedProxies,
}

/// Addresses and networks (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`) of trusted
/// reverse proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a comma-separated list of IPs and CIDRs.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR"))?;
            let addr = addr.to_canonical();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{item:?} has a prefix length outside 0-{max}"))?,
            };
            nets.push((addr, prefix));
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the proxies (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, prefix)| match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        })
    }
}

/// Request budgets per minute (a burst of the same size, refilled evenly);
/// `0` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `MH_SIGNIN_RATE_LIMIT`: sign-in starts and callbacks per client address.
    pub signin_per_minute: u32,
    /// `MH_API_RATE_LIMIT`: requests per API token.
    pub api_per_minute: u32,
    /// `MH_AUTH_FAILURE_LIMIT`: refused API tokens per client address; past
    /// it, every API-token request from that address waits.
    pub auth_failures_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            signin_per_minute: 30,
            api_per_minute: 1200,
            auth_failures_per_minute: 30,
        }
    }
}

impl RateLimits {
    fn load(src: &dyn Source) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let per_minute = "a number of requests per minute (0: no limit)";
        Ok(Self {
            signin_per_minute: parsed(
                src,
                "MH_SIGNIN_RATE_LIMIT",
                defaults.signin_per_minute,
                per_minute,
            )?,
            api_per_minute: parsed(
                src,
                "MH_API_RATE_LIMIT",
                defaults.api_per_minute,
                per_minute,
            )?,
            auth_failures_per_minute: parsed(
                src,
                "MH_AUTH_FAILURE_LIMIT",
                defaults.auth_failures_per_minute,
                per_minute,
            )?,
        })
    }
}

impl ControlPlaneSettings {
    pub fn load(src: &dyn Source) -> Result<Self, ConfigError> {
        let common = CommonSettings::load(src, "migrate-hub-control-plane")?;
        let listen = parsed(
            src,
            "MH_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            "host:port",
        )?;
        let public_url = src
            .get("MH_PUBLIC_URL")
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError {
                variable: "MH_PUBLIC_URL",
                reason: "expected an http:// or https:// URL".into(),
            });
        }
        let oidc = src.get("MH_OIDC_CLIENT_ID").map(|client_id| OidcSettings {
            issuer: src
                .get("MH_OIDC_ISSUER")
                .unwrap_or_else(|| "https://accounts.google.com".into()),
            client_id,
            client_secret: src.get("MH_OIDC_CLIENT_SECRET"),
        });
        let provisioning = match src.get("MH_PROVISIONING").as_deref() {
            None | Some("off") => Provisioning::Off,
            Some("domain") => Provisioning::Domain,
            Some(other) => {
                return Err(ConfigError {
                    variable: "MH_PROVISIONING",
                    reason: format!("expected off or domain, got {other:?}"),
                });
            }
        };
        let positive = |v: u32, variable| {
            if v == 0 {
                Err(ConfigError {
                    variable,
                    reason: "must be greater than 0".into(),
                })
            } else {
                Ok(v)
            }
        };
        Ok(Self {
            common,
            listen,
            public_url,
            oidc,
            allowed_domains: list(src, "MH_ALLOWED_DOMAINS"),
            provisioning,
            bootstrap_admins: list(src, "MH_BOOTSTRAP_ADMINS"),
            session_idle_minutes: positive(
                parsed(src, "MH_SESSION_IDLE_MINUTES", 60, "a number of minutes")?,
                "MH_SESSION_IDLE_MINUTES",
            )?,
            session_max_hours: positive(
                parsed(src, "MH_SESSION_MAX_HOURS", 12, "a number of hours")?,
                "MH_SESSION_MAX_HOURS",
            )?,
            max_sql_bytes: parsed(src, "MH_MAX_SQL_BYTES", 1_048_576, "a number of bytes")?,
            rate_limits: RateLimits::load(src)?,
            read_max_age: std::time::Duration::from_millis(at_most(
                parsed(src, "MH_READ_MAX_AGE_MS", 1000, "a number of milliseconds")?,
                10_000,
                "MH_READ_MAX_AGE_MS",
            )?),
            request_timeout: std::time::Duration::from_secs(u64::from(positive(
                parsed(src, "MH_REQUEST_TIMEOUT_SECS", 60, "a number of seconds")?,
                "MH_REQUEST_TIMEOUT_SECS",
            )?)),
            snapshot_retention_days: parsed(
                src,
                "MH_SNAPSHOT_RETENTION_DAYS",
                90,
                "a number of days",
            )?,
            trusted_proxies: TrustedProxies::parse(
                &src.get("MH_TRUSTED_PROXIES").unwrap_or_default(),
            )
            .map_err(|reason| ConfigError {
                variable: "MH_TRUSTED_PROXIES",
                reason: format!("expected comma-separated IPs or CIDRs: {reason}"),
            })?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub common: CommonSettings,
    pub pool: String,
    pub concurrency: usize,
    pub lock_wait_ms: u64,
    pub metrics_listen: SocketAddr,
    /// `MH_DRIFT_SCAN_MINUTES` (default 60; 0 turns scans off): how often
    /// each target of the pool is read and compared with its baseline.
    pub drift_scan_minutes: u64,
}

impl WorkerSettings {
    /// `pool` and `concurrency` come from the command line when given there.
    pub fn load(
        src: &dyn Source,
        pool: Option<String>,
        concurrency: Option<usize>,
    ) -> Result<Self, ConfigError> {
        let common = CommonSettings::load(src, "migrate-hub-worker")?;
        let pool = pool
            .or_else(|| src.get("MH_WORKER_POOL"))
            .unwrap_or_else(|| "default".into());
        if !valid_pool_name(&pool) {
            return Err(ConfigError {
                variable: "MH_WORKER_POOL",
                reason: format!(
                    "pool names are 1-40 characters of a-z, 0-9, '-', '_'; got {pool:?}"
                ),
            });
        }
        let concurrency = match concurrency {
            Some(n) => n,
            None => parsed(src, "MH_WORKER_CONCURRENCY", 4, "a positive number")?,
        };
        if concurrency == 0 {
            return Err(ConfigError {
                variable: "MH_WORKER_CONCURRENCY",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            common,
            pool,
            concurrency,
            lock_wait_ms: parsed(src, "MH_LOCK_WAIT_MS", 30_000, "milliseconds")?,
            metrics_listen: parsed(
                src,
                "MH_METRICS_LISTEN",
                SocketAddr::from(([127, 0, 0, 1], 9101)),
                "host:port",
            )?,
            drift_scan_minutes: parsed(src, "MH_DRIFT_SCAN_MINUTES", 60, "a number of minutes")?,
        })
    }
}

/// Worker pool names end up in queue names and URLs.
pub fn valid_pool_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("MH_DATABASE_URL", "postgres://localhost/mh".to_string()),
            ("MH_ENCRYPTION_KEYS", Keyring::generate_entry("k1")),
        ])
    }

    #[test]
    fn defaults_apply() {
        let s = ControlPlaneSettings::load(&base()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_url, "http://127.0.0.1:8080");
        assert!(s.oidc.is_none());
        assert_eq!(s.provisioning, Provisioning::Off);
        assert_eq!(s.max_sql_bytes, 1_048_576);
        assert_eq!(s.rate_limits, RateLimits::default());
        assert_eq!(s.common.otel, None);
        assert_eq!(s.read_max_age, std::time::Duration::from_secs(1));
        assert_eq!(s.snapshot_retention_days, 90);
        assert_eq!(s.request_timeout, std::time::Duration::from_secs(60));
        let w = WorkerSettings::load(&base(), None, None).unwrap();
        assert_eq!(
            (
                w.pool.as_str(),
                w.concurrency,
                w.lock_wait_ms,
                w.drift_scan_minutes
            ),
            ("default", 4, 30_000, 60)
        );
    }

    #[test]
    fn missing_variables_are_named() {
        let mut env = base();
        env.remove("MH_DATABASE_URL");
        let err = ControlPlaneSettings::load(&env).unwrap_err();
        assert_eq!(err.variable, "MH_DATABASE_URL");
        assert!(err.to_string().contains("MH_DATABASE_URL"));

        let mut env = base();
        env.remove("MH_ENCRYPTION_KEYS");
        assert_eq!(
            WorkerSettings::load(&env, None, None).unwrap_err().variable,
            "MH_ENCRYPTION_KEYS"
        );
    }

    #[test]
    fn malformed_variables_are_named() {
        for (var, value) in [
            ("MH_LISTEN", "not-an-address"),
            ("MH_PUBLIC_URL", "ftp://x"),
            ("MH_PROVISIONING", "everyone"),
            ("MH_SESSION_IDLE_MINUTES", "0"),
            ("MH_MAX_SQL_BYTES", "-1"),
            ("MH_ENCRYPTION_KEYS", "k1:short"),
            ("MH_DATABASE_URL", "mysql://x"),
            ("MH_LOG_FORMAT", "xml"),
            ("MH_SIGNIN_RATE_LIMIT", "lots"),
            ("MH_API_RATE_LIMIT", "-5"),
            ("MH_AUTH_FAILURE_LIMIT", "1.5"),
            ("MH_READ_MAX_AGE_MS", "-1"),
            ("MH_READ_MAX_AGE_MS", "60000"),
            ("MH_TRUSTED_PROXIES", "10.0.0.1,proxy.example.com"),
            ("MH_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
        ] {
            let mut env = base();
            env.insert(var, value.into());
            let err = ControlPlaneSettings::load(&env).unwrap_err();
            assert_eq!(err.variable, var, "{value}");
        }
        for (var, value) in [
            ("MH_WORKER_CONCURRENCY", "0"),
            ("MH_WORKER_POOL", "Bad Pool"),
            ("MH_LOCK_WAIT_MS", "soon"),
            ("MH_DRIFT_SCAN_MINUTES", "hourly"),
        ] {
            let mut env = base();
            env.insert(var, value.into());
            assert_eq!(
                WorkerSettings::load(&env, None, None).unwrap_err().variable,
                var
            );
        }
    }

    #[test]
    fn traces_follow_the_standard_otel_variables() {
        let mut env = base();
        env.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318/".into(),
        );
        let cp = ControlPlaneSettings::load(&env)
            .unwrap()
            .common
            .otel
            .unwrap();
        assert_eq!(cp.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(cp.service_name, "migrate-hub-control-plane");
        let worker = WorkerSettings::load(&env, None, None).unwrap().common.otel;
        assert_eq!(worker.unwrap().service_name, "migrate-hub-worker");

        env.insert("OTEL_SERVICE_NAME", "hub-eu".into());
        env.insert(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://tempo:4318/otlp/traces".into(),
        );
        let otel = ControlPlaneSettings::load(&env).unwrap().common.otel;
        assert_eq!(
            otel,
            Some(OtelSettings {
                traces_endpoint: "http://tempo:4318/otlp/traces".into(),
                service_name: "hub-eu".into(),
            })
        );

        env.insert("OTEL_SDK_DISABLED", "true".into());
        assert_eq!(ControlPlaneSettings::load(&env).unwrap().common.otel, None);
    }

    #[test]
    fn rate_limits_are_configurable_and_zero_turns_one_off() {
        let mut env = base();
        env.insert("MH_SIGNIN_RATE_LIMIT", "5".into());
        env.insert("MH_API_RATE_LIMIT", "0".into());
        env.insert("MH_AUTH_FAILURE_LIMIT", "7".into());
        let limits = ControlPlaneSettings::load(&env).unwrap().rate_limits;
        assert_eq!(
            limits,
            RateLimits {
                signin_per_minute: 5,
                api_per_minute: 0,
                auth_failures_per_minute: 7,
            }
        );
    }

    #[test]
    fn command_line_wins_over_environment() {
        let mut env = base();
        env.insert("MH_WORKER_POOL", "eu".into());
        let w = WorkerSettings::load(&env, Some("us".into()), Some(2)).unwrap();
        assert_eq!((w.pool.as_str(), w.concurrency), ("us", 2));
    }

    #[test]
    fn lists_are_trimmed_and_lowercased() {
        let mut env = base();
        env.insert(
            "MH_BOOTSTRAP_ADMINS",
            " Admin@Example.com, ,ops@example.com".into(),
        );
        let s = ControlPlaneSettings::load(&env).unwrap();
        assert_eq!(s.bootstrap_admins, ["admin@example.com", "ops@example.com"]);
    }

    #[test]
    fn errors_never_echo_key_material() {
        let mut env = base();
        env.insert(
            "MH_ENCRYPTION_KEYS",
            "k1:c2VjcmV0LWtleS1tYXRlcmlhbA==".into(),
        );
        let err = ControlPlaneSettings::load(&env).unwrap_err().to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn trusted_proxies_are_addresses_and_networks() {
        let mut env = base();
        assert!(
            ControlPlaneSettings::load(&env)
                .unwrap()
                .trusted_proxies
                .is_empty()
        );
        env.insert(
            "MH_TRUSTED_PROXIES",
            " 10.1.0.0/16, 192.0.2.7 ,fd00::/8".into(),
        );
        let proxies = ControlPlaneSettings::load(&env).unwrap().trusted_proxies;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for inside in [
            "10.1.0.1",
            "10.1.255.254",
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "fd12::1",
        ] {
            assert!(proxies.contains(ip(inside)), "{inside}");
        }
        for outside in ["10.2.0.1", "192.0.2.8", "fe80::1", "127.0.0.1"] {
            assert!(!proxies.contains(ip(outside)), "{outside}");
        }
        let all = TrustedProxies::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
    }
}
