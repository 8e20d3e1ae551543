//! Maintenance windows through the API and the pages: on environments and
//! DB sets (canonical text, the grammar's complaints, clearing, the DB
//! set's override), audited, invalidating nothing; Execute outside the
//! window schedules the run for the next opening, shown on the run page.
//! (What workers do with windows: `worker/tests/it/windows.rs`.)

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use crate::support::{TestApp, TokenBrowser};
use common::testing::TestDatabase;

fn hh_mm(at: OffsetDateTime) -> String {
    format!("{:02}:{:02}", at.hour(), at.minute())
}

/// A daily UTC window opening two hours from now (to the minute), and its
/// opening.
fn window_later() -> (String, OffsetDateTime) {
    let opens = (OffsetDateTime::now_utc() + Duration::hours(2))
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap();
    let end = opens + Duration::hours(1);
    (format!("daily {}-{} UTC", hh_mm(opens), hh_mm(end)), opens)
}

#[tokio::test]
async fn environments_take_a_window_in_canonical_form_and_refuse_bad_ones() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_win").await;
    app.pg_target(&slug, &set, "shard-1", &db).await;
    app.migration(&slug, "1", "CREATE TABLE t1 (id int);", "DROP TABLE t1;")
        .await;
    let approved = app.request_run(&slug, &set, "1").await;
    app.approve(&approved).await;

    let path = "/api/v1/environments/daily";
    let (status, _) = app
        .patch(
            path,
            &app.manager,
            json!({"maintenance_window": "daily 01:00-02:00 UTC"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins only");
    let (status, body) = app
        .patch(
            path,
            &app.admin,
            json!({"maintenance_window": "mon-fri 02:00-05:00 Europe/Berlin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["maintenance_window"],
        "Mon-Fri 02:00-05:00 Europe/Berlin"
    );
    for (bad, says) in [
        ("Mon-Fri 02:00-05:00 Mars/Olympus", "unknown time zone"),
        ("Mon-Fry 02:00-05:00 UTC", "unknown day"),
        ("Mon-Fri 02:00-05:00", "time zone"),
        ("Mon-Fri 25:00-05:00 UTC", "a time is HH:MM"),
    ] {
        let (status, err) = app
            .patch(path, &app.admin, json!({"maintenance_window": bad}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        assert_eq!(err["error"]["field"], "maintenance_window", "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(says),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        app.environment("daily").await["maintenance_window"],
        "Mon-Fri 02:00-05:00 Europe/Berlin",
        "a refused window changes nothing"
    );
    // A window decides when, not what: the approved run stays approved.
    let (_, run) = app
        .get(&format!("/api/v1/runs/{approved}"), &app.user)
        .await;
    assert_eq!(run["state"], "approved");
    let rows = app.audit_rows("environment.updated").await;
    assert_eq!(
        rows.last().unwrap().1["changes"]["maintenance_window"]["to"],
        "Mon-Fri 02:00-05:00 Europe/Berlin"
    );
    assert_eq!(rows.last().unwrap().1["runs_invalidated"], 0);
    // `null`, `""` and `always` all mean: no window.
    for none in [json!(null), json!(""), json!("always")] {
        app.patch(
            path,
            &app.admin,
            json!({"maintenance_window": "daily 01:00-02:00 UTC"}),
        )
        .await;
        let (status, body) = app
            .patch(path, &app.admin, json!({"maintenance_window": none}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["maintenance_window"], Value::Null, "{none}");
    }
    // Leaving the field out keeps it.
    app.patch(
        path,
        &app.admin,
        json!({"maintenance_window": "Sat 01:00-02:00 UTC"}),
    )
    .await;
    let (_, body) = app
        .patch(path, &app.admin, json!({"lock_retries": 3}))
        .await;
    assert_eq!(body["maintenance_window"], "Sat 01:00-02:00 UTC");

    // The page shows it and edits it.
    let admin = TokenBrowser::new(&app, &app.admin);
    let page = admin.get("/admin/environments").await;
    assert!(
        page.body.contains("<code>Sat 01:00-02:00 UTC</code>"),
        "{}",
        page.body
    );
    let refused = admin
        .post(
            "/admin/environments/daily",
            &[("maintenance_window", "Sat 01:00-02:00 <b>Mars</b>")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("unknown time zone"));
    assert!(
        !refused.body.contains("<b>Mars</b>") && refused.body.contains("&lt;b&gt;Mars"),
        "what was typed comes back escaped"
    );
    let saved = admin
        .post(
            "/admin/environments/daily",
            &[("maintenance_window", "Sun 03:00-04:00 UTC")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(
        app.environment("daily").await["maintenance_window"],
        "Sun 03:00-04:00 UTC"
    );
}

#[tokio::test]
async fn a_db_set_overrides_its_environments_window_and_execute_outside_it_is_scheduled() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_win").await;
    app.pg_target(&slug, &set, "shard-1", &db).await;
    app.migration(&slug, "1", "CREATE TABLE t1 (id int);", "DROP TABLE t1;")
        .await;
    let path = format!("/api/v1/projects/{slug}/db-sets/{set}");
    app.patch(
        "/api/v1/environments/daily",
        &app.admin,
        json!({"maintenance_window": "Sat 01:00-02:00 UTC"}),
    )
    .await;

    // The DB set's own window, `always`, or back to the environment's.
    let (status, _) = app
        .patch(&path, &app.user, json!({"maintenance_window": "always"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .patch(&path, &app.manager, json!({"maintenance_window": "always"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["maintenance_window"], "always");
    let (status, err) = app
        .patch(
            &path,
            &app.manager,
            json!({"maintenance_window": "sometimes"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "maintenance_window");
    let (_, body) = app
        .patch(&path, &app.manager, json!({"maintenance_window": null}))
        .await;
    assert_eq!(body["maintenance_window"], Value::Null);

    // Execute outside the DB set's window: the run is due at its opening.
    let (window, opens) = window_later();
    let (_, body) = app
        .patch(&path, &app.manager, json!({"maintenance_window": window}))
        .await;
    assert_eq!(body["maintenance_window"], window.as_str());
    let (_, got) = app.get(&path, &app.user).await;
    assert_eq!(got["maintenance_window"], window.as_str());
    let changes = app.audit_rows("db_set.updated").await;
    assert_eq!(
        changes.last().unwrap().1["changes"]["maintenance_window"]["to"],
        window.as_str()
    );
    let run = app.request_run(&slug, &set, "1").await;
    app.approve(&run).await;
    app.execute(&run).await;
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
    assert_eq!(body["state"], "queued");
    assert_eq!(body["scheduled_for"], opens.format(&Rfc3339).unwrap());
    let executed = app.audit_rows("run.executed").await;
    assert_eq!(
        executed.last().unwrap().1["scheduled_for"],
        opens.unix_timestamp()
    );
    let (status, page) = app.page(&format!("/runs/{run}"), &app.user).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Scheduled for"), "{page}");
    // Another window reschedules what waits to start: here, at once.
    let (status, body) = app
        .patch(&path, &app.manager, json!({"maintenance_window": "always"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
    assert_eq!(body["scheduled_for"], Value::Null, "{body}");
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE status = 'Pending' AND run_at > now()")
            .await,
        0,
        "its jobs are due now"
    );
    let changes = app.audit_rows("db_set.updated").await;
    assert_eq!(changes.last().unwrap().1["runs_rescheduled"], 1);
    app.patch(&path, &app.manager, json!({"maintenance_window": window}))
        .await;
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
    assert_eq!(body["scheduled_for"], opens.format(&Rfc3339).unwrap());
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE status = 'Pending' AND run_at > now()")
            .await,
        1,
        "and back to the opening"
    );
    // A cancelled run's targets do not wait for the window.
    let (status, body) = app
        .post(&format!("/api/v1/runs/{run}/cancel"), &app.user, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.count("SELECT count(*) FROM target_executions WHERE state = 'cancelled'")
            .await,
        1
    );

    // `not_before` after today's window: the next day's opening.
    let later = app.request_run(&slug, &set, "1").await;
    app.approve(&later).await;
    let not_before = opens + Duration::minutes(90);
    let (status, body) = app
        .post(
            &format!("/api/v1/runs/{later}/execute"),
            &app.user,
            json!({ "not_before": not_before.format(&Rfc3339).unwrap() }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["scheduled_for"],
        (opens + Duration::days(1)).format(&Rfc3339).unwrap()
    );
    assert_eq!(body["not_before"], not_before.format(&Rfc3339).unwrap());
    // Inside the window, `not_before` alone decides.
    let inside = app.request_run(&slug, &set, "1").await;
    app.approve(&inside).await;
    let not_before = opens + Duration::minutes(10);
    let (_, body) = app
        .post(
            &format!("/api/v1/runs/{inside}/execute"),
            &app.user,
            json!({ "not_before": not_before.format(&Rfc3339).unwrap() }),
        )
        .await;
    assert_eq!(body["scheduled_for"], Value::Null, "{body}");

    // The DB set page says which window applies and edits the override.
    let manager = TokenBrowser::new(&app, &app.manager);
    let page = manager
        .get(&format!("/projects/{slug}/db-sets/{set}"))
        .await;
    assert!(
        page.body
            .contains(&format!("within <code>{window}</code> (its own window"))
            && page.body.contains("<code>Sat 01:00-02:00 UTC</code>"),
        "{}",
        page.body
    );
    let refused = manager
        .post(
            &format!("/projects/{slug}/db-sets/{set}/window"),
            &[("maintenance_window", "Mon 9:00-10:00 UTC")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("a time is HH:MM"), "{}", refused.body);
    let saved = manager
        .post(
            &format!("/projects/{slug}/db-sets/{set}/window"),
            &[("maintenance_window", "")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let (_, got) = app.get(&path, &app.user).await;
    assert_eq!(got["maintenance_window"], Value::Null);
    let page = manager
        .get(&format!("/projects/{slug}/db-sets/{set}"))
        .await;
    assert!(page.body.contains("only within its environment's window"));
    let user = TokenBrowser::new(&app, &app.user);
    assert!(
        !user
            .get(&format!("/projects/{slug}/db-sets/{set}"))
            .await
            .body
            .contains("Save window"),
        "users see the window, not the form"
    );
    let refused = user
        .post(
            &format!("/projects/{slug}/db-sets/{set}/window"),
            &[("maintenance_window", "always")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}
