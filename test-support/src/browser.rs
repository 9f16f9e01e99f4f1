//! A real browser for tests: headless Chromium driven through chromedriver over the W3C
//! WebDriver protocol (Debian's `chromium` and `chromium-driver`, which
//! `scripts/install-packages.sh` installs). Fails, never skips, when either is missing.
//!
//! Only what the page tests use: open a URL, find an element, type into it, click it, run a
//! script and wait until a script's answer is true. The driver and the browser end when the
//! [`Browser`] is dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::metrics::free_port;

/// The browser Debian installs.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Its WebDriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// W3C WebDriver's key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    agent: ureq::Agent,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session in it.
    pub fn start() -> Result<Self, String> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(binary).exists() {
                return Err(format!(
                    "{binary} is missing: scripts/install-packages.sh installs chromium and chromium-driver"
                ));
            }
        }
        let port = free_port().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {CHROMEDRIVER}: {e}"))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            agent,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = browser
                .agent
                .get(format!("{}/status", browser.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not get ready in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let session = browser.call(
            "POST",
            "/session",
            &json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000"],
                },
            }}}),
        )?;
        let id = session["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {session}"))?;
        browser.base = format!("{}/session/{id}", browser.base);
        Ok(browser)
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        };
        let mut response = response.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let answer: Value = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if status != 200 {
            return Err(format!("{method} {path}: {status} {}", answer["value"]));
        }
        Ok(answer["value"].clone())
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.call("POST", "/url", &json!({ "url": url })).map(drop)
    }

    /// The first element `css` selects.
    pub fn find(&self, css: &str) -> Result<Element, String> {
        let found = self.call(
            "POST",
            "/element",
            &json!({ "using": "css selector", "value": css }),
        )?;
        found[ELEMENT]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .ok_or_else(|| format!("no element {css}"))
    }

    /// Types `text` into `element`.
    pub fn type_into(&self, element: &Element, text: &str) -> Result<(), String> {
        self.call(
            "POST",
            &format!("/element/{}/value", element.0),
            &json!({ "text": text }),
        )
        .map(drop)
    }

    /// Clicks `element`.
    pub fn click(&self, element: &Element) -> Result<(), String> {
        self.call("POST", &format!("/element/{}/click", element.0), &json!({}))
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and gives what it returns.
    pub fn run(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        self.call(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": args }),
        )
    }

    /// Waits until `script` returns something other than null or false, and gives it; on
    /// timeout, the error holds the page's text.
    pub fn wait_for(&self, what: &str, within: Duration, script: &str) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.run(script, &[])?;
            if !answer.is_null() && answer != Value::Bool(false) {
                return Ok(answer);
            }
            if Instant::now() > deadline {
                let text = self
                    .run("return document.body.innerText", &[])
                    .unwrap_or_default();
                return Err(format!(
                    "{what}: not within {within:?}; the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", &Value::Null);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
