//! A link's destination history: every change of its target recorded in
//! the change's transaction, open to anyone (the key behind a change only
//! to the owner and admins), and a locked target only an admin can change.

use serde_json::{Value, json};

use crate::start;

#[test]
fn every_change_of_target_is_public_and_a_locked_target_is_the_admins() {
    let control = start();
    let ann = control.new_key("ann", "user");
    let bob = control.new_key("bob", "user");
    let as_ann = |method: &str, path: &str, body: Option<Value>| {
        control.request(method, path, Some(&ann), body.as_ref())
    };
    let made = as_ann(
        "POST",
        "/api/v1/links",
        Some(json!({"url": "https://harmless.example/", "alias": "spread"})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(made.body["target_locked"], false);
    assert_eq!(made.body["target_changed_at"], Value::Null);

    let never = control.request("GET", "/api/v1/links/spread/history", None, None);
    assert_eq!(never.status, 200, "{never:?}");
    assert_eq!(never.body["url"], "https://harmless.example/");
    assert_eq!(never.body["changes"], json!([]));
    assert_eq!(never.body["target_changed_at"], Value::Null);

    // A patch that leaves the target as it is records nothing.
    let same = as_ann(
        "PATCH",
        "/api/v1/links/spread",
        Some(json!({"url": "https://harmless.example/", "title": "t"})),
    );
    assert_eq!(same.status, 200, "{same:?}");
    assert_eq!(same.body["target_changed_at"], Value::Null);
    for target in ["https://switch.example/1", "https://switch.example/2"] {
        let changed = as_ann(
            "PATCH",
            "/api/v1/links/spread",
            Some(json!({"url": target})),
        );
        assert_eq!(changed.status, 200, "{changed:?}");
        assert!(changed.body["target_changed_at"].is_string());
    }

    // Anyone sees where it pointed, oldest first, without who changed it.
    let public = control.request("GET", "/api/v1/links/spread/history", None, None);
    assert_eq!(public.status, 200, "{public:?}");
    let changes = public.body["changes"].as_array().unwrap();
    let hops: Vec<(u64, &str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["n"].as_u64().unwrap(),
                c["from"].as_str().unwrap(),
                c["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        [
            (1, "https://harmless.example/", "https://switch.example/1"),
            (2, "https://switch.example/1", "https://switch.example/2"),
        ]
    );
    assert!(changes.iter().all(|c| c.get("by").is_none()), "{public:?}");
    assert_eq!(public.body["url"], "https://switch.example/2");
    assert_eq!(
        public.body["target_changed_at"], changes[1]["at"],
        "the last change's time"
    );
    // Another user is the public; the owner and an admin see the key.
    let other = control.request("GET", "/api/v1/links/spread/history", Some(&bob), None);
    assert!(other.body["changes"][0].get("by").is_none(), "{other:?}");
    let own = as_ann("GET", "/api/v1/links/spread/history", None);
    assert_eq!(own.body["changes"][0]["by"], "ann");
    assert_eq!(
        control.get("/api/v1/links/spread/history").body["changes"][1]["by"],
        "ann"
    );

    // Pages.
    let first = control.get("/api/v1/links/spread/history?limit=1");
    assert_eq!(first.body["changes"].as_array().unwrap().len(), 1);
    assert_eq!(first.body["next_after"], 1);
    let second = control.get("/api/v1/links/spread/history?limit=1&after=1");
    assert_eq!(second.body["changes"][0]["n"], 2);
    assert_eq!(second.body["next_after"], Value::Null);
    assert_eq!(
        control.get("/api/v1/links/spread/history?limit=0").status,
        422
    );
    assert_eq!(
        control
            .request("GET", "/api/v1/links/nothing-here/history", None, None)
            .status,
        404
    );

    // The owner locks the target; then only an admin changes it.
    let locked = as_ann(
        "PATCH",
        "/api/v1/links/spread",
        Some(json!({"target_locked": true})),
    );
    assert_eq!(locked.status, 200, "{locked:?}");
    assert_eq!(locked.body["target_locked"], true);
    let refused = as_ann(
        "PATCH",
        "/api/v1/links/spread",
        Some(json!({"url": "https://switch.example/3"})),
    );
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("target is locked"),
        "{refused:?}"
    );
    let unlock = as_ann(
        "PATCH",
        "/api/v1/links/spread",
        Some(json!({"target_locked": false})),
    );
    assert_eq!(unlock.status, 403, "{unlock:?}");
    // Other fields stay the owner's.
    let titled = as_ann(
        "PATCH",
        "/api/v1/links/spread",
        Some(json!({"title": "still mine"})),
    );
    assert_eq!(titled.status, 200, "{titled:?}");
    let by_admin = control.request(
        "PATCH",
        "/api/v1/links/spread",
        Some(&control.token.clone()),
        Some(&json!({"url": "https://fixed.example/"})),
    );
    assert_eq!(by_admin.status, 200, "{by_admin:?}");
    let history = control.get("/api/v1/links/spread/history");
    assert_eq!(history.body["changes"][2]["to"], "https://fixed.example/");
    assert_eq!(history.body["changes"][2]["by"], "bootstrap admin");
    assert_eq!(history.body["target_locked"], true);

    // The proxies' copy, for their preview pages: their internal token
    // only, the same page, never who made a change.
    let internal = control.internal_token();
    let proxies = control.request(
        "GET",
        "/internal/v1/history/spread?after=1&limit=1",
        Some(&internal),
        None,
    );
    assert_eq!(proxies.status, 200, "{proxies:?}");
    assert_eq!(proxies.body["changes"][0]["n"], 2);
    assert_eq!(proxies.body["next_after"], 2);
    assert!(
        proxies.body["changes"][0].get("by").is_none(),
        "{proxies:?}"
    );
    for token in [None, Some(ann.as_str()), Some(control.token.as_str())] {
        let refused = control.request("GET", "/internal/v1/history/spread", token, None);
        assert_eq!(refused.status, 401, "{refused:?}");
    }
    assert_eq!(
        control
            .request(
                "GET",
                "/internal/v1/history/nothing-here",
                Some(&internal),
                None
            )
            .status,
        404
    );
    assert_eq!(
        control
            .request(
                "GET",
                "/internal/v1/history/spread?limit=x",
                Some(&internal),
                None
            )
            .status,
        422
    );

    // Deleted, the link and its history are gone.
    assert_eq!(as_ann("DELETE", "/api/v1/links/spread", None).status, 204);
    assert_eq!(
        control
            .request("GET", "/api/v1/links/spread/history", None, None)
            .status,
        404
    );
}

/// A link made with its target locked is locked from its first click: the
/// owner cannot retarget it, a batch create locks too, and an admin can.
#[test]
fn a_target_locked_at_creation_is_the_admins_to_change() {
    let control = start();
    let ann = control.new_key("ann", "user");
    let as_ann = |method: &str, path: &str, body: Option<Value>| {
        control.request(method, path, Some(&ann), body.as_ref())
    };
    let made = as_ann(
        "POST",
        "/api/v1/links",
        Some(json!({"url": "https://first.example/", "alias": "fixed", "target_locked": true})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(made.body["target_locked"], true);
    let refused = as_ann(
        "PATCH",
        "/api/v1/links/fixed",
        Some(json!({"url": "https://other.example/"})),
    );
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        control.get("/api/v1/links/fixed").body["url"],
        "https://first.example/"
    );

    let batch = as_ann(
        "POST",
        "/api/v1/links/batch",
        Some(json!({"links": [
            {"url": "https://a.example/", "alias": "locked-a", "target_locked": true},
            {"url": "https://b.example/", "alias": "open-b"},
        ]})),
    );
    assert_eq!(batch.status, 200, "{batch:?}");
    let locks: Vec<&Value> = batch.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["link"]["target_locked"])
        .collect();
    assert_eq!(locks, [&json!(true), &json!(false)]);

    let wrong = as_ann(
        "POST",
        "/api/v1/links",
        Some(json!({"url": "https://x.example/", "target_locked": "yes"})),
    );
    assert_eq!(wrong.status, 422, "{wrong:?}");

    let by_admin = control.request(
        "PATCH",
        "/api/v1/links/fixed",
        Some(&control.token.clone()),
        Some(&json!({"url": "https://fixed.example/"})),
    );
    assert_eq!(by_admin.status, 200, "{by_admin:?}");
    let history = control.get("/api/v1/links/fixed/history");
    assert_eq!(history.body["changes"][0]["to"], "https://fixed.example/");
    assert_eq!(history.body["target_locked"], true);
}
