//! The auth matrix: no key, bad key, user on another owner's link, admin.

use serde_json::json;

use crate::{assert_problem, start};

#[test]
fn every_route_needs_a_key() {
    let control = start();
    let routes = [
        ("POST", "/api/v1/links"),
        ("GET", "/api/v1/links"),
        ("POST", "/api/v1/links/batch"),
        ("GET", "/api/v1/links/abc"),
        ("PATCH", "/api/v1/links/abc"),
        ("DELETE", "/api/v1/links/abc"),
        ("POST", "/api/v1/keys"),
        ("GET", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/key_x"),
    ];
    let body = json!({"url": "https://example.com/"});
    for (method, path) in routes {
        let with_body = matches!(method, "POST" | "PATCH").then_some(&body);
        let none = control.request(method, path, None, with_body);
        assert_problem(&none, 401, None);
        assert_eq!(
            none.header("www-authenticate"),
            Some("Bearer"),
            "{method} {path}"
        );
        let bad = control.request(
            method,
            path,
            Some("sl_not_a_real_key_at_all_00000"),
            with_body,
        );
        assert_problem(&bad, 401, None);
    }
}

#[test]
fn users_see_only_their_own_links_and_no_admin_routes() {
    let control = start();
    let alice = control.new_key("alice", "user");
    let bob = control.new_key("bob", "user");
    let made = control.request(
        "POST",
        "/api/v1/links",
        Some(&alice),
        Some(&json!({"url": "https://alice.example/"})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(made.body["owner"], "alice");
    let code = made.body["code"].as_str().unwrap();
    let path = format!("/api/v1/links/{code}");

    // Bob cannot see, change or delete Alice's link: it is not found.
    assert_problem(&control.request("GET", &path, Some(&bob), None), 404, None);
    assert_problem(
        &control.request("PATCH", &path, Some(&bob), Some(&json!({"title": "mine"}))),
        404,
        None,
    );
    assert_problem(
        &control.request("DELETE", &path, Some(&bob), None),
        404,
        None,
    );
    let bobs_list = control.request("GET", "/api/v1/links", Some(&bob), None);
    assert_eq!(bobs_list.body["items"].as_array().unwrap().len(), 0);
    assert_problem(
        &control.request("GET", "/api/v1/links?owner=alice", Some(&bob), None),
        403,
        None,
    );

    // Alice can; so can the admin, who also sees every owner's links.
    assert_eq!(
        control.request("GET", &path, Some(&alice), None).status,
        200
    );
    assert_eq!(
        control
            .request("PATCH", &path, Some(&alice), Some(&json!({"title": "t"})))
            .status,
        200
    );
    assert_eq!(control.get(&path).status, 200);
    let admin_list = control.get("/api/v1/links?owner=alice");
    assert_eq!(admin_list.body["items"].as_array().unwrap().len(), 1);

    // Users have no key management.
    for (method, route) in [
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/key_x"),
    ] {
        let body = json!({"name": "x", "role": "admin"});
        let answer = control.request(
            method,
            route,
            Some(&alice),
            (method == "POST").then_some(&body),
        );
        assert_problem(&answer, 403, None);
    }
}

#[test]
fn keys_are_listed_without_tokens_and_deletion_revokes() {
    let control = start();
    let token = control.new_key("carol", "user");
    let keys = control.get("/api/v1/keys");
    assert_eq!(keys.status, 200);
    let list = keys.body.as_array().unwrap();
    assert!(
        list.iter().all(|k| k.get("token").is_none()),
        "tokens are never listed"
    );
    let carol = list.iter().find(|k| k["name"] == "carol").unwrap();
    let id = carol["id"].as_str().unwrap();
    assert_eq!(
        control
            .request("GET", "/api/v1/links", Some(&token), None)
            .status,
        200
    );
    let deleted = control.request(
        "DELETE",
        &format!("/api/v1/keys/{id}"),
        Some(&control.token),
        None,
    );
    assert_eq!(deleted.status, 204);
    assert_problem(
        &control.request("GET", "/api/v1/links", Some(&token), None),
        401,
        None,
    );
    // Only hashes are on disk: the token's text is nowhere in the data directory.
    for entry in std::fs::read_dir(&control.dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let needle = token.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "token stored in {}",
                path.display()
            );
        }
    }
    assert_problem(
        &control.post("/api/v1/keys", json!({"name": "", "role": "user"})),
        422,
        Some("name"),
    );
    assert_problem(
        &control.post("/api/v1/keys", json!({"name": "x", "role": "root"})),
        422,
        Some("role"),
    );
}
