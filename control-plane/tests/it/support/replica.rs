//! A second control plane on the same tool database, as a real process of
//! its own (`control-plane serve`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::TestApp;

/// A second control plane on the same tool database, as its own process
/// (`control-plane serve`), sharing token reads for ten seconds.
pub struct Replica {
    pub child: tokio::process::Child,
    pub url: String,
}

impl Replica {
    pub async fn start(app: &TestApp) -> Replica {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MH_DATABASE_URL", &app.db.url)
            .env(
                "MH_ENCRYPTION_KEYS",
                common::crypto::Keyring::generate_entry("k1"),
            )
            .env("MH_LISTEN", format!("127.0.0.1:{port}"))
            .env("MH_PUBLIC_URL", &url)
            .env("MH_READ_MAX_AGE_MS", "10000")
            .env("RUST_LOG", "info")
            .env("MH_LOG_FORMAT", "text")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // The replica's log, kept to show if it never comes up.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        tokio::spawn({
            let log = log.clone();
            async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let replica = Replica { child, url };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if replica.metric("migrate_hub_changes_listening").await.ok() == Some(1.0) {
                return replica;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica did not come up listening for changes; its log:\n{}",
                log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn status(&self, path: &str, token: &str) -> StatusCode {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// The sum of a metric's series, once the replica answers.
    pub async fn metric(&self, name: &str) -> Result<f64, reqwest::Error> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Waits until the replica has heard more than `seen` changes.
    pub async fn hears(&self, seen: f64) -> f64 {
        common::testing::wait_for(
            Duration::from_secs(10),
            "the replica to hear the change",
            || async {
                let heard = self.metric("migrate_hub_changes_heard_total").await.ok()?;
                (heard > seen).then_some(heard)
            },
        )
        .await
    }
}

impl Replica {
    /// `GET path` with `token`: the status and the JSON body (`Null` when
    /// the body is not JSON).
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` with `token` as a browser asks for a page: the HTML.
    pub async fn page(&self, path: &str, token: &str) -> (StatusCode, String) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }
}
