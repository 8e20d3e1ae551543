//! Browser end-to-end test: Debian's headless Chromium, driven over
//! WebDriver, uses the real UI of a real stack (tool database, development
//! identity provider with its own login page, control plane, an in-process
//! worker, a PostgreSQL and a MariaDB target).
//!
//! Screenshots of every step (and of every open browser after a failure) go
//! to `target/e2e-screenshots/browser_run_from_sign_in_to_audit/`.

use std::sync::Arc;

use crate::support::chrome::{Chrome, Session, literal};
use crate::support::{Fleet, MANAGER, PgTarget, TestApp, USER};
use common::testing::{TestDatabase, TestMysqlDatabase};
use serde_json::json;

const TEST: &str = "browser_run_from_sign_in_to_audit";

#[tokio::test]
async fn browser_run_from_sign_in_to_audit() {
    // First: without a browser the test fails here, before anything else.
    let chrome = Arc::new(Chrome::start(TEST).await);
    let (app, idp) = TestApp::spawn_with_sso(|_| {}).await;
    let app = Arc::new(app);
    let outcome = tokio::spawn(scenario(app.clone(), chrome.clone())).await;
    chrome.finish(outcome.is_err()).await;
    drop(idp);
    if let Err(err) = outcome {
        eprintln!(
            "screenshots of the failure: {}",
            chrome.screenshot_dir().display()
        );
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("the scenario did not finish: {err}"),
        }
    }
}

/// Signs `email` in from the app's sign-in page through the identity
/// provider's login form; the browser ends on the page it first asked for.
async fn sign_in(browser: &Session, email: &str) {
    browser
        .css("form[action='/auth/login'] button[type=submit]")
        .await;
    browser.shot("sign-in-page").await;
    browser
        .click("form[action='/auth/login'] button[type=submit]")
        .await;
    browser.css("#login-form").await;
    browser.fill("#login", email).await;
    browser.fill("#password", "demo").await;
    browser.shot("identity-provider-login").await;
    browser.click("#sign-in").await;
    browser
        .xpath(
            &format!(
                "//header//span[@class='email'][normalize-space()={}]",
                literal(email)
            ),
            &format!("{email} shown as signed in"),
        )
        .await;
}

/// The run page's live region shows the run in `state`.
async fn run_state(browser: &Session, state: &str) {
    browser
        .css(&format!("#live .run-state .state-{state}"))
        .await;
}

/// Fills the new-migration form of project `slug` and submits it.
async fn create_migration(browser: &Session, app: &TestApp, slug: &str, m: (&str, &str, &str)) {
    let (version, up, down) = m;
    browser.goto(&app.url(&format!("/projects/{slug}"))).await;
    browser
        .click(&format!("a.button[href='/projects/{slug}/migrations/new']"))
        .await;
    browser.fill("input[name=version]", version).await;
    browser
        .fill("input[name=name]", &format!("migration {version}"))
        .await;
    browser.fill("textarea[name=up_sql]", up).await;
    browser.fill("textarea[name=down_sql]", down).await;
    browser.shot(&format!("new-migration-{version}")).await;
    browser.click("main form button.primary").await;
    browser
        .xpath(
            &format!("//main//h1[code={}]", literal(version)),
            &format!("the page of migration {version}"),
        )
        .await;
    assert_eq!(
        browser.title().await,
        format!("{version} · {slug} · migrate-hub"),
        "the migration page's title"
    );
    browser.shot(&format!("migration-{version}-created")).await;
}

/// Requests a run up to `version` on the project's only DB set (in
/// `daily`) with the project page's form; returns the run's id.
async fn request_run(browser: &Session, app: &TestApp, slug: &str, version: &str) -> String {
    browser.goto(&app.url(&format!("/projects/{slug}"))).await;
    let form = format!("form[action='/projects/{slug}/runs']");
    let set = browser
        .text(&format!("{form} select[name=db_set_id]"))
        .await;
    assert!(
        set.contains("daily"),
        "the DB set offered is in daily: {set}"
    );
    browser
        .fill(&format!("{form} input[name=target_version]"), version)
        .await;
    browser
        .fill(&format!("{form} input[name=note]"), "from the browser test")
        .await;
    browser.shot(&format!("request-run-{version}")).await;
    browser.click(&format!("{form} button.primary")).await;
    run_state(browser, "pending_approval").await;
    browser.shot(&format!("run-{version}-requested")).await;
    let url = browser.current_url().await;
    let run = url.rsplit('/').next().unwrap().to_owned();
    let short = browser.text("main h1 code").await;
    assert!(
        short.len() == 8 && run.ends_with(&short),
        "the page names the run by the random end of its id: {short} for {run}"
    );
    run
}

/// The manager approves `run` from its page.
async fn approve(browser: &Session, app: &TestApp, run: &str, step: &str) {
    browser.goto(&app.url(&format!("/runs/{run}"))).await;
    run_state(browser, "pending_approval").await;
    browser
        .fill(
            &format!("form[action='/runs/{run}/approve'] input[name=comment]"),
            "looks good",
        )
        .await;
    browser
        .click(&format!(
            "form[action='/runs/{run}/approve'] button[type=submit]"
        ))
        .await;
    run_state(browser, "approved").await;
    browser
        .xpath(
            &format!(
                "//table//tr[td[1]={} and td[2]//span='approved' and td[3]='looks good']",
                literal(MANAGER)
            ),
            "the manager's approval among the decisions",
        )
        .await;
    browser.shot(step).await;
}

/// XPath of the live region once exactly `n` target rows are in `state`.
fn rows_in(state: &str, n: usize) -> String {
    format!("//div[@id='live'][count(.//tr[contains(@class,'state-row-{state}')])={n}]")
}

/// XPath of the live row of target `name`.
fn row(name: &str) -> String {
    format!(
        "//div[@id='live']//tr[contains(@class,'target-row')][td[1]={}]",
        literal(name)
    )
}

async fn scenario(app: Arc<TestApp>, chrome: Arc<Chrome>) {
    // The inventory: project `shop`, DB set `orders` in `daily` with a
    // PostgreSQL and a MariaDB database (set up over the API).
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let pg = TestDatabase::create("mh_test_e2e").await;
    let maria = TestMysqlDatabase::create("mh_test_e2e").await;
    let pg_target = app.pg_target(&slug, &set, "orders-pg", &pg).await;
    app.mysql_target(&slug, &set, "orders-maria", &maria).await;

    // 0. The accessibility check finds what it must: an unlabelled field
    //    and an image without text on a page made for it.
    let user = chrome.session("user").await;
    user.goto("data:text/html,<!doctype html><html lang=en><title>t</title><main><img src=x.png><input type=text></main></html>")
        .await;
    let found: Vec<String> = user
        .violations()
        .await
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        found.contains(&"image-alt".to_owned()) && found.contains(&"label".to_owned()),
        "axe-core finds the planted violations: {found:?}"
    );

    // 1. The user opens the project, is sent to sign in, and signs in
    //    through the identity provider's login page.
    user.goto(&app.url(&format!("/projects/{slug}"))).await;
    sign_in(&user, USER).await;
    user.css("main h1").await;
    assert!(
        user.current_url()
            .await
            .ends_with(&format!("/projects/{slug}")),
        "back on the page first asked for"
    );
    user.shot("user-signed-in").await;

    // 2. A migration, through the new-migration form.
    create_migration(
        &user,
        &app,
        &slug,
        (
            "1",
            "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL)",
            "DROP TABLE items",
        ),
    )
    .await;

    // 3. A run on `daily`, requested with the project page's form.
    let run = request_run(&user, &app, &slug, "1").await;
    assert!(
        user.client
            .find(fantoccini::Locator::Css("form[action$='/approve']"))
            .await
            .is_err(),
        "a user is not offered to approve"
    );

    // 4. A manager, in a second browser (its own cookies), signs in and
    //    approves. The user's open run page follows without a reload.
    let manager = chrome.session("manager").await;
    manager.goto(&app.url(&format!("/runs/{run}"))).await;
    sign_in(&manager, MANAGER).await;
    approve(&manager, &app, &run, "run-1-approved").await;
    run_state(&user, "approved").await;
    user.shot("run-1-approved-seen-live").await;

    // 5. The user executes; with no worker yet, both targets wait in the
    //    queue. Then a worker starts and the rows turn green in place.
    user.goto(&app.url(&format!("/runs/{run}"))).await;
    user.click(&format!(
        "form[action='/runs/{run}/execute'] button[type=submit]"
    ))
    .await;
    user.xpath(&rows_in("queued", 2), "both targets queued")
        .await;
    user.script("window.mhNotReloaded = true; return null;")
        .await;
    user.shot("run-1-queued").await;
    let fleet = Fleet::start(&app);
    user.xpath(&rows_in("succeeded", 2), "both target rows green")
        .await;
    run_state(&user, "succeeded").await;
    assert_eq!(
        user.script("return window.mhNotReloaded === true;").await,
        json!(true),
        "the rows turned green without a page reload"
    );
    let green = user
        .css("#live tr.state-row-succeeded span.state-succeeded")
        .await
        .css_value("background-color")
        .await
        .unwrap();
    assert_ne!(
        green, "rgba(0, 0, 0, 0)",
        "the succeeded badge is coloured by the style sheet"
    );
    user.shot("run-1-succeeded").await;
    assert!(pg.has_table("items").await, "migrated on PostgreSQL");
    maria
        .run("INSERT INTO items (id, name) VALUES (1, 'migrated on MariaDB')")
        .await;

    // 6. A migration that only PostgreSQL accepts: MariaDB's own error text
    //    appears on the run page.
    create_migration(
        &user,
        &app,
        &slug,
        (
            "2",
            "CREATE TABLE tags (id INT PRIMARY KEY, labels TEXT[])",
            "DROP TABLE tags",
        ),
    )
    .await;
    let failing = request_run(&user, &app, &slug, "2").await;
    assert_ne!(
        run[run.len() - 8..],
        failing[failing.len() - 8..],
        "two runs of the same minute have different short ids"
    );
    approve(&manager, &app, &failing, "run-2-approved").await;
    user.goto(&app.url(&format!("/runs/{failing}"))).await;
    user.click(&format!(
        "form[action='/runs/{failing}/execute'] button[type=submit]"
    ))
    .await;
    run_state(&user, "partially_failed").await;
    user.xpath(
        &format!(
            "{}[contains(@class,'state-row-succeeded')]",
            row("orders-pg")
        ),
        "the PostgreSQL row green",
    )
    .await;
    let error = user
        .xpath(
            &format!(
                "{}[contains(@class,'state-row-failed')]//pre[contains(@class,'error-text')]",
                row("orders-maria")
            ),
            "the MariaDB row failed with an error",
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        error.contains("You have an error in your SQL syntax"),
        "MariaDB's error text is shown: {error}"
    );
    user.shot("run-2-failed-on-mariadb").await;
    fleet.stop().await;

    // 7. The audit page: the manager sees every step; the user their own.
    manager.goto(&app.url("/audit")).await;
    manager.css("table.audit").await;
    for (actor, action) in [
        (USER, "auth.login"),
        (MANAGER, "auth.login"),
        (USER, "migration.created"),
        (USER, "run.requested"),
        (MANAGER, "run.approved"),
        (USER, "run.executed"),
    ] {
        manager
            .xpath(
                &format!(
                    "//table[contains(@class,'audit')]//tr[td[3]={} and td[4]/code={}]",
                    literal(actor),
                    literal(action)
                ),
                &format!("{action} by {actor} on the audit page"),
            )
            .await;
    }
    manager.shot("audit-all").await;

    // 8. The pages a DBA opens next, each checked for accessibility: the
    //    dashboard, the DB set as a fleet, a target, its schema.
    for (path, what, step) in [
        ("/".to_owned(), "main h1", "dashboard"),
        (
            format!("/projects/{slug}/db-sets/{set}"),
            "#fleet-summary",
            "db-set-fleet",
        ),
        (format!("/targets/{pg_target}"), "main h1", "target"),
        (
            format!("/targets/{pg_target}/schema"),
            "#drift",
            "target-schema",
        ),
    ] {
        manager.goto(&app.url(&path)).await;
        manager.css(what).await;
        manager.shot(step).await;
    }
    user.goto(&app.url("/audit")).await;
    user.xpath(
        "//table[contains(@class,'audit')]//tr[td[4]/code='run.executed']",
        "the user's own executions in the audit",
    )
    .await;
    assert!(
        user.client
            .find(fantoccini::Locator::XPath(&format!(
                "//table[contains(@class,'audit')]//tr[td[3]={}]",
                literal(MANAGER)
            )))
            .await
            .is_err(),
        "a user sees only their own audit rows"
    );
    user.shot("audit-own").await;
}
