//! Webhooks end to end: a real receiver on loopback that answers 200, fails,
//! hangs past the timeout and recovers, against the real control plane
//! killed and restarted in between.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shortline_store::clickwire::{CONTENT_TYPE, Encoder};

use crate::{Control, assert_problem, eventually, start, start_in};

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver: answers each request by its mode (200, 500, or no
/// answer for 3 s, past the control plane's timeout) and keeps them all.
struct Receiver {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(OK));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (m, s) = (Arc::clone(&mode), Arc::clone(&seen));
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (m, s) = (Arc::clone(&m), Arc::clone(&s));
                std::thread::spawn(move || serve(stream, &m, &s));
            }
        });
        Self { addr, mode, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// The requests answered 200 on `path`, in order.
    fn delivered(&self, path: &str) -> Vec<Received> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path && r.answered == 200)
            .cloned()
            .collect()
    }
}

fn serve(stream: std::net::TcpStream, mode: &AtomicU8, seen: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        // A hang answers after the sender gave up: recorded as unanswered.
        let (status, text, answered) = match mode.load(Ordering::SeqCst) {
            OK => (200, "OK", 200),
            FAIL => (500, "Internal Server Error", 500),
            _ => {
                std::thread::sleep(Duration::from_secs(3));
                (200, "OK", 0)
            }
        };
        seen.lock().unwrap().push(Received {
            path,
            headers,
            body,
            answered,
        });
        let answer = format!("HTTP/1.1 {status} {text}\r\ncontent-length: 0\r\n\r\n");
        if reader.get_mut().write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Checks the signature header the way a receiver should: HMAC-SHA256 of
/// `timestamp.body` under the secret, and a timestamp within five minutes.
fn verify(received: &Received, secret: &str) {
    let header = received.header("shortline-signature").expect("signed");
    let (t, v1) = header
        .split_once(",v1=")
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v)))
        .expect("t=...,v1=...");
    let t: i64 = t.parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - t).abs() < 300, "a fresh timestamp: {t} at {now}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signed = [format!("{t}.").as_bytes(), &received.body].concat();
    let mac = hex::decode(v1).expect("hex");
    ring::hmac::verify(&key, &signed, &mac).expect("the signature checks out");
}

fn link_id(control: &Control, code: &str) -> u64 {
    let response = crate::agent()
        .get(&control.url("/internal/v1/changes?after=0"))
        .header(
            "Authorization",
            &format!("Bearer {}", control.internal_token()),
        )
        .call()
        .unwrap();
    let reader: Box<dyn Read + Send> = Box::new(response.into_body().into_reader());
    for line in BufReader::new(reader).lines() {
        let message: Value = serde_json::from_str(&line.unwrap()).unwrap();
        for change in message["changes"].as_array().into_iter().flatten() {
            if change["code"] == code {
                return change["record"]["link_id"].as_u64().expect("an id");
            }
        }
    }
    panic!("{code} is not in the change stream");
}

fn post_clicks(control: &Control, link: u64, clicks: usize, seq: u64) {
    let mut encoder = Encoder::new();
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap() * 1000;
    for _ in 0..clicks {
        encoder.push(
            link,
            now,
            false,
            None,
            b"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            b"",
        );
    }
    let batch = encoder.finish("proxy-webhooks", seq);
    let status = crate::agent()
        .post(&control.url("/internal/v1/clicks"))
        .header("Content-Type", CONTENT_TYPE)
        .header(
            "Authorization",
            &format!("Bearer {}", control.internal_token()),
        )
        .send(&batch[..])
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200);
}

fn hook(control: &Control, id: &str) -> Value {
    let answer = control.get(&format!("/api/v1/webhooks/{id}"));
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

const ENV: [(&str, &str); 4] = [
    ("SHORTLINE_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("SHORTLINE_WEBHOOK_TIMEOUT_MS", "1000"),
    ("SHORTLINE_WEBHOOK_RETRY_MIN_MS", "100"),
    ("SHORTLINE_WEBHOOK_RETRY_MAX_MS", "400"),
];

#[test]
fn events_are_signed_delivered_in_order_retried_and_kept_across_a_crash() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut control = start_in(dir.path(), &ENV);
    let alice = control.new_key("alice", "user");
    let created = control.post(
        "/api/v1/webhooks",
        json!({"url": receiver.url("/all"), "events": ["link.created", "link.updated", "link.flagged", "link.deleted", "link.clicks"]}),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(
        created.body["owner"].is_null(),
        "an admin's hears of every link"
    );
    assert!(hook(&control, &id).get("secret").is_none(), "shown once");
    let own = control.request(
        "POST",
        "/api/v1/webhooks",
        Some(&alice),
        Some(&json!({"url": receiver.url("/alice"), "events": ["link.created", "link.clicks"]})),
    );
    assert_eq!(own.status, 201, "{own:?}");
    assert_eq!(own.body["owner"], "alice");

    // A link's life, and one of alice's.
    let link = control.create(json!({"url": "https://example.com/a", "tags": ["x"]}));
    let code = link["code"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/links/{code}");
    let patched = control.request(
        "PATCH",
        &path,
        Some(&control.token),
        Some(&json!({"title": "A"})),
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    let flagged = control.request(
        "PATCH",
        &path,
        Some(&control.token),
        Some(&json!({"status": "flagged"})),
    );
    assert_eq!(flagged.status, 200, "{flagged:?}");
    assert_eq!(
        control
            .request("DELETE", &path, Some(&control.token), None)
            .status,
        204
    );
    let hers = control.request(
        "POST",
        "/api/v1/links",
        Some(&alice),
        Some(&json!({"url": "https://example.com/hers"})),
    );
    assert_eq!(hers.status, 201, "{hers:?}");
    let her_code = hers.body["code"].as_str().unwrap().to_owned();

    eventually(120, "five events at /all", || {
        receiver.delivered("/all").len() >= 5
    });
    let all = receiver.delivered("/all");
    let types: Vec<String> = all
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "link.created",
            "link.updated",
            "link.flagged",
            "link.deleted",
            "link.created"
        ]
    );
    for received in &all {
        verify(received, &secret);
        let event = received.json();
        assert_eq!(received.header("shortline-event-id"), event["id"].as_str());
        assert_eq!(received.header("content-type"), Some("application/json"));
    }
    let events: Vec<Value> = all.iter().map(Received::json).collect();
    assert_eq!(events[0]["data"]["link"]["code"], code.as_str());
    assert_eq!(events[0]["data"]["link"]["url"], "https://example.com/a");
    assert_eq!(events[0]["data"]["link"]["tags"], json!(["x"]));
    assert_eq!(events[1]["data"]["link"]["title"], "A");
    assert_eq!(events[2]["data"]["link"]["status"], "flagged");
    assert_eq!(events[2]["data"]["link"]["flag_reason"], "admin");
    assert_eq!(events[4]["data"]["link"]["code"], her_code.as_str());
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each event has its own id");
    eventually(60, "alice's event", || {
        !receiver.delivered("/alice").is_empty()
    });
    let hers_only = receiver.delivered("/alice");
    assert_eq!(hers_only.len(), 1, "{hers_only:?}");
    assert_eq!(hers_only[0].json()["data"]["link"]["owner"], "alice");

    // Clicks, batched per flush, each subscription hearing of its links.
    let her_id = link_id(&control, &her_code);
    post_clicks(&control, her_id, 3, 1);
    eventually(60, "a clicks event at /alice", || {
        receiver
            .delivered("/alice")
            .iter()
            .any(|r| r.json()["type"] == "link.clicks")
    });
    let clicks = receiver
        .delivered("/alice")
        .into_iter()
        .find(|r| r.json()["type"] == "link.clicks")
        .unwrap()
        .json();
    let counted = clicks["data"]["links"].as_array().unwrap();
    assert_eq!(counted.len(), 1, "{clicks}");
    assert_eq!(counted[0]["code"], her_code.as_str());
    assert_eq!(counted[0]["clicks"], 3);
    assert_eq!(counted[0]["human_clicks"], 3);
    assert!(
        counted[0]["short_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{her_code}")),
        "{clicks}"
    );

    // Failures: a 500, then a hang past the timeout, both retried, then
    // delivered once the receiver recovers.
    receiver.set(FAIL);
    let second = control.create(json!({"url": "https://example.com/b"}));
    eventually(60, "two failed attempts", || {
        hook(&control, &id)["attempts"].as_u64().unwrap() >= 2
    });
    let failing = hook(&control, &id);
    assert_eq!(
        failing["last_error"], "the receiver answered 500",
        "{failing}"
    );
    assert!(failing["failing_since"].is_string(), "{failing}");
    assert_eq!(failing["pending"], 1, "{failing}");
    receiver.set(HANG);
    eventually(60, "a timed-out attempt", || {
        hook(&control, &id)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out"))
    });
    receiver.set(OK);
    eventually(60, "the event delivered after recovering", || {
        hook(&control, &id)["pending"] == 0
    });
    let log = control.get(&format!("/api/v1/webhooks/{id}/deliveries"));
    assert_eq!(log.status, 200, "{log:?}");
    let attempts = log.body["attempts"].as_array().unwrap();
    let newest = &attempts[0];
    assert_eq!(newest["status"], 200, "{log:?}");
    assert!(newest["error"].is_null());
    assert!(newest["attempt"].as_u64().unwrap() >= 3, "{newest}");
    assert!(
        attempts.iter().any(|a| a["status"] == 500),
        "the 500 is in the log: {log:?}"
    );
    assert!(
        attempts
            .iter()
            .any(|a| a["status"].is_null() && a["error"].as_str().unwrap().contains("timed out")),
        "the timeout is in the log: {log:?}"
    );
    let last = receiver.delivered("/all").last().unwrap().json();
    assert_eq!(last["data"]["link"]["code"], second["code"]);
    assert!(hook(&control, &id)["failing_since"].is_null());

    // An event queued while the receiver fails survives a SIGKILL.
    receiver.set(FAIL);
    let third = control.create(json!({"url": "https://example.com/c"}));
    eventually(60, "a failed attempt at the third link", || {
        hook(&control, &id)["attempts"].as_u64().unwrap() >= 1
    });
    control.kill();
    receiver.set(OK);
    // With a one-second window: a subscription failing longer is disabled.
    let mut env = ENV.to_vec();
    env.push(("SHORTLINE_WEBHOOK_RETRY_WINDOW_SECONDS", "1"));
    let control = start_in(dir.path(), &env);
    eventually(120, "the third link's event after the restart", || {
        receiver
            .delivered("/all")
            .iter()
            .any(|r| r.json()["data"]["link"]["code"] == third["code"])
    });

    receiver.set(FAIL);
    let fourth = control.create(json!({"url": "https://example.com/d"}));
    eventually(60, "the subscription disabled", || {
        hook(&control, &id)["enabled"] == false
    });
    let disabled = hook(&control, &id);
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("the receiver answered 500"), "{reason}");
    assert_eq!(disabled["pending"], 1, "kept while disabled: {disabled}");
    receiver.set(OK);
    let enabled = control.request(
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        Some(&control.token),
        Some(&json!({"enabled": true})),
    );
    assert_eq!(enabled.status, 200, "{enabled:?}");
    assert!(enabled.body["disabled_reason"].is_null());
    eventually(60, "the kept event after re-enabling", || {
        receiver
            .delivered("/all")
            .iter()
            .any(|r| r.json()["data"]["link"]["code"] == fourth["code"])
    });
    let codes: Vec<Value> = receiver
        .delivered("/all")
        .iter()
        .map(|r| r.json()["data"]["link"]["code"].clone())
        .collect();
    for link in [&second, &third, &fourth] {
        assert_eq!(
            codes.iter().filter(|c| **c == link["code"]).count(),
            1,
            "each event delivered once: {codes:?}"
        );
    }

    // Private targets refused again: every delivery checks the addresses
    // it connects to, not only the subscription's creation.
    let mut control = control;
    control.kill();
    let mut env = ENV.to_vec();
    env.retain(|(k, _)| *k != "SHORTLINE_WEBHOOK_ALLOW_PRIVATE");
    let control = start_in(dir.path(), &env);
    let before = receiver.seen.lock().unwrap().len();
    control.create(json!({"url": "https://example.com/e"}));
    eventually(60, "a refused delivery", || {
        hook(&control, &id)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1, a loopback address"))
    });
    assert_eq!(
        receiver.seen.lock().unwrap().len(),
        before,
        "nothing reached the receiver"
    );
}

#[test]
fn subscriptions_are_checked_and_kept_to_their_owners() {
    let control = start();
    let alice = control.new_key("alice", "user");
    let bob = control.new_key("bob", "user");
    let create = |token: &str, body: Value| {
        control.request("POST", "/api/v1/webhooks", Some(token), Some(&body))
    };
    let events = json!(["link.created"]);
    // Loopback and private targets are refused unless allowed.
    for url in [
        "http://127.0.0.1:9/in",
        "http://[::1]/in",
        "http://10.0.0.7/in",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/in",
    ] {
        let answer = create(&control.token, json!({"url": url, "events": events}));
        assert_problem(&answer, 422, Some("url"));
        assert!(
            answer.body["detail"]
                .as_str()
                .unwrap()
                .contains("webhook_allow_private"),
            "{answer:?}"
        );
    }
    assert_problem(
        &create(
            &control.token,
            json!({"url": "ftp://example.com/", "events": events}),
        ),
        422,
        Some("url"),
    );
    assert_problem(
        &create(
            &control.token,
            json!({"url": "https://example.com/", "events": []}),
        ),
        422,
        Some("events"),
    );
    assert_eq!(
        create(
            &control.token,
            json!({"url": "https://example.com/", "events": ["link.visited"]})
        )
        .status,
        422
    );
    assert_problem(
        &create(
            &alice,
            json!({"url": "https://example.com/", "events": events, "owner": "bob"}),
        ),
        422,
        Some("owner"),
    );
    assert_problem(
        &control.request(
            "POST",
            "/api/v1/webhooks",
            None,
            Some(&json!({"url": "https://example.com/", "events": events})),
        ),
        401,
        None,
    );
    // A public target (a literal address: no resolver needed).
    let hers = create(
        &alice,
        json!({"url": "https://93.184.215.14/in", "events": events}),
    );
    assert_eq!(hers.status, 201, "{hers:?}");
    let id = hers.body["id"].as_str().unwrap();
    let path = format!("/api/v1/webhooks/{id}");
    assert_eq!(
        control.request("GET", &path, Some(&alice), None).status,
        200
    );
    assert_problem(&control.request("GET", &path, Some(&bob), None), 404, None);
    assert_problem(
        &control.request("DELETE", &path, Some(&bob), None),
        404,
        None,
    );
    let listed = control.request("GET", "/api/v1/webhooks", Some(&bob), None);
    assert_eq!(listed.body, json!([]), "{listed:?}");
    assert_eq!(
        control
            .get("/api/v1/webhooks")
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let patched = control.request(
        "PATCH",
        &path,
        Some(&alice),
        Some(&json!({"events": ["link.deleted", "link.created", "link.deleted"]})),
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(
        patched.body["events"],
        json!(["link.created", "link.deleted"])
    );
    assert_problem(
        &control.request(
            "PATCH",
            &path,
            Some(&alice),
            Some(&json!({"url": "http://127.0.0.1/"})),
        ),
        422,
        Some("url"),
    );
    assert_eq!(
        control.request("DELETE", &path, Some(&alice), None).status,
        204
    );
    assert_problem(
        &control.request("GET", &path, Some(&alice), None),
        404,
        None,
    );
}
