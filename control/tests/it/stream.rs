//! The change stream: changes arrive within milliseconds, a stream resumes
//! from a sequence, a subscriber too far behind is sent to a snapshot, and
//! snapshots are served.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Control, agent, start_with};

struct Subscription {
    lines: std::io::Lines<BufReader<Box<dyn std::io::Read + Send>>>,
}

/// A GET on an internal endpoint with the internal token.
fn internal_get(control: &Control, path: &str) -> ureq::http::Response<ureq::Body> {
    agent()
        .get(&control.url(path))
        .header(
            "Authorization",
            &format!("Bearer {}", control.internal_token()),
        )
        .call()
        .unwrap()
}

impl Subscription {
    fn open(control: &Control, after: u64) -> Self {
        let response = internal_get(control, &format!("/internal/v1/changes?after={after}"));
        assert_eq!(response.status().as_u16(), 200);
        let reader: Box<dyn std::io::Read + Send> = Box::new(response.into_body().into_reader());
        Self {
            lines: BufReader::new(reader).lines(),
        }
    }

    fn next(&mut self) -> Value {
        serde_json::from_str(&self.lines.next().expect("stream open").expect("line"))
            .expect("json line")
    }

    /// Skips heartbeats and snapshot announcements until changes arrive.
    fn next_changes(&mut self) -> Vec<Value> {
        loop {
            let message = self.next();
            if message["kind"] == "changes" {
                return message["changes"].as_array().unwrap().clone();
            }
        }
    }
}

#[test]
fn changes_stream_and_resume() {
    let control = start_with(&[]);
    let unauthorized = agent()
        .get(&control.url("/internal/v1/changes?after=0"))
        .call()
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);

    let mut stream = Subscription::open(&control, 0);
    let link = control.create(json!({"url": "https://example.com/live"}));
    let changes = stream.next_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["code"], link["code"]);
    assert_eq!(changes[0]["record"]["target"], "https://example.com/live");
    assert_eq!(changes[0]["record"]["redirect"], 302);
    let first_seq = changes[0]["seq"].as_u64().unwrap();
    let metrics = control.request("GET", "/metrics", None, None);
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("control_publish_lag_seconds_count"), "{text}");
    assert!(text.contains("control_stream_subscribers 1"), "{text}");

    let code = link["code"].as_str().unwrap();
    let deleted = control.request(
        "DELETE",
        &format!("/api/v1/links/{code}"),
        Some(&control.token),
        None,
    );
    assert_eq!(deleted.status, 204);
    let changes = stream.next_changes();
    assert_eq!(changes[0]["code"], code);
    assert!(changes[0]["record"].is_null(), "a delete is a tombstone");

    // A new subscriber resuming after the first change sees only the delete.
    let mut resumed = Subscription::open(&control, first_seq);
    let changes = resumed.next_changes();
    assert_eq!(changes.len(), 1);
    assert!(changes[0]["seq"].as_u64().unwrap() > first_seq);
    assert!(changes[0]["record"].is_null());
}

#[test]
fn far_behind_subscribers_are_sent_to_a_snapshot() {
    let control = start_with(&[
        ("SHORTLINE_CHANGE_LOG_KEEP", "0"),
        ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
        ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
    ]);
    let links: Vec<Value> = (0..5)
        .map(|i| control.create(json!({"url": format!("https://example.com/{i}")})))
        .collect();
    // Wait until a snapshot covers all five and the log is pruned: on a
    // slow machine a snapshot may come between two creates first.
    let fetch = |seq: u64| {
        let response = internal_get(&control, &format!("/internal/v1/snapshots/{seq}"));
        assert_eq!(response.status().as_u16(), 200);
        let bytes = response.into_body().read_to_vec().unwrap();
        shortline_store::Snapshot::from_bytes(bytes).expect("a valid snapshot")
    };
    let holds_all = |snapshot: &shortline_store::Snapshot| {
        links.iter().all(|link| {
            snapshot
                .get(link["code"].as_str().unwrap().as_bytes())
                .is_some_and(|found| found.target_str() == link["url"].as_str())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let mut stream = Subscription::open(&control, 0);
        // An announcement of the newest snapshot may come first.
        let messages = [stream.next(), stream.next()];
        if let Some(message) = messages
            .iter()
            .find(|m| m["kind"] == "snapshot" && m["required"] == true)
        {
            let seq = message["seq"].as_u64().unwrap();
            let snapshot = fetch(seq);
            assert_eq!(snapshot.sequence().0, seq);
            if holds_all(&snapshot) {
                break;
            }
            seen.push(seq);
        }
        assert!(
            Instant::now() < deadline,
            "never told to load a snapshot with all five links: {messages:?}, required snapshots seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing = internal_get(&control, "/internal/v1/snapshots/999999");
    assert_eq!(missing.status().as_u16(), 404);
}
