//! Targeting rules and splits through the API: stored and shown as given,
//! every target checked like a link's own, limits enforced, and a refusal
//! that names the rule or variant.

use serde_json::{Value, json};

use crate::start;

fn refusal(answer: &crate::Answer) -> (String, String) {
    assert_eq!(answer.status, 422, "{answer:?}");
    let detail = answer.body["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let field = answer.body["field"].as_str().unwrap_or_default().to_owned();
    (field, detail)
}

#[test]
fn rules_and_variants_are_kept_and_shown_as_given() {
    let control = start();
    let made = control.create(json!({
        "url": "https://example.com/",
        "alias": "app",
        "rules": [
            {"os": ["iOS"], "url": "https://apps.example/1"},
            {"device": ["mobile", "tablet"], "os": ["android"], "url": "https://play.example/1"},
            {"language": ["de", "pt-BR"], "country": ["at"], "url": "https://example.com/de"},
            {"query": {"name": "ref"}, "from": "2030-01-01T00:00:00Z",
             "until": "2031-01-01T00:00:00Z", "url": "https://example.com/ref"},
        ],
        "variants": [
            {"url": "https://example.com/a", "weight": 70},
            {"url": "https://example.com/b", "weight": 30},
        ],
        "sticky_variants": false,
    }));
    let rules = made["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0]["os"], json!(["ios"]));
    assert_eq!(rules[1]["device"], json!(["mobile", "tablet"]));
    assert_eq!(rules[2]["language"], json!(["de", "pt-br"]));
    assert_eq!(rules[2]["country"], json!(["AT"]));
    assert_eq!(rules[3]["query"], json!({"name": "ref"}));
    assert_eq!(rules[3]["from"], "2030-01-01T00:00:00Z");
    assert_eq!(
        made["variants"][0],
        json!({"url": "https://example.com/a", "weight": 70})
    );
    assert_eq!(made["sticky_variants"], false);

    let got = control.get("/api/v1/links/app");
    assert_eq!(got.body["rules"], made["rules"]);
    assert_eq!(got.body["variants"], made["variants"]);

    // A patch replaces what it names and leaves the rest.
    let patched = control.request(
        "PATCH",
        "/api/v1/links/app",
        Some(&control.token.clone()),
        Some(&json!({"variants": []})),
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["variants"], json!([]));
    assert_eq!(patched.body["rules"], made["rules"]);
    let cleared = control.request(
        "PATCH",
        "/api/v1/links/app",
        Some(&control.token.clone()),
        Some(&json!({"rules": []})),
    );
    assert_eq!(cleared.body["rules"], json!([]));

    // A plain link shows none.
    let plain = control.create(json!({"url": "https://example.com/plain"}));
    assert_eq!(plain["rules"], json!([]));
    assert_eq!(plain["variants"], json!([]));
}

#[test]
fn a_bad_rule_or_variant_is_refused_by_name() {
    let control = start();
    let create = |extra: Value| {
        let mut body = json!({"url": "https://example.com/"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        control.post("/api/v1/links", body)
    };
    let ios = json!({"os": ["ios"], "url": "https://apps.example/"});
    let cases = [
        (
            json!({"rules": [ios, {"os": ["beos"], "url": "https://x.example/"}]}),
            "rules",
            "rule 2: os \"beos\" is not one of",
        ),
        (
            json!({"rules": [{"url": "https://x.example/"}]}),
            "rules",
            "rule 1: a rule needs at least one condition",
        ),
        (
            json!({"rules": [{"os": ["ios"], "url": "ftp://x.example/"}]}),
            "rules",
            "rule 1: url:",
        ),
        (
            json!({"rules": [{"language": ["english!"], "url": "https://x.example/"}]}),
            "rules",
            "rule 1: \"english!\" is not a language tag",
        ),
        (
            json!({"rules": [{"country": ["USA"], "url": "https://x.example/"}]}),
            "rules",
            "rule 1: \"USA\" is not a two-letter country code",
        ),
        (
            json!({"rules": [{"from": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z", "url": "https://x.example/"}]}),
            "rules",
            "rule 1: the time window ends before it starts",
        ),
        (
            json!({"rules": [{"from": "soon", "url": "https://x.example/"}]}),
            "rules",
            "rule 1: \"soon\" is not an RFC 3339 time",
        ),
        (
            json!({"rules": [{"query": {"name": "a b"}, "url": "https://x.example/"}]}),
            "rules",
            "rule 1: query parameter \"a b\"",
        ),
        (
            json!({"rules": vec![ios.clone(); 17]}),
            "rules",
            "at most 16 rules",
        ),
        (
            json!({"variants": [{"url": "https://a.example/", "weight": 1}]}),
            "variants",
            "a split needs two variants or more",
        ),
        (
            json!({"variants": [{"url": "https://a.example/", "weight": 1}, {"url": "https://b.example/", "weight": 0}]}),
            "variants",
            "variant 2: weight must be at least 1",
        ),
        (
            json!({"variants": [{"url": "https://a.example/", "weight": 1}, {"url": "nope", "weight": 1}]}),
            "variants",
            "variant 2: url:",
        ),
    ];
    for (extra, field, detail) in cases {
        let (got_field, got_detail) = refusal(&create(extra.clone()));
        assert_eq!(got_field, field, "{extra}");
        assert!(
            got_detail.contains(detail),
            "{extra}: {got_detail:?} lacks {detail:?}"
        );
    }
    let (_, unknown) = refusal(&create(
        json!({"rules": [{"os": ["ios"], "url": "https://x.example/", "color": "red"}]}),
    ));
    assert!(unknown.contains("color"), "{unknown}");
    let big = "x".repeat(2000);
    let huge: Vec<Value> = (0..16)
        .map(|i| json!({"query": {"name": format!("p{i}")}, "url": format!("https://x.example/{big}")}))
        .collect();
    let (field, detail) = refusal(&create(json!({"rules": huge})));
    assert_eq!(field, "rules");
    assert!(detail.contains("at most 16384"), "{detail}");

    // A blocked domain is refused as a rule's or a variant's target too.
    let put = control.request(
        "PUT",
        "/api/v1/blocklist/evil.example",
        Some(&control.token.clone()),
        Some(&json!({"reason": "phishing"})),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let (field, detail) = refusal(&create(
        json!({"rules": [ios, {"os": ["android"], "url": "https://evil.example/x"}]}),
    ));
    assert_eq!(
        (
            field.as_str(),
            detail.contains("rule 2: url: domain evil.example is blocked")
        ),
        ("rules", true),
        "{detail}"
    );
    let made = control.create(json!({"url": "https://example.com/", "alias": "later"}));
    assert_eq!(made["rules"], json!([]));
    let patched = control.request(
        "PATCH",
        "/api/v1/links/later",
        Some(&control.token.clone()),
        Some(&json!({"variants": [{"url": "https://a.example/", "weight": 1}, {"url": "https://evil.example/", "weight": 1}]})),
    );
    let (field, detail) = refusal(&patched);
    assert_eq!(field, "variants");
    assert!(
        detail.contains("variant 2: url: domain evil.example is blocked"),
        "{detail}"
    );
}

#[test]
fn a_locked_target_locks_the_rules_and_variants_too() {
    let control = start();
    let ann = control.new_key("ann", "user");
    let made = control.request(
        "POST",
        "/api/v1/links",
        Some(&ann),
        Some(&json!({"url": "https://example.com/", "alias": "held", "target_locked": true})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let sneaky = control.request(
        "PATCH",
        "/api/v1/links/held",
        Some(&ann),
        Some(&json!({"rules": [{"os": ["ios"], "url": "https://elsewhere.example/"}]})),
    );
    assert_eq!(sneaky.status, 403, "{sneaky:?}");
    let by_admin = control.request(
        "PATCH",
        "/api/v1/links/held",
        Some(&control.token.clone()),
        Some(&json!({"rules": [{"os": ["ios"], "url": "https://apps.example/"}]})),
    );
    assert_eq!(by_admin.status, 200, "{by_admin:?}");
    assert_eq!(by_admin.body["rules"][0]["url"], "https://apps.example/");
}
