//! SIGKILL the control plane while clients create; after restart every
//! acknowledged link exists exactly as acknowledged. The embedded store is
//! killed in each of its states: with writes only in its redo log (no
//! checkpoint for ten minutes), and checkpointing after every write (kills
//! land in the background fold into the store file).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{agent, start_in};

#[test]
fn acknowledged_creates_survive_sigkill() {
    creates_survive_sigkill(&[], Shows::Nothing);
}

#[test]
fn acknowledged_creates_survive_sigkill_with_only_the_redo_log() {
    if shortline_common::testing::embedded_only("the redo log") {
        return;
    }
    creates_survive_sigkill(
        &[("SHORTLINE_STORE_CHECKPOINT_MS", "600000")],
        Shows::Replay,
    );
}

#[test]
fn acknowledged_creates_survive_sigkill_during_checkpoints() {
    if shortline_common::testing::embedded_only("store checkpoints") {
        return;
    }
    creates_survive_sigkill(
        &[("SHORTLINE_STORE_CHECKPOINT_MS", "0")],
        Shows::Checkpoints,
    );
}

/// What a round must show besides the acknowledged links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shows {
    Nothing,
    /// The restart replayed the redo log.
    Replay,
    /// Checkpoints ran before the kill.
    Checkpoints,
}

/// Three rounds of: start, create from eight clients, SIGKILL mid-load,
/// restart and check every acknowledged link.
fn creates_survive_sigkill(env: &[(&str, &str)], shows: Shows) {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut control = start_in(dir.path(), env);
        let acknowledged: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let url = control.url("/api/v1/links");
        let token = control.token.clone();
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let acknowledged = Arc::clone(&acknowledged);
                let stop = Arc::clone(&stop);
                let url = url.clone();
                let token = token.clone();
                std::thread::spawn(move || {
                    let agent = agent();
                    let mut i = 0u32;
                    // Bounded: at most 2000 requests per client.
                    while !stop.load(Ordering::Relaxed) && i < 2000 {
                        i += 1;
                        let body = json!({"url": format!("https://example.com/{round}/{c}/{i}"), "tags": [format!("r{round}")]});
                        let Ok(mut response) = agent
                            .post(&url)
                            .header("Authorization", &format!("Bearer {token}"))
                            .send_json(&body)
                        else {
                            return; // the server died mid-request: not acknowledged
                        };
                        if response.status().as_u16() == 201
                            && let Ok(link) = response.body_mut().read_json::<Value>() {
                                acknowledged.lock().unwrap().push(link);
                            }
                    }
                })
            })
            .collect();
        // Kill mid-load: once some creates are acknowledged, however slow
        // the machine (the clients are still sending).
        let deadline = Instant::now() + Duration::from_secs(120);
        while acknowledged.lock().unwrap().len() < 50 {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} creates acknowledged in two minutes",
                acknowledged.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if shows == Shows::Checkpoints {
            // The start's checkpoint and at least one per write since.
            assert!(control.metric("control_store_checkpoints_total") > 10.0);
        }
        control.kill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        let acknowledged = acknowledged.lock().unwrap().clone();
        assert!(
            !acknowledged.is_empty(),
            "round {round}: some creates were acknowledged"
        );

        let control = start_in(dir.path(), env);
        if shows == Shows::Replay {
            assert!(
                control.metric("control_store_log_replayed_total") > 0.0,
                "round {round}: the restart replayed the redo log"
            );
        }
        for link in &acknowledged {
            let code = link["code"].as_str().unwrap();
            let answer = control.get(&format!("/api/v1/links/{code}"));
            assert_eq!(
                answer.status, 200,
                "round {round}: acknowledged {code} lost"
            );
            assert_eq!(&answer.body, link, "round {round}: {code} changed");
        }
        let mut codes: Vec<&str> = acknowledged
            .iter()
            .map(|l| l["code"].as_str().unwrap())
            .collect();
        codes.sort_unstable();
        let before = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), before, "two acknowledged links share a code");
    }
}
