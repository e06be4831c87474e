//! People's accounts through the real control plane: invitations, sign-in,
//! sessions in cookies with CSRF tokens, lock-out, resets, revocation, and
//! keys that belong to a user.

use serde_json::{Value, json};

use crate::{Answer, Control, assert_problem, start_in, start_with};

pub const PASSWORD: &str = "a long enough password";

/// A signed-in browser: its session cookie and CSRF token.
#[derive(Debug, Clone)]
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
}

impl Browser {
    /// A request in this session; `csrf` says whether to send the token.
    pub fn request(
        &self,
        control: &Control,
        method: &str,
        path: &str,
        body: Option<&Value>,
        csrf: bool,
    ) -> Answer {
        let mut headers = vec![("Cookie", self.cookie.as_str())];
        if csrf {
            headers.push(("X-CSRF-Token", self.csrf.as_str()));
        }
        control.request_with(method, path, &headers, body)
    }
}

/// Makes a user and sets their password with the invitation; their id.
pub fn sign_up(control: &Control, email: &str, role: &str) -> String {
    let made = control.post("/api/v1/users", json!({"email": email, "role": role}));
    assert_eq!(made.status, 201, "{made:?}");
    let token = made.body["invitation"]["token"].as_str().unwrap();
    let redeemed = control.request(
        "POST",
        "/api/v1/auth/redeem",
        None,
        Some(&json!({"token": token, "password": PASSWORD})),
    );
    assert_eq!(redeemed.status, 200, "{redeemed:?}");
    made.body["user"]["id"].as_str().unwrap().to_owned()
}

fn redeem(control: &Control, token: &str, password: &str) -> Answer {
    control.request(
        "POST",
        "/api/v1/auth/redeem",
        None,
        Some(&json!({"token": token, "password": password})),
    )
}

fn login(control: &Control, email: &str, password: &str, extra: &[(&str, &str)]) -> Answer {
    control.request_with(
        "POST",
        "/api/v1/auth/login",
        extra,
        Some(&json!({"email": email, "password": password})),
    )
}

/// Signs in; panics unless it works.
pub fn sign_in(control: &Control, email: &str) -> Browser {
    let answer = login(control, email, PASSWORD, &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    let set = answer.header("set-cookie").expect("a cookie");
    Browser {
        cookie: set.split(';').next().unwrap().to_owned(),
        csrf: answer.body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

#[test]
fn an_invited_member_signs_in_and_acts_through_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut control = start_in(dir.path(), &[]);
    let made = control.post(
        "/api/v1/users",
        json!({"email": " Alice@Example.com ", "role": "member"}),
    );
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(made.body["user"]["email"], "alice@example.com");
    assert_eq!(made.body["user"]["password_set"], false);
    let alice_id = made.body["user"]["id"].as_str().unwrap().to_owned();
    let invitation = made.body["invitation"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(invitation.starts_with("inv_"), "{invitation}");
    assert_problem(
        &control.post(
            "/api/v1/users",
            json!({"email": "alice@example.com", "role": "member"}),
        ),
        409,
        Some("email"),
    );
    assert_problem(
        &control.post(
            "/api/v1/users",
            json!({"email": "not-an-email", "role": "member"}),
        ),
        422,
        Some("email"),
    );

    // No password yet: no sign-in. The invitation sets one, once.
    assert_problem(
        &login(&control, "alice@example.com", PASSWORD, &[]),
        401,
        None,
    );
    assert_problem(
        &redeem(&control, &invitation, "short"),
        422,
        Some("password"),
    );
    let redeemed = redeem(&control, &invitation, PASSWORD);
    assert_eq!(redeemed.status, 200, "{redeemed:?}");
    assert_eq!(redeemed.body["password_set"], true);
    assert_problem(&redeem(&control, &invitation, PASSWORD), 422, Some("token"));

    // Wrong passwords and unknown emails get the same answer.
    let wrong = login(&control, "alice@example.com", "not her password!", &[]);
    let unknown = login(&control, "nobody@example.com", PASSWORD, &[]);
    assert_problem(&wrong, 401, None);
    assert_problem(&unknown, 401, None);
    assert_eq!(wrong.body["detail"], unknown.body["detail"]);

    // The cookie: HttpOnly, SameSite=Strict; Secure when over HTTPS.
    let answer = login(&control, "ALICE@example.com", PASSWORD, &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    let set = answer.header("set-cookie").unwrap().to_owned();
    for part in [
        "shortline_session=sls_",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let https = login(
        &control,
        "alice@example.com",
        PASSWORD,
        &[("X-Forwarded-Proto", "https")],
    );
    assert!(
        https.header("set-cookie").unwrap().contains("; Secure"),
        "{https:?}"
    );
    let browser = Browser {
        cookie: set.split(';').next().unwrap().to_owned(),
        csrf: answer.body["csrf_token"].as_str().unwrap().to_owned(),
    };
    let me = browser.request(&control, "GET", "/api/v1/auth/session", None, false);
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body["kind"], "session");
    assert_eq!(me.body["csrf_token"], browser.csrf.as_str());
    assert_eq!(me.body["owner"], "alice@example.com");
    assert_eq!(me.body["user"]["role"], "member");

    // Unsafe requests need the CSRF token; reads do not.
    let link = json!({"url": "https://example.com/from-the-browser"});
    let refused = browser.request(&control, "POST", "/api/v1/links", Some(&link), false);
    assert_problem(&refused, 403, None);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token"),
        "{refused:?}"
    );
    let forged = Browser {
        csrf: "csrf_forged".into(),
        ..browser.clone()
    };
    assert_problem(
        &forged.request(&control, "POST", "/api/v1/links", Some(&link), true),
        403,
        None,
    );
    let created = browser.request(&control, "POST", "/api/v1/links", Some(&link), true);
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["owner"], "alice@example.com");
    let listed = browser.request(&control, "GET", "/api/v1/links", None, false);
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "{listed:?}"
    );
    assert_problem(
        &browser.request(&control, "GET", "/api/v1/users", None, false),
        403,
        None,
    );

    // A key of hers acts as her.
    assert_problem(
        &control.post(
            "/api/v1/keys",
            json!({"name": "ci", "user": alice_id, "role": "admin"}),
        ),
        422,
        Some("user"),
    );
    let key = control.post(
        "/api/v1/keys",
        json!({"name": "alice-ci", "user": alice_id}),
    );
    assert_eq!(key.status, 201, "{key:?}");
    assert_eq!(key.body["role"], "user");
    assert_eq!(key.body["user_id"], alice_id.as_str());
    let key = key.body["token"].as_str().unwrap().to_owned();
    let by_key = control.request(
        "POST",
        "/api/v1/links",
        Some(&key),
        Some(&json!({"url": "https://example.com/by-key"})),
    );
    assert_eq!(by_key.status, 201, "{by_key:?}");
    assert_eq!(by_key.body["owner"], "alice@example.com");

    // Sessions are listed and ended one by one.
    let second = sign_in(&control, "alice@example.com");
    let sessions = second.request(&control, "GET", "/api/v1/auth/sessions", None, false);
    let sessions = sessions.body.as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let first_id = {
        let me = browser.request(&control, "GET", "/api/v1/auth/sessions", None, false);
        me.body
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["current"] == true)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ended = second.request(
        &control,
        "DELETE",
        &format!("/api/v1/auth/sessions/{first_id}"),
        None,
        true,
    );
    assert_eq!(ended.status, 204, "{ended:?}");
    assert_problem(
        &browser.request(&control, "GET", "/api/v1/links", None, false),
        401,
        None,
    );

    // A session survives a crash of the control plane.
    control.kill();
    let control = start_in(dir.path(), &[]);
    let after = second.request(&control, "GET", "/api/v1/auth/session", None, false);
    assert_eq!(after.status, 200, "{after:?}");

    // Changing the password ends every other session.
    let third = sign_in(&control, "alice@example.com");
    let change = |browser: &Browser, current: &str, new: &str| {
        browser.request(
            &control,
            "POST",
            "/api/v1/auth/password",
            Some(&json!({"current_password": current, "new_password": new})),
            true,
        )
    };
    assert_problem(
        &change(&second, "not the password", "another long password"),
        422,
        Some("current_password"),
    );
    assert_eq!(
        change(&second, PASSWORD, "another long password").status,
        204
    );
    assert_problem(
        &third.request(&control, "GET", "/api/v1/auth/session", None, false),
        401,
        None,
    );
    assert_eq!(
        second
            .request(&control, "GET", "/api/v1/auth/session", None, false)
            .status,
        200
    );
    assert_problem(
        &login(&control, "alice@example.com", PASSWORD, &[]),
        401,
        None,
    );
    assert_eq!(
        login(&control, "alice@example.com", "another long password", &[]).status,
        200
    );

    // An admin's reset: a one-time token that sets a new password and ends
    // every session.
    let reset = control.post(&format!("/api/v1/users/{alice_id}/reset"), json!({}));
    assert_eq!(reset.status, 200, "{reset:?}");
    let token = reset.body["token"].as_str().unwrap();
    assert!(token.starts_with("rst_"), "{reset:?}");
    assert_eq!(redeem(&control, token, PASSWORD).status, 200);
    assert_problem(
        &second.request(&control, "GET", "/api/v1/auth/session", None, false),
        401,
        None,
    );

    // Logging out ends the session and clears the cookie.
    let fourth = sign_in(&control, "alice@example.com");
    let out = fourth.request(&control, "POST", "/api/v1/auth/logout", None, true);
    assert_eq!(out.status, 204, "{out:?}");
    assert!(
        out.header("set-cookie").unwrap().contains("Max-Age=0"),
        "{out:?}"
    );
    assert_problem(
        &fourth.request(&control, "GET", "/api/v1/auth/session", None, false),
        401,
        None,
    );

    // Disabled: no sign-in, no session, no key.
    let fifth = sign_in(&control, "alice@example.com");
    let disabled = control.request(
        "PATCH",
        &format!("/api/v1/users/{alice_id}"),
        Some(&control.token),
        Some(&json!({"disabled": true})),
    );
    assert_eq!(disabled.status, 200, "{disabled:?}");
    assert_problem(
        &fifth.request(&control, "GET", "/api/v1/auth/session", None, false),
        401,
        None,
    );
    assert_problem(
        &control.request("GET", "/api/v1/links", Some(&key), None),
        401,
        None,
    );
    assert_problem(
        &login(&control, "alice@example.com", PASSWORD, &[]),
        403,
        None,
    );
    // Her links stay, owned by her email.
    let hers = control.get("/api/v1/links?owner=alice%40example.com");
    assert_eq!(hers.body["items"].as_array().unwrap().len(), 2, "{hers:?}");
}

#[test]
fn failed_sign_ins_lock_the_account_and_each_address_is_limited() {
    let control = start_with(&[("SHORTLINE_RATE_LIMIT_LOGIN_PER_MINUTE", "1000")]);
    let bob = sign_up(&control, "bob@example.com", "member");
    sign_up(&control, "carol@example.com", "admin");
    for _ in 0..4 {
        assert_problem(
            &login(&control, "bob@example.com", "wrong password!", &[]),
            401,
            None,
        );
    }
    let locked = login(&control, "bob@example.com", "wrong password!", &[]);
    assert_problem(&locked, 429, None);
    assert!(locked.header("retry-after").is_some(), "{locked:?}");
    // Even the right password waits for the lock to end.
    let right = login(&control, "bob@example.com", PASSWORD, &[]);
    assert_problem(&right, 429, None);
    assert!(
        right.body["detail"]
            .as_str()
            .unwrap()
            .contains("too many failed sign-ins"),
        "{right:?}"
    );
    let shown = control.get(&format!("/api/v1/users/{bob}"));
    assert!(shown.body["locked_until"].is_string(), "{shown:?}");
    // Another account is not affected.
    let carol = sign_in(&control, "carol@example.com");
    let users = carol.request(&control, "GET", "/api/v1/users", None, false);
    assert_eq!(
        users.status, 200,
        "an admin's session manages users: {users:?}"
    );
    assert_eq!(users.body.as_array().unwrap().len(), 2);
    // The last enabled admin stays one.
    let carol_id = users
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "carol@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_problem(
        &carol.request(
            &control,
            "PATCH",
            &format!("/api/v1/users/{carol_id}"),
            Some(&json!({"role": "member"})),
            true,
        ),
        409,
        Some("role"),
    );

    let limited = start_with(&[("SHORTLINE_RATE_LIMIT_LOGIN_PER_MINUTE", "3")]);
    for _ in 0..3 {
        assert_problem(&login(&limited, "x@example.com", PASSWORD, &[]), 401, None);
    }
    let over = login(&limited, "x@example.com", PASSWORD, &[]);
    assert_problem(&over, 429, None);
    assert!(over.header("retry-after").is_some());
}
