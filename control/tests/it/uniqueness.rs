//! Many concurrent clients, every strategy and contested aliases: no code is
//! ever handed out twice, and every 201 is readable afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::start;

#[test]
fn concurrent_creates_never_share_a_code() {
    let control = Arc::new(start());
    let created: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let alias_wins: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let strategies = ["counter", "random", "hash", "uuid"];
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let control = Arc::clone(&control);
            let created = Arc::clone(&created);
            let alias_wins = Arc::clone(&alias_wins);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let url = format!("https://example.com/{t}/{i}");
                    let body = if i % 5 == 4 {
                        // Every thread fights for the same few aliases.
                        json!({"url": url, "alias": format!("contested-{}", i / 5)})
                    } else {
                        json!({"url": url, "strategy": strategies[(t + i) % 4]})
                    };
                    let answer = control.post("/api/v1/links", body.clone());
                    match answer.status {
                        201 => {
                            let code = answer.body["code"].as_str().unwrap().to_owned();
                            let previous =
                                created.lock().unwrap().insert(code.clone(), url.clone());
                            assert!(previous.is_none(), "code {code} handed out twice");
                            if let Some(alias) = body.get("alias") {
                                *alias_wins
                                    .lock()
                                    .unwrap()
                                    .entry(alias.as_str().unwrap().to_owned())
                                    .or_default() += 1;
                            }
                        }
                        409 => assert!(body.get("alias").is_some(), "{answer:?}"),
                        other => panic!("unexpected {other}: {answer:?}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let wins = alias_wins.lock().unwrap();
    assert_eq!(wins.len(), 8, "every contested alias was won");
    assert!(
        wins.values().all(|&n| n == 1),
        "each alias won exactly once: {wins:?}"
    );
    let created = created.lock().unwrap();
    assert_eq!(created.len(), 16 * 32 + 8);
    for (code, url) in created.iter() {
        let answer = control.get(&format!("/api/v1/links/{code}"));
        assert_eq!(answer.status, 200, "{code}");
        assert_eq!(answer.body["url"], url.as_str());
    }
}
