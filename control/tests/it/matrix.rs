//! The auth matrix over every operation of the OpenAPI document: no key,
//! a bad key, a user key on admin routes, a user on another owner's link,
//! the owner, and an admin. An operation missing from the table fails the
//! test, so a new endpoint cannot ship without its access rule.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::{Control, start};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// No key needed.
    Public,
    /// Any key; acts on the caller's own links.
    AnyKey,
    /// Any key, but only the link's owner (or an admin) sees it: others get 404.
    Owner,
    /// Admin keys only: user keys get 403.
    Admin,
}

const TABLE: &[(&str, &str, Rule)] = &[
    ("post", "/api/v1/links", Rule::AnyKey),
    ("get", "/api/v1/links", Rule::AnyKey),
    ("post", "/api/v1/links/batch", Rule::AnyKey),
    ("get", "/api/v1/links/{code}", Rule::Owner),
    ("patch", "/api/v1/links/{code}", Rule::Owner),
    ("delete", "/api/v1/links/{code}", Rule::Owner),
    ("get", "/api/v1/links/{code}/stats", Rule::Owner),
    ("get", "/api/v1/links/{code}/qr", Rule::Owner),
    ("get", "/api/v1/links/{code}/history", Rule::Public),
    ("post", "/api/v1/links/{code}/report", Rule::Public),
    ("get", "/api/v1/stats/top", Rule::Admin),
    ("post", "/api/v1/keys", Rule::Admin),
    ("get", "/api/v1/keys", Rule::Admin),
    ("delete", "/api/v1/keys/{id}", Rule::Admin),
    ("get", "/api/v1/blocklist", Rule::Admin),
    ("get", "/api/v1/blocklist/{domain}", Rule::Admin),
    ("put", "/api/v1/blocklist/{domain}", Rule::Admin),
    ("delete", "/api/v1/blocklist/{domain}", Rule::Admin),
    ("get", "/api/v1/reports", Rule::Admin),
    ("post", "/api/v1/reports/{id}/resolve", Rule::Admin),
    ("get", "/api/v1/backup", Rule::Admin),
    ("post", "/api/v1/domains", Rule::Admin),
    ("get", "/api/v1/domains", Rule::Admin),
    ("get", "/api/v1/domains/{name}", Rule::Admin),
    ("patch", "/api/v1/domains/{name}", Rule::Admin),
    ("delete", "/api/v1/domains/{name}", Rule::Admin),
    ("post", "/api/v1/webhooks", Rule::AnyKey),
    ("get", "/api/v1/webhooks", Rule::AnyKey),
    ("get", "/api/v1/webhooks/{id}", Rule::Owner),
    ("patch", "/api/v1/webhooks/{id}", Rule::Owner),
    ("delete", "/api/v1/webhooks/{id}", Rule::Owner),
    ("get", "/api/v1/webhooks/{id}/deliveries", Rule::Owner),
    ("get", "/api/v1", Rule::Public),
    ("get", "/healthz", Rule::Public),
    ("get", "/readyz", Rule::Public),
];

fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/api/v1/links") => Some(json!({"url": "https://matrix.example/"})),
        ("post", "/api/v1/links/batch") => {
            Some(json!({"links": [{"url": "https://matrix.example/b"}]}))
        }
        ("post", "/api/v1/domains") => Some(json!({"name": "matrix-new.example"})),
        ("patch", "/api/v1/domains/{name}") => Some(json!({"hsts_max_age": 60})),
        ("post", "/api/v1/webhooks") => Some(WEBHOOK.clone()),
        ("patch", "/api/v1/webhooks/{id}") => Some(json!({"events": ["link.deleted"]})),
        ("patch", _) => Some(json!({"title": "changed"})),
        ("post", "/api/v1/keys") => Some(json!({"name": "k", "role": "user"})),
        ("post", "/api/v1/links/{code}/report") => Some(json!({"category": "spam"})),
        ("post", "/api/v1/reports/{id}/resolve") => Some(json!({"action": "dismiss"})),
        ("put", _) => Some(json!({"reason": "matrix"})),
        _ => None,
    }
}

/// A subscription to a public address (a literal: no resolver needed).
static WEBHOOK: std::sync::LazyLock<Value> = std::sync::LazyLock::new(
    || json!({"url": "https://93.184.215.14/hook", "events": ["link.created"]}),
);

/// Calls `template` on `subject`: a link's code, or for a webhook's
/// routes a webhook's id.
fn call(
    control: &Control,
    method: &str,
    template: &str,
    subject: &str,
    token: Option<&str>,
) -> u16 {
    let path = if template.starts_with("/api/v1/webhooks/") {
        template.replace("{id}", subject)
    } else {
        template.to_owned()
    };
    let code = subject;
    let path = path
        .replace("{code}", code)
        .replace("{id}", "key_or_report_that_is_absent")
        .replace("{domain}", "matrix.example")
        .replace("{name}", "matrix.example");
    let body = body_for(method, template);
    control
        .request(&method.to_uppercase(), &path, token, body.as_ref())
        .status
}

#[test]
fn every_operation_enforces_its_access_rule() {
    let control = start();
    let document = control.get("/api/v1/openapi.json").body;
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.clone(), path.clone()));
        }
    }
    let table: BTreeSet<(String, String)> = TABLE
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        operations, table,
        "the table must list every documented operation"
    );

    let alice = control.new_key("alice", "user");
    let bob = control.new_key("bob", "user");
    let admin = control.token.clone();
    for (method, template, rule) in TABLE {
        // What the operation acts on, owned by alice: a link, or a webhook.
        let fresh = || {
            let (path, body, field) = if template.starts_with("/api/v1/webhooks/") {
                ("/api/v1/webhooks", WEBHOOK.clone(), "id")
            } else {
                (
                    "/api/v1/links",
                    json!({"url": "https://alice.example/"}),
                    "code",
                )
            };
            let made = control.request("POST", path, Some(&alice), Some(&body));
            assert_eq!(made.status, 201, "{made:?}");
            made.body[field].as_str().unwrap().to_owned()
        };
        let what = format!("{method} {template}");
        let secured = document["paths"][template][method]
            .get("security")
            .is_some();
        assert_eq!(
            secured,
            *rule != Rule::Public,
            "{what}: security in the document"
        );
        if *rule == Rule::Public {
            let status = call(&control, method, template, &fresh(), None);
            assert!(status < 400, "{what} without a key: {status}");
            continue;
        }
        let code = fresh();
        assert_eq!(
            call(&control, method, template, &code, None),
            401,
            "{what} without a key"
        );
        assert_eq!(
            call(
                &control,
                method,
                template,
                &code,
                Some("sl_this_key_does_not_exist_000")
            ),
            401,
            "{what} with a bad key"
        );
        match rule {
            Rule::Admin => {
                assert_eq!(
                    call(&control, method, template, &code, Some(&alice)),
                    403,
                    "{what} as a user"
                );
            }
            Rule::Owner => {
                assert_eq!(
                    call(&control, method, template, &code, Some(&bob)),
                    404,
                    "{what} as another user"
                );
                let status = call(&control, method, template, &code, Some(&alice));
                assert!(
                    (200..300).contains(&status),
                    "{what} as the owner: {status}"
                );
            }
            Rule::AnyKey => {
                let status = call(&control, method, template, &code, Some(&bob));
                assert!((200..300).contains(&status), "{what} as a user: {status}");
            }
            Rule::Public => unreachable!(),
        }
        let status = call(&control, method, template, &fresh(), Some(&admin));
        // On FoundationDB the online backup is refused: fdbbackup does it.
        let refused_backup = crate::fdb_cluster().is_some() && *template == "/api/v1/backup";
        assert!(
            (200..300).contains(&status) || status == 404 || (refused_backup && status == 409),
            "{what} as an admin: {status}"
        );
    }
}
