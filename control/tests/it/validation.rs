//! Every validation refusal is a 422 problem naming the field and the reason.

use serde_json::json;

use crate::{assert_problem, start_with};

#[test]
fn bad_targets_are_refused() {
    let control = start_with(&[
        ("SHORTLINE_PUBLIC_URL", "https://sho.rt"),
        ("SHORTLINE_SHORT_DOMAINS", "s.example"),
        ("SHORTLINE_BLOCKED_DOMAINS", "evil.example"),
    ]);
    let cases: &[(&str, &str)] = &[
        ("javascript:alert(1)", "scheme"),
        ("data:text/html;base64,PHNjcmlwdD4=", "scheme"),
        ("vbscript:msgbox", "scheme"),
        ("ftp://example.com/file", "scheme"),
        ("https://example.com/\r\nSet-Cookie: a=b", "control"),
        ("https://example.com/\u{0}", "control"),
        ("https://example.com/\u{7}", "control"),
        ("https://user:pass@example.com/", "credentials"),
        ("https://example.com@evil.example/", "credentials"),
        ("https://sho.rt/abc", "shortener"),
        ("https://www.s.example/abc", "shortener"),
        ("https://evil.example/", "blocked"),
        ("https://login.evil.example/", "blocked"),
        ("example.com/page", "absolute"),
        ("//example.com/page", "absolute"),
        ("/page", "absolute"),
        ("", "required"),
        ("https://exa mple.com", "whitespace"),
        ("http://[::1", "parse"),
        // Percent-escapes in the host are undone before the blocklist looks.
        ("https://%65vil.example/", "blocked"),
        ("https://EVIL.example./", "blocked"),
        // IDN homographs: Cyrillic letters posing as Latin ones.
        ("https://\u{430}pple.com/", "homograph"),
        (
            "https://\u{430}\u{440}\u{440}\u{4cf}\u{435}.com/",
            "homograph",
        ),
        ("https://xn--80ak6aa92e.com/", "homograph"),
        ("https://www.p\u{430}ypal.com/signin", "homograph"),
        ("mailto:victim@example.com", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https://example.com/\u{85}", "control"),
        ("https://example.com/\u{202e}gnp.exe", "control"),
    ];
    for (url, reason) in cases {
        let answer = control.post("/api/v1/links", json!({ "url": url }));
        assert_problem(&answer, 422, Some("url"));
        let detail = answer.body["detail"].as_str().unwrap();
        assert!(
            detail.contains(reason),
            "{url:?}: {detail:?} should mention {reason:?}"
        );
    }
    let long = format!("https://example.com/{}", "a".repeat(10 * 1024));
    let answer = control.post("/api/v1/links", json!({ "url": long }));
    assert_problem(&answer, 422, Some("url"));

    // IDN hosts are stored in punycode.
    let idn = control.create(json!({"url": "https://bücher.example/straße"}));
    assert_eq!(idn["url"], "https://xn--bcher-kva.example/stra%C3%9Fe");
    // A patch is validated the same way.
    let path = format!("/api/v1/links/{}", idn["code"].as_str().unwrap());
    let patched = control.request(
        "PATCH",
        &path,
        Some(&control.token),
        Some(&json!({"url": "javascript:x"})),
    );
    assert_problem(&patched, 422, Some("url"));
}
