//! Debian's headless Chromium driven over WebDriver, for the browser
//! end-to-end tests.
//!
//! [`Chrome::start`] runs `chromedriver` on a free loopback port (killed,
//! with every browser it started, when the value is dropped); each
//! [`Chrome::session`] is a separate browser with its own profile, so its
//! own cookies. Screenshots go to `target/e2e-screenshots/<test>/NN-<session>-<step>.png`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element, error::CmdError};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long a page may take to show what a step waits for. Generous: the
/// machine may be busy building while the tests run.
pub const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn chromium() -> String {
    std::env::var("MH_E2E_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("MH_E2E_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// `target/` of this build (the test binary lives in `target/<profile>/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary is in target/<profile>/deps")
        .to_path_buf()
}

/// Where the screenshots of `test` go; emptied at the start of the test.
pub fn screenshot_dir(test: &str) -> PathBuf {
    target_dir().join("e2e-screenshots").join(test)
}

#[derive(Clone)]
struct Shots {
    dir: PathBuf,
    taken: Arc<AtomicUsize>,
}

/// A running chromedriver.
pub struct Chrome {
    url: String,
    child: Child,
    shots: Shots,
    profiles: Mutex<Vec<PathBuf>>,
    sessions: Mutex<Vec<Session>>,
}

impl Chrome {
    /// Starts chromedriver for the test named `test`. Fails (does not skip)
    /// when Chromium or chromedriver is not installed.
    pub async fn start(test: &str) -> Chrome {
        for (path, package) in [
            (chromium(), "chromium"),
            (chromedriver(), "chromium-driver"),
        ] {
            assert!(
                Path::new(&path).exists(),
                "{path} is missing: the browser tests need Debian's `{package}` package. \
                 Run scripts/ensure-services.sh (or `apt-get install -y chromium chromium-driver`)."
            );
        }
        let dir = screenshot_dir(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the screenshot folder");

        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(chromedriver())
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    dir.join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: dropping the guard ends chromedriver
                // and every browser it started, even after a panic.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver()))
        };
        let mut chrome = Chrome {
            url: format!("http://127.0.0.1:{port}"),
            child,
            shots: Shots {
                dir,
                taken: Arc::new(AtomicUsize::new(0)),
            },
            profiles: Mutex::new(Vec::new()),
            sessions: Mutex::new(Vec::new()),
        };
        let status_url = format!("{}/status", chrome.url);
        let http = reqwest::Client::new();
        common::testing::wait_for(DEADLINE, "chromedriver to answer on /status", || {
            if let Ok(Some(exit)) = chrome.child.try_wait() {
                panic!(
                    "chromedriver exited with {exit} before answering; see {}",
                    chrome.shots.dir.join("chromedriver.log").display()
                );
            }
            let req = http.get(&status_url).send();
            async move {
                let body: Value = req.await.ok()?.json().await.ok()?;
                (body["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        chrome
    }

    /// A new browser (own profile, own cookies) whose screenshots are named
    /// after `name`.
    pub async fn session(&self, name: &str) -> Session {
        let profile =
            std::env::temp_dir().join(format!("mh-e2e-profile-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).expect("create a browser profile folder");
        self.profiles.lock().unwrap().push(profile.clone());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless=new",
                    // CI runs as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--no-first-run",
                    "--window-size=1280,1600",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {}: {e}; see {}",
                    chromium(),
                    self.shots.dir.join("chromedriver.log").display()
                )
            });
        let session = Session {
            client,
            name: name.to_owned(),
            shots: self.shots.clone(),
        };
        self.sessions.lock().unwrap().push(session.clone());
        session
    }

    /// Ends every session; after a failure, first saves a screenshot of
    /// each (`NN-<session>-failure.png`).
    pub async fn finish(&self, failed: bool) {
        let sessions: Vec<Session> = self.sessions.lock().unwrap().drain(..).collect();
        for session in sessions {
            if failed && let Ok(png) = session.client.screenshot().await {
                let _ = session.save(&png, "failure");
            }
            let _ = session.client.close().await;
        }
    }

    pub fn screenshot_dir(&self) -> &Path {
        &self.shots.dir
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // The whole process group: chromedriver and the browsers it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for profile in self.profiles.lock().unwrap().drain(..) {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One browser window.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    name: String,
    shots: Shots,
}

impl Session {
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{}: open {url}: {e}", self.name));
    }

    pub async fn current_url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|e| panic!("{}: current URL: {e}", self.name))
    }

    pub async fn title(&self) -> String {
        self.client
            .title()
            .await
            .unwrap_or_else(|e| panic!("{}: title: {e}", self.name))
    }

    /// Checks the page with axe-core, then saves a screenshot as
    /// `NN-<session>-<step>.png`: every page the browser tests show is
    /// checked for accessibility.
    pub async fn shot(&self, step: &str) -> PathBuf {
        self.accessible(step).await;
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("{}: screenshot: {e}", self.name));
        self.save(&png, step).expect("write the screenshot")
    }

    /// Runs axe-core on the page; panics listing every `serious` or
    /// `critical` violation.
    pub async fn accessible(&self, step: &str) {
        let violations = self.violations().await;
        if !violations.is_empty() {
            let url = self.current_url().await;
            panic!(
                "{}: {step} ({url}) has {} serious or critical accessibility violation(s):\n{}",
                self.name,
                violations.len(),
                serde_json::to_string_pretty(&violations).unwrap_or_default()
            );
        }
    }

    /// The page's `serious` and `critical` violations as axe-core (npm
    /// `axe-core`, installed by scripts/test.sh) finds them:
    /// `[{id, impact, help, nodes}]`.
    pub async fn violations(&self) -> Vec<Value> {
        let axe = axe_source();
        self.client
            .execute(&format!("{axe}\nreturn true;"), vec![])
            .await
            .unwrap_or_else(|e| panic!("{}: injecting axe-core: {e}", self.name));
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                    .then(r => done(r.violations
                        .filter(v => v.impact === 'serious' || v.impact === 'critical')
                        .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                     nodes: v.nodes.slice(0, 5).map(n => n.html) }))))
                    .catch(e => done([{ id: 'axe-error', impact: 'critical', help: String(e), nodes: [] }]));",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("{}: running axe-core: {e}", self.name));
        match found {
            Value::Array(violations) => violations,
            other => panic!("{}: axe-core answered {other}", self.name),
        }
    }

    fn save(&self, png: &[u8], step: &str) -> std::io::Result<PathBuf> {
        let n = self.shots.taken.fetch_add(1, Ordering::SeqCst) + 1;
        let path = self
            .shots
            .dir
            .join(format!("{n:02}-{}-{step}.png", self.name));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Waits until `locator` finds an element; panics naming `what` after
    /// [`DEADLINE`].
    async fn wait_for(&self, locator: Locator<'_>, what: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(DEADLINE)
            .every(POLL)
            .for_element(locator)
            .await
        {
            Ok(element) => element,
            Err(CmdError::WaitTimeout) => {
                let url = self.current_url().await;
                panic!(
                    "{}: timed out after {DEADLINE:?} waiting for {what} on {url}",
                    self.name
                )
            }
            Err(e) => panic!("{}: waiting for {what}: {e}", self.name),
        }
    }

    /// Waits for an element matching the CSS selector.
    pub async fn css(&self, selector: &str) -> Element {
        self.wait_for(Locator::Css(selector), selector).await
    }

    /// Waits until the XPath expression finds an element: any DOM condition.
    pub async fn xpath(&self, expression: &str, what: &str) -> Element {
        self.wait_for(Locator::XPath(expression), what).await
    }

    /// Types `text` into the (emptied) field matching `selector`.
    pub async fn fill(&self, selector: &str, text: &str) {
        let field = self.css(selector).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("{}: clear {selector}: {e}", self.name));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{}: type into {selector}: {e}", self.name));
    }

    pub async fn click(&self, selector: &str) {
        self.css(selector)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("{}: click {selector}: {e}", self.name));
    }

    /// The text of the first element matching `selector`.
    pub async fn text(&self, selector: &str) -> String {
        self.css(selector)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("{}: text of {selector}: {e}", self.name))
    }

    pub async fn script(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{}: script: {e}", self.name))
    }
}

/// An XPath string literal for `text` (which must not contain both quote kinds).
pub fn literal(text: &str) -> String {
    if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

/// axe-core's script, read once.
fn axe_source() -> &'static str {
    static AXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AXE.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/a11y/node_modules/axe-core/axe.min.js");
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; the browser tests need npm `axe-core`: run scripts/test.sh, or \
                 `npm ci --prefix control-plane/tests/a11y`",
                path.display()
            )
        })
    })
}
