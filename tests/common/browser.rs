//! A headless Chromium (the Debian package, through scripts/chromium) driven over the
//! DevTools protocol: a page's script runs as in a user's browser, which `--dump-dom`
//! would not wait for. The protocol's JSON messages go over a WebSocket (tungstenite).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tungstenite::{Message, WebSocket};

use super::observe::{get_json, tool};
use super::wait;

/// A headless Chromium with one page; killed on drop.
pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium headless on loopback (without its sandbox, which needs a user
    /// other than root) and attaches to its first page.
    pub fn start() -> Self {
        let chromium = tool("chromium");
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let mut endpoint = None;
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                endpoint = Some(url.trim().to_owned());
                break;
            }
            seen.push(line);
        }
        // The rest of its log is read and dropped: a closed pipe could end it.
        std::thread::spawn(move || lines.for_each(drop));
        let endpoint =
            endpoint.unwrap_or_else(|| panic!("Chromium did not start: {}", seen.join("\n")));
        let host = endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned();
        let targets = get_json(&format!("http://{host}/json/list"));
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|target| target["type"] == "page")
            .unwrap_or_else(|| panic!("no page target: {targets}"));
        let url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let stream = TcpStream::connect(&host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (socket, _) = tungstenite::client(url, stream).unwrap();
        let mut browser = Self {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        };
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Calls DevTools method `method`; its result (a protocol error fails the test).
    pub fn call(&mut self, method: &str, params: Json) -> Json {
        self.request(method, params)
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Calls DevTools method `method`: its result, or the protocol's error.
    fn request(&mut self, method: &str, params: Json) -> Result<Json, Json> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(request.to_string()))
            .unwrap();
        loop {
            let message = self.socket.read().unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Json = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                return if answer["error"].is_null() {
                    Ok(answer["result"].clone())
                } else {
                    Err(answer["error"].clone())
                };
            }
        }
    }

    /// Opens `url` in the page and waits until its document has loaded.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        wait::until(Duration::from_secs(20), &format!("{url} to load"), || {
            self.eval("document.readyState") == "complete"
        });
    }

    /// The value of JavaScript `expression` in the page; `null` if the page went away
    /// while it ran (a login's redirect, say), as it does before the next page has
    /// loaded, so that a test polling for what a page shows polls again.
    pub fn eval(&mut self, expression: &str) -> Json {
        let answer = self.request(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        let result = match answer {
            Ok(result) => result,
            Err(error) if error["message"] == "Inspected target navigated or closed" => {
                return Json::Null;
            }
            Err(error) => panic!("Runtime.evaluate of {expression} failed: {error}"),
        };
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression} threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
