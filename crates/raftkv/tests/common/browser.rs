//! A headless Chromium driven over WebDriver (chromedriver), for the live
//! view's browser test. The client is the W3C WebDriver protocol's few
//! JSON-over-HTTP calls the test needs (new session, navigate, run a
//! script), spoken with the tests' blocking reqwest: no driver crate. The
//! browser gets a fresh profile in a temp dir; dropping the [`Browser`] ends
//! the session (chromedriver closes Chromium) and kills chromedriver's
//! process group. Without the binaries the test says so loudly and passes,
//! unless `CI` is set, where it fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testcluster::reserve_port;

use super::WAIT;

/// Chromium's flags known to work headless in containers and CI.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
];

/// Bound on one WebDriver call (starting a session launches Chromium).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `chromium` and `chromedriver` on the PATH, or `None` after a loud
/// SKIPPED line (a panic when the `CI` environment variable is set).
// A skipped test must be visible in the test output, not in a log.
#[allow(clippy::print_stderr)]
pub fn find_chromium(test: &str) -> Option<(PathBuf, PathBuf)> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
    };
    let found = on_path("chromium").zip(on_path("chromedriver"));
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: `chromium` or `chromedriver` is not on the PATH, and CI requires them (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "\n*** SKIPPED {test}: `chromium` or `chromedriver` is not on the PATH (Debian: apt-get install chromium chromium-driver) ***\n"
        );
    }
    found
}

/// A Chromium session behind its own chromedriver.
pub struct Browser {
    driver: Option<Child>,
    endpoint: String,
    session: Option<String>,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session of
    /// `chromium` with [`CHROMIUM_ARGS`] and a fresh profile.
    pub fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("a profile dir");
        let port = reserve_port().expect("a port");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop reaches Chromium too.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::blocking::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let mut browser = Browser {
            driver: Some(driver),
            endpoint: format!("http://127.0.0.1:{port}"),
            session: None,
            http,
            _profile: profile,
        };
        let deadline = Instant::now() + WAIT;
        while browser
            .http
            .get(format!("{}/status", browser.endpoint))
            .send()
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = browser.call("POST", "/session", capabilities);
        let session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_string();
        browser.session = Some(session);
        browser
    }

    /// Loads `url` (returns once the document has loaded).
    pub fn goto(&self, url: &str) {
        self.call_in_session("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call_in_session(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    fn call_in_session(&self, method: &str, path: &str, body: Value) -> Value {
        let session = self.session.as_deref().expect("a session");
        self.call(method, &format!("/session/{session}{path}"), body)
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.endpoint);
        let request = match method {
            "POST" => self.http.post(url).json(&body),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let code = response.status();
        let answer: Value = response
            .json()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON: {e}"));
        assert!(
            code.is_success(),
            "WebDriver {method} {path} answered {code}: {answer}"
        );
        answer["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let url = format!("{}/session/{session}", self.endpoint);
            let _ = self
                .http
                .delete(url)
                .timeout(Duration::from_secs(10))
                .send();
        }
        if let Some(mut driver) = self.driver.take() {
            // The whole group: chromedriver and any Chromium it left behind.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", driver.id())])
                .stderr(Stdio::null())
                .status();
            let _ = driver.kill();
            let _ = driver.wait();
        }
    }
}
