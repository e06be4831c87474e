//! The auth matrix over every operation of the OpenAPI document, for keys
//! and for signed-in browser sessions alike: no credentials, a bad key, a
//! member on admin routes, a member on another owner's link, the owner, and
//! an admin; and every unsafe request of a session without its CSRF token.
//! An operation missing from the table fails the test, so a new endpoint
//! cannot ship without its access rule.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::accounts::{Browser, sign_in, sign_up};
use crate::{Control, start_with};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// No key needed.
    Public,
    /// No key needed; the body decides, and the one sent here is answered
    /// with this status whoever sends it.
    Open(u16),
    /// Any key; acts on the caller's own links.
    AnyKey,
    /// Any key, but only the link's owner (or an admin) sees it: others get 404.
    Owner,
    /// Any key; acts on the caller's own things, so an id that is not
    /// theirs (here one that does not exist) is 404 for everyone.
    Own,
    /// Any key; the body sent here is refused with this status.
    KeyBody(u16),
    /// Admin keys only: user keys get 403.
    Admin,
}

/// Who calls: nobody, a key, or a browser session (with or without its
/// CSRF token).
#[derive(Debug, Clone)]
enum Caller {
    Nobody,
    Key(String),
    Session(Browser, bool),
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
    ("post", "/api/v1/auth/login", Rule::Open(401)),
    ("post", "/api/v1/auth/redeem", Rule::Open(422)),
    ("post", "/api/v1/auth/logout", Rule::AnyKey),
    ("get", "/api/v1/auth/session", Rule::AnyKey),
    ("get", "/api/v1/auth/sessions", Rule::AnyKey),
    ("delete", "/api/v1/auth/sessions/{id}", Rule::Own),
    ("post", "/api/v1/auth/password", Rule::KeyBody(422)),
    ("post", "/api/v1/users", Rule::Admin),
    ("get", "/api/v1/users", Rule::Admin),
    ("get", "/api/v1/users/{id}", Rule::Admin),
    ("patch", "/api/v1/users/{id}", Rule::Admin),
    ("delete", "/api/v1/users/{id}", Rule::Admin),
    ("post", "/api/v1/users/{id}/reset", Rule::Admin),
    ("delete", "/api/v1/users/{id}/sessions", Rule::Admin),
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
        ("post", "/api/v1/domains") => {
            static MADE: AtomicUsize = AtomicUsize::new(0);
            let n = MADE.fetch_add(1, Ordering::Relaxed);
            Some(json!({"name": format!("matrix-new{n}.example")}))
        }
        ("patch", "/api/v1/domains/{name}") => Some(json!({"hsts_max_age": 60})),
        ("post", "/api/v1/webhooks") => Some(WEBHOOK.clone()),
        ("patch", "/api/v1/webhooks/{id}") => Some(json!({"events": ["link.deleted"]})),
        ("patch", "/api/v1/users/{id}") => Some(json!({"disabled": false})),
        ("post", "/api/v1/users") => {
            static MADE: AtomicUsize = AtomicUsize::new(0);
            let n = MADE.fetch_add(1, Ordering::Relaxed);
            Some(json!({"email": format!("new{n}@matrix.example"), "role": "member"}))
        }
        ("post", "/api/v1/auth/login") => {
            Some(json!({"email": "nobody@matrix.example", "password": "not a password!"}))
        }
        ("post", "/api/v1/auth/redeem") => {
            Some(json!({"token": "inv_never_issued", "password": "a long enough password"}))
        }
        ("post", "/api/v1/auth/password") => Some(
            json!({"current_password": "not the password", "new_password": "a longer new password"}),
        ),
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

/// Calls `template` on `subject` as `caller`: a link's code, or for a
/// webhook's routes a webhook's id.
fn call(control: &Control, method: &str, template: &str, subject: &str, caller: &Caller) -> u16 {
    let path = if template.starts_with("/api/v1/webhooks/") {
        template.replace("{id}", subject)
    } else {
        template.to_owned()
    };
    let path = path
        .replace("{code}", subject)
        .replace("{id}", "key_or_report_that_is_absent")
        .replace("{domain}", "matrix.example")
        .replace("{name}", "matrix.example");
    let body = body_for(method, template);
    let method = method.to_uppercase();
    match caller {
        Caller::Nobody => control.request(&method, &path, None, body.as_ref()),
        Caller::Key(token) => control.request(&method, &path, Some(token), body.as_ref()),
        Caller::Session(browser, csrf) => {
            browser.request(control, &method, &path, body.as_ref(), *csrf)
        }
    }
    .status
}

/// A member, a second member and an admin, each with a key of their own
/// and a session signed in afresh for every operation (an operation may
/// end its session).
struct People {
    alice_key: String,
    bob_key: String,
    admin_key: String,
}

impl People {
    fn new(control: &Control) -> Self {
        let key = |user: &str, name: &str| {
            let made = control.post("/api/v1/keys", json!({"name": name, "user": user}));
            assert_eq!(made.status, 201, "{made:?}");
            made.body["token"].as_str().unwrap().to_owned()
        };
        let alice = sign_up(control, "alice@matrix.example", "member");
        let bob = sign_up(control, "bob@matrix.example", "member");
        sign_up(control, "admin@matrix.example", "admin");
        Self {
            alice_key: key(&alice, "alice"),
            bob_key: key(&bob, "bob"),
            admin_key: control.token.clone(),
        }
    }

    /// Each person twice over: by key, then in a session with its token.
    fn callers(&self, control: &Control) -> [(Caller, Caller, Caller); 2] {
        let session = |email: &str| Caller::Session(sign_in(control, email), true);
        [
            (
                Caller::Key(self.alice_key.clone()),
                Caller::Key(self.bob_key.clone()),
                Caller::Key(self.admin_key.clone()),
            ),
            (
                session("alice@matrix.example"),
                session("bob@matrix.example"),
                session("admin@matrix.example"),
            ),
        ]
    }
}

#[test]
fn every_operation_enforces_its_access_rule() {
    // Sign-ins are many here; their per-address limit is tested apart.
    let control = start_with(&[("SHORTLINE_RATE_LIMIT_LOGIN_PER_MINUTE", "100000")]);
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

    let people = People::new(&control);
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
            let made = control.request("POST", path, Some(&people.alice_key), Some(&body));
            assert_eq!(made.status, 201, "{made:?}");
            made.body[field].as_str().unwrap().to_owned()
        };
        let what = format!("{method} {template}");
        let secured = document["paths"][template][method]
            .get("security")
            .is_some();
        assert_eq!(
            secured,
            !matches!(rule, Rule::Public | Rule::Open(_)),
            "{what}: security in the document"
        );
        match rule {
            Rule::Public => {
                let status = call(&control, method, template, &fresh(), &Caller::Nobody);
                assert!(status < 400, "{what} without a key: {status}");
                continue;
            }
            Rule::Open(expected) => {
                let status = call(&control, method, template, &fresh(), &Caller::Nobody);
                assert_eq!(status, *expected, "{what} without a key");
                continue;
            }
            _ => {}
        }
        let code = fresh();
        assert_eq!(
            call(&control, method, template, &code, &Caller::Nobody),
            401,
            "{what} without a key"
        );
        assert_eq!(
            call(
                &control,
                method,
                template,
                &code,
                &Caller::Key("sl_this_key_does_not_exist_000".into())
            ),
            401,
            "{what} with a bad key"
        );
        assert_eq!(
            call(
                &control,
                method,
                template,
                &code,
                &Caller::Session(
                    Browser {
                        cookie: "shortline_session=sls_never_issued".into(),
                        csrf: "csrf_never_issued".into(),
                    },
                    true
                )
            ),
            401,
            "{what} with a session that does not exist"
        );
        for (alice, bob, admin) in people.callers(&control) {
            let how = match &alice {
                Caller::Session(..) => "in a session",
                _ => "with a key",
            };
            if let Caller::Session(browser, _) = &alice
                && !matches!(*method, "get" | "head")
            {
                let without = Caller::Session(browser.clone(), false);
                assert_eq!(
                    call(&control, method, template, &fresh(), &without),
                    403,
                    "{what} in a session without its CSRF token"
                );
            }
            let code = fresh();
            match rule {
                Rule::Admin => {
                    assert_eq!(
                        call(&control, method, template, &code, &alice),
                        403,
                        "{what} as a member {how}"
                    );
                }
                Rule::Owner => {
                    assert_eq!(
                        call(&control, method, template, &code, &bob),
                        404,
                        "{what} as another member {how}"
                    );
                    let status = call(&control, method, template, &code, &alice);
                    assert!(
                        (200..300).contains(&status),
                        "{what} as the owner {how}: {status}"
                    );
                }
                Rule::AnyKey => {
                    let status = call(&control, method, template, &code, &bob);
                    assert!(
                        (200..300).contains(&status),
                        "{what} as a member {how}: {status}"
                    );
                }
                Rule::Own => {
                    for caller in [&alice, &bob, &admin] {
                        assert_eq!(
                            call(&control, method, template, &code, caller),
                            404,
                            "{what} on what is not the caller's {how}"
                        );
                    }
                    continue;
                }
                Rule::KeyBody(expected) => {
                    for caller in [&alice, &bob, &admin] {
                        assert_eq!(
                            call(&control, method, template, &code, caller),
                            *expected,
                            "{what} {how}"
                        );
                    }
                    continue;
                }
                Rule::Public | Rule::Open(_) => unreachable!(),
            }
            let status = call(&control, method, template, &fresh(), &admin);
            // On FoundationDB the online backup is refused: fdbbackup does it.
            let refused_backup = crate::fdb_cluster().is_some() && *template == "/api/v1/backup";
            assert!(
                (200..300).contains(&status) || status == 404 || (refused_backup && status == 409),
                "{what} as an admin {how}: {status}"
            );
        }
    }
}
