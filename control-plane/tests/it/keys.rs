//! `control-plane keys rotate`: every stored secret moves to the newest key,
//! old keys can then be retired, and targets still connect afterwards.

use std::{collections::HashMap, net::SocketAddr, process::Command};

use crate::support::TestApp;
use common::{
    config::ControlPlaneSettings,
    crypto::{Keyring, Sealed},
    testing::TestMysqlDatabase,
};
use control_plane::app;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

fn rotate(app: &TestApp, keys: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["keys", "rotate"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MH_DATABASE_URL", &app.db.url)
        .env("MH_ENCRYPTION_KEYS", keys)
        .output()
        .unwrap()
}

/// (row id, ciphertext, key id) of every sealed column, targets then webhooks.
async fn sealed_rows(app: &TestApp) -> Vec<(Uuid, Vec<u8>, String)> {
    sqlx::query_as(
        "SELECT id, password_ciphertext, password_key_id FROM targets WHERE password_ciphertext IS NOT NULL
         UNION ALL SELECT id, url_ciphertext, url_key_id FROM webhooks ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Another control plane on the same tool database, configured with `keys`
/// (as after a restart with a new `MH_ENCRYPTION_KEYS`).
async fn control_plane_with_keys(app: &TestApp, keys: &str) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let env: HashMap<&str, String> = HashMap::from([
        ("MH_DATABASE_URL", app.db.url.clone()),
        ("MH_ENCRYPTION_KEYS", keys.to_owned()),
        ("MH_PUBLIC_URL", format!("http://{addr}")),
    ]);
    let settings = ControlPlaneSettings::load(&env).unwrap();
    let state = control_plane::state::AppState::new(app.pool.clone(), settings).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn test_connection(addr: SocketAddr, token: &str, target: &str) -> Value {
    let resp = reqwest::Client::new()
        .request(
            Method::POST,
            format!("http://{addr}/api/v1/targets/{target}/test"),
        )
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn rotation_reencrypts_every_secret_and_targets_still_connect() {
    let k1 = Keyring::generate_entry("k1");
    let k2 = Keyring::generate_entry("k2");
    let spec = k1.clone();
    let app = TestApp::spawn_with(move |env, _| {
        env.insert("MH_ENCRYPTION_KEYS", spec);
    })
    .await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let maria = TestMysqlDatabase::create("mh_test_keys").await;
    let live = app.mysql_target(&slug, &set, "maria", &maria).await;
    // A deleted target's password and a webhook URL are secrets too.
    let gone = app
        .add_target(
            &slug,
            &set,
            json!({"name": "gone", "engine": "postgres", "host": "db", "port": 5432,
                   "database": "d", "username": "u", "password": "old-Secret"}),
        )
        .await;
    app.delete(&format!("/api/v1/targets/{gone}"), &app.manager)
        .await;
    app.add_target(
        &slug,
        &set,
        json!({"name": "nopw", "engine": "postgres", "host": "db", "port": 5432,
               "database": "d", "username": "u"}),
    )
    .await;
    let hook = Uuid::now_v7();
    let hook_url = "https://hooks.example.com/services/T0/B0/s3cret";
    let sealed = app.keys.seal(hook.as_bytes(), hook_url.as_bytes());
    sqlx::query(
        "INSERT INTO webhooks (id, project_id, url_ciphertext, url_key_id, url_hint, events)
         SELECT $1, id, $2, $3, 'hooks.example.com', '{run.approved}' FROM projects",
    )
    .bind(hook)
    .bind(&sealed.ciphertext)
    .bind(&sealed.key_id)
    .execute(&app.pool)
    .await
    .unwrap();
    let before = sealed_rows(&app).await;
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|(_, _, key)| key == "k1"));

    // Without the key that sealed them, nothing moves and the reason is one line.
    let out = rotate(&app, &k2);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"k1\", which is not configured"),
        "{stderr}"
    );
    assert_eq!(sealed_rows(&app).await, before);

    let both = format!("{k1},{k2}");
    let out = rotate(&app, &both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "re-encrypted 3 secrets with key k2 (2 target passwords, 1 webhook URLs); 0 were on it already"
    );
    let after = sealed_rows(&app).await;
    let ring = Keyring::parse(&both).unwrap();
    let plaintexts = [
        maria.password.as_bytes(),
        b"old-Secret".as_slice(),
        hook_url.as_bytes(),
    ];
    for ((id, old, _), (same_id, new, key)) in before.iter().zip(&after) {
        assert_eq!(id, same_id);
        assert_eq!(key, "k2");
        assert_ne!(old, new);
        let sealed = Sealed {
            key_id: key.clone(),
            ciphertext: new.clone(),
        };
        let opened = ring.open(id.as_bytes(), &sealed).unwrap();
        assert!(plaintexts.contains(&opened.as_slice()));
        // Still bound to its row.
        let other = after.iter().find(|(o, _, _)| o != id).unwrap().0;
        assert!(ring.open(other.as_bytes(), &sealed).is_err());
    }

    // Idempotent: a second run finds nothing to do and changes nothing.
    let out = rotate(&app, &both);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("re-encrypted 0 secrets with key k2"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 were on it already"));
    assert_eq!(sealed_rows(&app).await, after);

    let audited = app.audit_rows("keys.rotated").await;
    let total: i64 = audited
        .iter()
        .map(|(_, d)| d["count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 3);
    assert!(
        audited
            .iter()
            .all(|(actor, d)| actor == "system:cli" && d["key_id"] == "k2")
    );
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE details::text LIKE '%' || $1 || '%' OR details::text LIKE '%s3cret%'",
    )
    .bind(&maria.password)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    // Restarted with both keys, and later with the new one alone: the
    // target still connects with its re-encrypted password.
    for keys in [both.as_str(), k2.as_str()] {
        let (addr, stop) = control_plane_with_keys(&app, keys).await;
        let result = test_connection(addr, &app.manager, &live).await;
        assert_eq!(result["ok"], true, "{result}");
        let _ = stop.send(());
    }
}
