//! The change stream: changes arrive within milliseconds, a stream resumes
//! from a sequence, a subscriber too far behind is sent to a snapshot, and
//! snapshots are served.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use shortline_store::stream::Manifest;
use shortline_store::{LiveTable, Snapshot};

use crate::{Control, agent, eventually, start_with};

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

/// Control's table as a proxy builds it: the segment list, then each
/// file. `None` when a listed file is gone already (merged meanwhile) or
/// found damaged.
fn fetch_segments(control: &Control) -> Option<(Manifest, LiveTable)> {
    let response = internal_get(control, "/internal/v1/segments");
    assert_eq!(response.status().as_u16(), 200);
    let manifest: Manifest =
        serde_json::from_slice(&response.into_body().read_to_vec().unwrap()).unwrap();
    let open = |file: &str| {
        let response = internal_get(control, &format!("/internal/v1/segments/{file}"));
        // Gone (merged meanwhile), or damaged and being set aside.
        if matches!(response.status().as_u16(), 404 | 503) {
            return None;
        }
        assert_eq!(response.status().as_u16(), 200, "{file}");
        let bytes = response.into_body().read_to_vec().unwrap();
        Some(Snapshot::from_bytes(bytes).expect("a valid segment"))
    };
    let base = open(&manifest.base.file)?;
    let deltas = manifest
        .deltas
        .iter()
        .map(|d| open(&d.file))
        .collect::<Option<Vec<_>>>()?;
    let table = LiveTable::with_deltas(base, deltas).expect("the deltas follow the base");
    Some((manifest, table))
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

    /// Skips heartbeats, snapshot announcements and the short domains'
    /// settings (keyed `.name`) until changes of links arrive.
    fn next_changes(&mut self) -> Vec<Value> {
        loop {
            let message = self.next();
            if message["kind"] == "changes" {
                let links: Vec<Value> = message["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| !c["code"].as_str().unwrap().starts_with('.'))
                    .cloned()
                    .collect();
                if !links.is_empty() {
                    return links;
                }
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
    // Wait until the segments cover all five and the log is pruned: on a
    // slow machine segments may move between two creates first.
    let holds_all = |table: &LiveTable| {
        let view = table.load();
        links.iter().all(|link| {
            view.get(link["code"].as_str().unwrap().as_bytes())
                .is_some_and(|found| found.target_str() == link["url"].as_str())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let mut stream = Subscription::open(&control, 0);
        // An announcement of the newest segments may come first.
        let messages = [stream.next(), stream.next()];
        if let Some(message) = messages
            .iter()
            .find(|m| m["kind"] == "snapshot" && m["required"] == true)
        {
            let seq = message["seq"].as_u64().unwrap();
            if let Some((manifest, table)) = fetch_segments(&control) {
                assert!(manifest.sequence().0 >= seq, "{manifest:?} behind {seq}");
                if holds_all(&table) {
                    break;
                }
            }
            seen.push(seq);
        }
        assert!(
            Instant::now() < deadline,
            "never told to load segments with all five links: {messages:?}, required announcements seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing = internal_get(&control, "/internal/v1/snapshots/999999");
    assert_eq!(missing.status().as_u16(), 404);
}

#[test]
fn segments_follow_the_changes_and_merge() {
    let control = start_with(&[
        ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
        ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
        ("SHORTLINE_SNAPSHOT_DELTAS_MAX", "2"),
        // The deltas merge into a new base once they change four times as
        // many codes as the base holds (eight, over the first base, which
        // holds the default domain's two settings records).
        ("SHORTLINE_SNAPSHOT_MERGE_PERCENT", "400"),
    ]);
    let answers = |code: &str, url: Option<&str>| {
        fetch_segments(&control).is_some_and(|(_, table)| {
            table.load().get(code.as_bytes()).map(|l| l.target_str()) == url.map(Some)
        })
    };
    let mut links = Vec::new();
    for i in 0..10 {
        let url = format!("https://example.com/segment/{i}");
        let code = control.create(json!({ "url": url }))["code"]
            .as_str()
            .unwrap()
            .to_owned();
        // One delta per create: each waits until the segments hold it.
        eventually(60, "the segments to hold the new link", || {
            answers(&code, Some(&url))
        });
        links.push((code, url));
    }
    let steps =
        |step: &str| control.metric(&format!("control_snapshot_steps_total{{step=\"{step}\"}}"));
    assert!(steps("delta") >= 10.0, "a delta per create");
    assert!(
        steps("merge_deltas") >= 1.0,
        "three deltas were merged into one"
    );
    eventually(60, "the deltas to merge into a base", || {
        steps("merge_all") >= 1.0
    });

    // A delete is a tombstone in a delta over the new base; a change, a new record.
    let (gone, gone_url) = links.remove(0);
    let deleted = control.request(
        "DELETE",
        &format!("/api/v1/links/{gone}"),
        Some(&control.token),
        None,
    );
    assert_eq!(deleted.status, 204);
    let (changed, _) = links[0].clone();
    let patched = control.request(
        "PATCH",
        &format!("/api/v1/links/{changed}"),
        Some(&control.token),
        Some(&json!({"url": "https://example.org/changed"})),
    );
    assert_eq!(patched.status, 200);
    links[0].1 = "https://example.org/changed".into();
    eventually(60, "the segments to drop the deleted link", || {
        answers(&gone, None)
    });
    eventually(60, "the segments to hold the change", || {
        answers(&changed, Some("https://example.org/changed"))
    });
    let (manifest, table) = fetch_segments(&control).expect("segments");
    assert!(
        manifest.base.links >= 9 && !manifest.deltas.is_empty(),
        "the delete and the change are deltas over a base that held the link: {manifest:?}"
    );
    let base = table.load().base().clone();
    assert!(
        base.get(gone.as_bytes())
            .is_some_and(|l| l.target_str() == Some(gone_url.as_str())),
        "the base itself is not rewritten for a delete"
    );
    for (code, url) in &links {
        assert!(answers(code, Some(url)), "{code}");
    }

    // Files are asked for by name only.
    for (path, status) in [
        ("/internal/v1/segments/..%2Fstore.redb", 422),
        ("/internal/v1/segments/links-1.snap", 422),
        ("/internal/v1/segments/links-00000000000000999999.snap", 404),
    ] {
        let response = agent()
            .get(&control.url(path))
            .header(
                "Authorization",
                &format!("Bearer {}", control.internal_token()),
            )
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
}

/// A delta damaged in control's folder is set aside when a merge reads it,
/// and the next step writes the changes it held again from the log.
#[test]
fn a_damaged_delta_is_set_aside_and_its_changes_written_again() {
    let control = start_with(&[
        ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
        ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
        ("SHORTLINE_SNAPSHOT_DELTAS_MAX", "2"),
        ("SHORTLINE_SNAPSHOT_MERGE_PERCENT", "1000"),
    ]);
    let answers = |code: &str, url: &str| {
        fetch_segments(&control).is_some_and(|(_, table)| {
            table.load().get(code.as_bytes()).map(|l| l.target_str()) == Some(Some(url))
        })
    };
    let create = |i: usize| {
        let url = format!("https://example.com/damaged-delta/{i}");
        let code = control.create(json!({ "url": url }))["code"]
            .as_str()
            .unwrap()
            .to_owned();
        eventually(60, "the segments to hold the new link", || {
            answers(&code, &url)
        });
        (code, url)
    };
    let mut links = vec![create(0), create(1)];
    // The newest delta gets one byte flipped (a new file, as a disk error
    // would leave it; not a write through a mapping).
    let dir = control.dir.join("snapshots");
    let newest = shortline_store::files::list_deltas(&dir)
        .into_iter()
        .max_by_key(|d| d.seq)
        .expect("a delta");
    let mut bytes = std::fs::read(&newest.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let aside = newest.path.with_extension("new");
    std::fs::write(&aside, &bytes).unwrap();
    std::fs::rename(&aside, &newest.path).unwrap();

    links.push(create(2));
    eventually(60, "the damaged delta to be set aside", || {
        control.metric("control_snapshots_damaged_total") >= 1.0
    });
    for (code, url) in &links {
        eventually(60, "every link in the segments again", || {
            answers(code, url)
        });
    }
    let moved = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".damaged"))
        .count();
    assert_eq!(moved, 1, "the damaged delta is kept aside for inspection");
}
