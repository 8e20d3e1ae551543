//! The commands of the `control-plane` binary besides `serve`.

use common::{
    crypto::Keyring,
    domain::Role,
    store::{
        audit::{self, Actor, Entry},
        secrets::{self, SecretKind},
        users,
    },
};
use serde_json::json;
use sqlx::PgPool;

use crate::service::me::{DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, issue_token};

/// `user add`: create the user or update their role.
pub async fn user_add(pool: &PgPool, email: &str, name: &str, role: Role) -> anyhow::Result<()> {
    let email =
        crate::service::users::parse_email("--email", email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tx = pool.begin().await?;
    let (user, created) = users::upsert(&mut tx, &email, name, role).await?;
    audit::append(
        &mut tx,
        &Entry::new(
            Actor::system("cli"),
            if created {
                "user.created"
            } else {
                "user.updated"
            },
            "user",
            user.id,
        )
        .details(json!({ "email": user.email, "role": role })),
    )
    .await?;
    tx.commit().await?;
    eprintln!(
        "{} user {} with role {}",
        if created { "created" } else { "updated" },
        user.email,
        user.role
    );
    Ok(())
}

/// `token create`: prints the new token alone on standard output.
pub async fn token_create(
    pool: &PgPool,
    email: &str,
    name: &str,
    role: Option<Role>,
    expires_in_days: Option<i64>,
) -> anyhow::Result<String> {
    let days = expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    anyhow::ensure!(
        (1..=MAX_TOKEN_DAYS).contains(&days),
        "--expires-in-days must be between 1 and {MAX_TOKEN_DAYS}"
    );
    anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
    let mut tx = pool.begin().await?;
    let user = users::find_by_email(&mut tx, email).await?.ok_or_else(|| {
        anyhow::anyhow!("no user with e-mail {email}; add one with `control-plane user add`")
    })?;
    anyhow::ensure!(!user.disabled, "user {email} is disabled");
    let role = role.unwrap_or(user.role());
    anyhow::ensure!(
        role <= user.role(),
        "a token can carry at most its owner's role ({})",
        user.role
    );
    let created = issue_token(
        &mut tx,
        user.id,
        name.trim(),
        role,
        days,
        &Actor::system("cli"),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(created.token)
}

/// What `keys rotate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    pub key_id: String,
    pub target_passwords: usize,
    pub webhook_urls: usize,
    /// Secrets that were on the newest key already.
    pub already_current: i64,
}

impl std::fmt::Display for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "re-encrypted {} secrets with key {} ({} target passwords, {} webhook URLs); {} were on it already",
            self.target_passwords + self.webhook_urls,
            self.key_id,
            self.target_passwords,
            self.webhook_urls,
            self.already_current
        )
    }
}

/// Secrets re-encrypted per transaction: bounded lock time and memory.
const ROTATION_BATCH: i64 = 500;

/// `keys rotate`: re-encrypts every stored secret that is not under the
/// newest key of `keys`. Each batch commits with its own `keys.rotated`
/// audit row, so the log never misses a re-encryption even if the command
/// stops half-way; running it again finishes the job and skips what is done.
pub async fn keys_rotate(pool: &PgPool, keys: &Keyring) -> anyhow::Result<Rotation> {
    let mut rotation = Rotation {
        key_id: keys.current_key_id().to_owned(),
        ..Rotation::default()
    };
    for kind in SecretKind::ALL {
        loop {
            let mut tx = pool.begin().await?;
            let count = secrets::rotate_batch(&mut tx, keys, kind, ROTATION_BATCH).await?;
            if count == 0 {
                break;
            }
            audit::append(
                &mut tx,
                &Entry::new(
                    Actor::system("cli"),
                    "keys.rotated",
                    "encryption_key",
                    &rotation.key_id,
                )
                .details(
                    json!({ "count": count, "key_id": rotation.key_id, "secrets": kind.label() }),
                ),
            )
            .await?;
            tx.commit().await?;
            match kind {
                SecretKind::TargetPassword => rotation.target_passwords += count,
                SecretKind::WebhookUrl => rotation.webhook_urls += count,
            }
        }
    }
    let mut tx = pool.begin().await?;
    for kind in SecretKind::ALL {
        rotation.already_current += secrets::count_current(&mut tx, keys, kind).await?;
    }
    rotation.already_current -= (rotation.target_passwords + rotation.webhook_urls) as i64;
    if rotation.target_passwords + rotation.webhook_urls == 0 {
        // Nothing moved, but the rotation was asked for: that is audited too.
        audit::append(
            &mut tx,
            &Entry::new(
                Actor::system("cli"),
                "keys.rotated",
                "encryption_key",
                &rotation.key_id,
            )
            .details(json!({ "count": 0, "key_id": rotation.key_id })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(rotation)
}

/// The account recorded as author of migrations imported without `--author`.
/// It is disabled, so nobody can sign in or use tokens as it.
pub const IMPORT_ACCOUNT: &str = "import@migrate-hub.invalid";

/// Reads every file under `dir` (paths relative to it).
pub(crate) fn read_folder(dir: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries =
            std::fs::read_dir(&folder).map_err(|e| anyhow::anyhow!("{}: {e}", folder.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                if !relative.ends_with(".sql") {
                    continue;
                }
                let content = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                files.push((relative, content));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `import`: prints what was created, unchanged or in conflict; returns
/// false when conflicts kept anything from being imported.
pub async fn import(
    state: &crate::state::AppState,
    slug: &str,
    author: Option<&str>,
    dir: &std::path::Path,
    allow_out_of_order: bool,
) -> anyhow::Result<bool> {
    let files = read_folder(dir)?;
    let mut conn = state.db.acquire().await?;
    let author_id = match author {
        Some(email) => {
            users::find_by_email(&mut conn, email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with e-mail {email}"))?
                .id
        }
        None => match users::find_by_email(&mut conn, IMPORT_ACCOUNT).await? {
            Some(u) => u.id,
            None => {
                let (u, _) = users::upsert(&mut conn, IMPORT_ACCOUNT, "Import", Role::User).await?;
                users::update(&mut conn, u.id, None, Some(true)).await?;
                u.id
            }
        },
    };
    drop(conn);
    let report = crate::service::migrations::import_migrations(
        state,
        author_id,
        &Actor::system("cli"),
        None,
        slug,
        &files,
        allow_out_of_order,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let layout = report.layout.map(|l| format!("{l:?}")).unwrap_or_default();
    if !report.conflicts.is_empty() {
        for c in &report.conflicts {
            eprintln!("conflict: version {}: {}", c.version, c.reason);
        }
        eprintln!("nothing imported: {} conflict(s)", report.conflicts.len());
        return Ok(false);
    }
    println!(
        "imported {} migration(s) ({layout} layout), {} already present",
        report.created.len(),
        report.unchanged.len()
    );
    Ok(true)
}
