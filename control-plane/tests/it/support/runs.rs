//! Runs through the API the way people drive them (request as user, approve
//! as manager, execute as user), and the in-process worker that executes
//! them.

use std::time::Duration;

use common::testing::wait_for;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::TestApp;

/// An in-process worker (the same code as the binary) claiming the test
/// app's jobs until stopped.
pub struct Fleet {
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Fleet {
    /// A worker of pool `default` running 4 targets at once.
    pub fn start(app: &TestApp) -> Fleet {
        Self::start_with(app, 4)
    }

    /// A worker of pool `default` running `concurrency` targets at once.
    pub fn start_with(app: &TestApp, concurrency: usize) -> Fleet {
        Self::in_pool(app, "default", concurrency)
    }

    /// A worker of `pool` running `concurrency` targets at once.
    pub fn in_pool(app: &TestApp, pool: &str, concurrency: usize) -> Fleet {
        let worker =
            worker::Worker::new(app.pool.clone(), app.keys.clone(), pool, concurrency, 5_000);
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        Fleet {
            stop: Some(tx),
            done,
        }
    }

    /// Asks the worker to stop and waits until it has, without error.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.await.unwrap().unwrap();
    }
}

impl TestApp {
    /// Requests (as user) an `up` run of DB set `set` to `version`; returns
    /// its id. The run waits for approval.
    pub async fn request_run(&self, slug: &str, set: &str, version: &str) -> String {
        self.request_run_with(slug, set, version, json!({})).await
    }

    /// [`TestApp::request_run`] with `options` added to the request
    /// (`direction`, `concurrency`, `canary`, …).
    pub async fn request_run_with(
        &self,
        slug: &str,
        set: &str,
        version: &str,
        options: Value,
    ) -> String {
        let mut body = json!({"db_set_id": set, "direction": "up", "target_version": version});
        for (k, v) in options.as_object().expect("options are an object") {
            body[k] = v.clone();
        }
        let (status, run) = self
            .post(&format!("/api/v1/projects/{slug}/runs"), &self.user, body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        assert_eq!(run["state"], "pending_approval", "{run}");
        run["id"].as_str().unwrap().to_owned()
    }

    /// Asks with `token` for a run of DB set `set` in `direction` to
    /// `version`; returns the answer.
    pub async fn request_run_as(
        &self,
        token: &str,
        slug: &str,
        set: &str,
        direction: &str,
        version: &str,
    ) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/projects/{slug}/runs"),
            token,
            json!({"db_set_id": set, "direction": direction, "target_version": version}),
        )
        .await
    }

    /// Approves the run as manager (enough in `daily`); returns the run.
    pub async fn approve(&self, run: &str) -> Value {
        let (status, body) = self.approve_as(run, &self.manager).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "approved", "{body}");
        body
    }

    /// Asks to approve the run with `token`; returns the answer.
    pub async fn approve_as(&self, run: &str, token: &str) -> (StatusCode, Value) {
        self.post(&format!("/api/v1/runs/{run}/approve"), token, json!({}))
            .await
    }

    /// Asks to execute the run with `token`; returns the answer.
    pub async fn execute_as(&self, run: &str, token: &str) -> (StatusCode, Value) {
        self.post(&format!("/api/v1/runs/{run}/execute"), token, json!({}))
            .await
    }

    /// Executes the approved run as user: its jobs are queued.
    pub async fn execute(&self, run: &str) {
        let (status, body) = self.execute_as(run, &self.user).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    /// Waits until the run has finished (succeeded or failed, wholly or in
    /// part); returns it.
    pub async fn wait_until_final(&self, run: &str) -> Value {
        wait_for(Duration::from_secs(60), "the run to finish", || async {
            let (_, body) = self.get(&format!("/api/v1/runs/{run}"), &self.user).await;
            matches!(
                body["state"].as_str(),
                Some("succeeded" | "failed" | "partially_failed")
            )
            .then_some(body)
        })
        .await
    }

    /// Approves and executes a requested run and waits until it has
    /// finished; a worker must be running. Returns the finished run.
    pub async fn approve_and_run(&self, run: &str) -> Value {
        self.approve(run).await;
        self.execute(run).await;
        self.wait_until_final(run).await
    }

    /// An `up` run of DB set `set` to `version` from request to end, with a
    /// worker of its own; returns the finished run.
    pub async fn run_up(&self, slug: &str, set: &str, version: &str) -> Value {
        self.run_up_with(slug, set, version, json!({})).await
    }

    /// [`TestApp::run_up`] with `options` added to the request.
    pub async fn run_up_with(&self, slug: &str, set: &str, version: &str, options: Value) -> Value {
        let fleet = Fleet::start(self);
        let run = self.request_run_with(slug, set, version, options).await;
        let done = self.approve_and_run(&run).await;
        fleet.stop().await;
        done
    }
}
