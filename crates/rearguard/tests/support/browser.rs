//! Debian's headless Chromium, driven over the DevTools protocol (a websocket on loopback):
//! navigate, run a line of script (to type and click as a person would), screenshot.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Browser {
    child: Child,
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// Where screenshots are kept for people to look at: `artifacts/screenshots` in the
/// repository (ignored by git), or `REARGUARD_ARTIFACTS`.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("REARGUARD_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts"))
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    pub fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is installed (scripts/test.sh installs Debian's)");
        // Chromium writes the port it chose to this file once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse().ok())
            {
                break port;
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        let page_socket = loop {
            let (_, body) = super::http(port, "GET", "/json/list", None, None);
            let pages: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if let Some(url) = pages.as_array().and_then(|pages| {
                pages
                    .iter()
                    .find(|p| p["type"] == "page")
                    // Chromium names the host as it was asked; the port is ours to add.
                    .and_then(|p| p["id"].as_str())
                    .map(|id| format!("ws://127.0.0.1:{port}/devtools/page/{id}"))
            }) {
                break url;
            }
            assert!(Instant::now() < deadline, "chromium shows no page");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (socket, _) = tungstenite::connect(page_socket.as_str()).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
        }
        let mut browser = Self {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        };
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Sends a DevTools command and returns its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(tungstenite::Message::text(message))
            .unwrap();
        loop {
            let message = self.socket.read().expect("chromium answers");
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(reply) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Runs `script` in the page and returns its value.
    pub fn eval(&mut self, script: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": script, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{script}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_loaded(url);
    }

    /// Waits until the page at `path_prefix` (a URL or the start of its path) has loaded.
    pub fn wait_loaded(&mut self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.eval("[document.readyState, location.href].join(' ')");
            let text = state.as_str().unwrap_or("").to_string();
            if text.starts_with("complete") && text.contains(prefix) {
                return;
            }
            assert!(Instant::now() < deadline, "the page never loaded: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element `selector` names, as a person would (its default action runs).
    pub fn click(&mut self, selector: &str) {
        let script = format!("document.querySelector({selector:?}).click()");
        self.eval(&script);
    }

    /// The text of the element `selector` names.
    pub fn text(&mut self, selector: &str) -> String {
        let script = format!("(document.querySelector({selector:?}) || {{}}).innerText || ''");
        self.eval(&script).as_str().unwrap_or("").to_string()
    }

    /// Saves the page as a PNG in [`artifacts`] and returns its path.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
