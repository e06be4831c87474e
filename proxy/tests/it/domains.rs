//! Short domains end to end: one code on three domains is three links,
//! each answered by its `Host` over plain HTTP and by SNI over HTTPS; an
//! unknown host is misdirected; each domain's root, not-found page, HTTPS
//! redirect and HSTS follow its settings; a key limited to one domain is
//! refused on the others.

use serde_json::{Value, json};

use crate::tls::{Authority, https_get};
use crate::{Answer, eventually, free_ports, raw_request, system};

/// `GET path` with `Host: host` over plain HTTP.
fn get(port: u16, host: &str, path: &str) -> Answer {
    raw_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .expect("proxy answered")
}

#[test]
fn one_code_on_three_domains_is_three_links_by_host_and_by_sni() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Authority::new();
    for name in ["localhost", "go.acme.test", "promo.test"] {
        ca.issue(certs.path(), name, &[name], None);
    }
    let [tls_port] = free_ports();
    let listen = format!("127.0.0.1:{tls_port}");
    let dir = certs.path().to_string_lossy().into_owned();
    let sys = system(
        &[],
        &[
            ("SHORTLINE_PROXY_UNKNOWN_HOST", "misdirected"),
            ("SHORTLINE_PROXY_TLS_LISTEN", listen.as_str()),
            ("SHORTLINE_PROXY_TLS_DIR", dir.as_str()),
        ],
    );
    let control = &sys.control;
    let port = sys.proxy.port;

    // The first domain was made from public_url (http://localhost:8080).
    let (status, list) = control.request("GET", "/api/v1/domains", None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"][0]["name"], "localhost");
    assert_eq!(list["items"][0]["default"], true);

    let (status, go) = control.request(
        "POST",
        "/api/v1/domains",
        Some(json!({
            "name": "Go.Acme.Test.",
            "https": true,
            "hsts_max_age": 600,
            "root_redirect": "https://acme.example/home",
        })),
    );
    assert_eq!(status, 201, "{go}");
    assert_eq!(go["name"], "go.acme.test", "normalised");
    assert_eq!(go["default"], false);
    let (status, promo) = control.request(
        "POST",
        "/api/v1/domains",
        Some(json!({
            "name": "promo.test",
            "https_redirect": true,
            "not_found_redirect": "https://promo.example/missing",
        })),
    );
    assert_eq!(status, 201, "{promo}");
    let (status, again) = control.request(
        "POST",
        "/api/v1/domains",
        Some(json!({"name": "PROMO.test"})),
    );
    assert_eq!(status, 409, "{again}");
    let (status, bad) = control.request(
        "POST",
        "/api/v1/domains",
        Some(json!({"name": "https://x.test/"})),
    );
    assert_eq!(status, 422, "{bad}");
    assert!(
        bad["detail"].as_str().unwrap().contains("domain name"),
        "{bad}"
    );

    let create = |domain: Option<&str>, url: &str| -> Value {
        let mut body = json!({"url": url, "alias": "sale"});
        if let Some(domain) = domain {
            body["domain"] = json!(domain);
        }
        let (status, link) = control.request("POST", "/api/v1/links", Some(body));
        assert_eq!(status, 201, "{link}");
        link
    };
    let home = create(None, "https://example.com/home-sale");
    let go_link = create(Some("go.acme.test"), "https://example.com/go-sale");
    let promo_link = create(Some("promo.test"), "https://example.com/promo-sale");
    assert_eq!(home["short_url"], "http://localhost:8080/sale");
    assert_eq!(home["domain"], "localhost");
    assert_eq!(go_link["short_url"], "https://go.acme.test/sale");
    assert_eq!(go_link["code"], "sale");
    assert_eq!(promo_link["short_url"], "http://promo.test/sale");
    let (status, taken) = control.request(
        "POST",
        "/api/v1/links",
        Some(json!({"url": "https://example.com/x", "alias": "sale", "domain": "go.acme.test"})),
    );
    assert_eq!(status, 409, "{taken}");
    let (status, fetched) = control.request("GET", "/api/v1/links/sale?domain=go.acme.test", None);
    assert_eq!(
        (status, &fetched["url"]),
        (200, &json!("https://example.com/go-sale"))
    );

    // Plain HTTP, by Host: case, port and a trailing dot do not matter.
    eventually(30, "the go.acme.test link to reach the proxy", || {
        get(port, "go.acme.test", "/sale").status == 302
    });
    for (host, target) in [
        ("localhost:8080", "https://example.com/home-sale"),
        ("GO.Acme.Test.:80", "https://example.com/go-sale"),
    ] {
        let answer = get(port, host, "/sale");
        assert_eq!(answer.status, 302, "{host}: {answer:?}");
        assert_eq!(answer.header("location"), Some(target), "{host}");
        assert_eq!(
            answer.header("strict-transport-security"),
            None,
            "no HSTS over plain HTTP"
        );
    }
    // promo.test is served over HTTPS only: plain requests are sent there.
    let upgraded = get(port, "promo.test", "/sale?x=1");
    assert_eq!(upgraded.status, 301, "{upgraded:?}");
    assert_eq!(
        upgraded.header("location"),
        Some("https://promo.test/sale?x=1")
    );
    let unknown = get(port, "elsewhere.test", "/sale");
    assert_eq!(unknown.status, 421, "{unknown:?}");
    assert_eq!(
        get(port, "elsewhere.test", "/healthz").status,
        200,
        "health answers any host"
    );
    let root = get(port, "go.acme.test", "/");
    assert_eq!(
        (root.status, root.header("location")),
        (302, Some("https://acme.example/home"))
    );
    assert_eq!(
        get(port, "localhost", "/").status,
        404,
        "the built-in root page"
    );
    let preview = get(port, "go.acme.test", "/sale+");
    assert!(
        preview.body.contains("go.acme.test/sale"),
        "{}",
        preview.body
    );
    assert!(
        preview
            .body
            .contains("aria-label=\"QR code of http://go.acme.test/sale\"")
            && preview.body.contains("<svg"),
        "the preview page shows the link's QR code: {}",
        preview.body
    );

    // HTTPS, by SNI: each name its own link, its own settings.
    let client = ca.fresh_client();
    for (name, target) in [
        ("localhost", "https://example.com/home-sale"),
        ("go.acme.test", "https://example.com/go-sale"),
        ("promo.test", "https://example.com/promo-sale"),
    ] {
        let seen = https_get(tls_port, name, "/sale", &client).unwrap().answer;
        assert_eq!(seen.status, 302, "{name}: {seen:?}");
        assert_eq!(seen.header("location"), Some(target), "{name}");
    }
    let go_tls = https_get(tls_port, "go.acme.test", "/sale", &client)
        .unwrap()
        .answer;
    assert_eq!(
        go_tls.header("strict-transport-security"),
        Some("max-age=600")
    );
    let missing = https_get(tls_port, "promo.test", "/nope", &client)
        .unwrap()
        .answer;
    assert_eq!(
        (missing.status, missing.header("location")),
        (302, Some("https://promo.example/missing"))
    );
    assert_eq!(
        https_get(tls_port, "go.acme.test", "/nope", &client)
            .unwrap()
            .answer
            .status,
        404
    );
    assert!(
        sys.proxy
            .metric("proxy_requests_total{status=\"421\",kind=\"misdirected\"}")
            >= 1.0
    );

    // A key limited to promo.test.
    let (status, key) = control.request(
        "POST",
        "/api/v1/keys",
        Some(json!({"name": "promo-team", "role": "user", "domains": ["Promo.Test"]})),
    );
    assert_eq!(status, 201, "{key}");
    assert_eq!(key["domains"], json!(["promo.test"]));
    let token = key["token"].as_str().unwrap();
    for (domain, expected) in [
        (json!("promo.test"), 201),
        (json!("go.acme.test"), 403),
        (Value::Null, 403),
    ] {
        let mut body = json!({"url": "https://example.com/team"});
        if !domain.is_null() {
            body["domain"] = domain.clone();
        }
        let (status, answer) = control.request_as(token, "POST", "/api/v1/links", Some(body));
        assert_eq!(status, expected, "{domain}: {answer}");
    }
    let (status, unknown_domain) = control.request(
        "POST",
        "/api/v1/keys",
        Some(json!({"name": "x", "role": "user", "domains": ["nowhere.test"]})),
    );
    assert_eq!(status, 422, "{unknown_domain}");

    // A short domain is never a target: it could loop.
    let (status, looped) = control.request(
        "POST",
        "/api/v1/links",
        Some(json!({"url": "https://go.acme.test/sale"})),
    );
    assert_eq!(status, 422, "{looped}");
    // A domain with links stays; the default moves by naming the new one.
    let (status, _) = control.request("DELETE", "/api/v1/domains/go.acme.test", None);
    assert_eq!(status, 409);
    let (status, moved) = control.request(
        "PATCH",
        "/api/v1/domains/go.acme.test",
        Some(json!({"default": true})),
    );
    assert_eq!((status, &moved["default"]), (200, &json!(true)), "{moved}");
    let generated = control.create(json!({"url": "https://example.com/on-the-new-default"}));
    let (status, link) = control.request("GET", &format!("/api/v1/links/{generated}"), None);
    assert_eq!(
        (status, &link["domain"]),
        (200, &json!("go.acme.test")),
        "{link}"
    );
    eventually(30, "the new default's link to reach the proxy", || {
        get(port, "go.acme.test", &format!("/{generated}")).status == 302
    });
}
