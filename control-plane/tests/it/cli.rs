//! The `control-plane` binary: help, configuration errors, user and token commands.

use std::process::Command;

use common::{crypto::Keyring, testing::TestDatabase};

fn control_plane() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_control-plane"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["user", "add", "--help"],
        vec!["token", "create", "--help"],
        vec!["audit", "verify", "--help"],
        vec!["keys", "rotate", "--help"],
    ] {
        let out = control_plane().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn bad_configuration_is_one_line_naming_the_variable() {
    let out = control_plane().arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("MH_DATABASE_URL"), "{stderr}");

    let out = control_plane()
        .arg("migrate")
        .env("MH_DATABASE_URL", "postgres://127.0.0.1/x")
        .env("MH_ENCRYPTION_KEYS", "k1:tooshort")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MH_ENCRYPTION_KEYS") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}

#[tokio::test]
async fn migrate_user_add_and_token_create() {
    let db = TestDatabase::create("mh_test_cli").await;
    let keys = Keyring::generate_entry("k1");
    let run = |args: &[&str]| {
        control_plane()
            .args(args)
            .env("MH_DATABASE_URL", &db.url)
            .env("MH_ENCRYPTION_KEYS", &keys)
            .env("MH_LOG_FORMAT", "text")
            .output()
            .unwrap()
    };
    assert!(run(&["migrate"]).status.success());
    assert!(run(&["migrate"]).status.success(), "migrate is idempotent");
    let added = run(&[
        "user",
        "add",
        "--email",
        "Ops@Example.com",
        "--role",
        "manager",
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let bad_role = run(&["user", "add", "--email", "x@example.com", "--role", "root"]);
    assert!(!bad_role.status.success());

    let out = run(&[
        "token",
        "create",
        "--email",
        "ops@example.com",
        "--name",
        "ci",
        "--expires-in-days",
        "7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the token is printed: {stdout:?}"
    );
    let token = stdout.trim();
    assert!(token.starts_with("mh_"));

    // Only the hash is stored, and the token cannot exceed its owner's role.
    let pool = common::db::connect(&db.url, 1).await.unwrap();
    let hash: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(hash, common::crypto::hash_api_token(token));
    let too_high = run(&[
        "token",
        "create",
        "--email",
        "ops@example.com",
        "--name",
        "x",
        "--role",
        "admin",
    ]);
    assert!(!too_high.status.success());
    let unknown = run(&[
        "token",
        "create",
        "--email",
        "nobody@example.com",
        "--name",
        "x",
    ]);
    assert!(!unknown.status.success());
    let verify = run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    pool.close().await;
}
