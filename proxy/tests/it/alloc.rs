//! The redirect path allocates nothing of its own: deciding the answer,
//! capturing the click and recording metrics, counted by a global allocator
//! that tallies the current thread's allocations. (Pingora's own request and
//! response header maps are outside this path.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use shortline_proxy::app::{Ask, UnknownHost, answer, answer_for};
use shortline_proxy::clicks::{ClickEvent, ClickRing};
use shortline_proxy::metrics::Metrics;
use shortline_store::domain::{DomainSettings, settings_key};
use shortline_store::{
    Change, Code, LinkId, LinkRecord, LiveTable, Seq, Snapshot, Target, encode_snapshot,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counter
// is a const-initialised thread local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: as for `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn record(code: &str, forward_query: bool) -> LinkRecord {
    let mut record = LinkRecord::new(
        Code::parse(code).unwrap(),
        Target::parse(&format!("https://example.com/{code}")).unwrap(),
        LinkId(7),
    );
    record.forward_query = forward_query;
    record
}

#[test]
fn the_redirect_path_allocates_nothing() {
    let records: Vec<_> = (0..1000)
        .map(|i| record(&format!("c{i}"), i % 2 == 0))
        .collect();
    let table =
        LiveTable::new(Snapshot::from_bytes(encode_snapshot(Seq(1), &records).unwrap()).unwrap());
    table.apply([Change {
        seq: Seq(2),
        code: Code::parse("fresh").unwrap(),
        record: Some(record("fresh", false)),
    }]);
    let metrics = Arc::new(Metrics::default());
    let ring = ClickRing::new(4096, Arc::clone(&metrics));
    let targets: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("/c{i}").into_bytes())
        .chain([b"/fresh".to_vec(), b"/missing".to_vec(), b"/a/b".to_vec()])
        .collect();
    let forwarded: Vec<Vec<u8>> = (0..1000)
        .step_by(2)
        .map(|i| format!("/c{i}?utm_source=x").into_bytes())
        .collect();
    let method = http::Method::GET;
    // The reused per-thread buffer for forwarded queries, grown once.
    let mut location = Vec::with_capacity(256);
    let _ = table.load();

    let before = allocations();
    let mut redirects = 0;
    for target in &targets {
        let view = table.load();
        let reply = answer(&view, &method, target, 0, &mut location);
        if let Some(link_id) = reply.click {
            ring.push(ClickEvent::new(
                link_id,
                1,
                false,
                None,
                b"https://ref.example/",
                b"Mozilla/5.0",
            ));
            redirects += 1;
        }
        metrics.record(reply.outcome, 1000);
    }
    // Forwarded queries go through the reused buffer.
    let mut forwarded_ok = 0;
    for target in &forwarded {
        let view = table.load();
        let reply = answer(&view, &method, target, 0, &mut location);
        forwarded_ok += usize::from(
            reply
                .location
                .is_some_and(|l| l.ends_with(b"?utm_source=x")),
        );
    }
    assert_eq!(allocations() - before, 0, "the redirect path allocated");
    assert_eq!(forwarded_ok, 500);
    // The counter sees allocations: a preview page is built per request.
    let before = allocations();
    let view = table.load();
    let preview = answer(&view, &method, b"/c1+", 0, &mut location);
    assert_eq!(preview.status, 200);
    assert!(allocations() > before, "the counting allocator counts");
    assert_eq!(redirects, 1001);
    assert_eq!(ring.len(), 1001);
}

#[test]
fn finding_the_domain_by_host_allocates_nothing() {
    let settings = |name: &'static str, https_redirect: bool| {
        let text = DomainSettings {
            name,
            scoped: true,
            https_redirect,
            hsts_max_age: 600,
            root: Some("https://example.com/root"),
            not_found: None,
            expired: None,
        }
        .encode();
        LinkRecord::new(
            settings_key(name).unwrap(),
            Target::parse(&text).unwrap(),
            LinkId(0),
        )
    };
    let scoped = LinkRecord::new(
        Code::key("go.test/abc").unwrap(),
        Target::parse("https://example.com/go").unwrap(),
        LinkId(7),
    );
    let records = [
        settings("go.test", false),
        settings("tls.test", true),
        scoped,
    ];
    let table =
        LiveTable::new(Snapshot::from_bytes(encode_snapshot(Seq(1), &records).unwrap()).unwrap());
    let method = http::Method::GET;
    let mut location = Vec::with_capacity(256);
    let asks = [
        (&b"Go.Test:8080"[..], &b"/abc"[..], true, 302),
        (b"go.test.", b"/", false, 302),
        (b"tls.test", b"/abc?x=1", false, 301),
        (b"unknown.test", b"/abc", false, 421),
    ];
    let _ = table.load();
    let before = allocations();
    for (host, target, secure, status) in asks {
        let view = table.load();
        let ask = Ask {
            method: &method,
            target,
            host,
            secure,
            headers: shortline_proxy::targeting::Headers::default(),
        };
        let reply = answer_for(&view, &ask, UnknownHost::Misdirected, 0, &mut location);
        assert_eq!(reply.status, status);
        assert_eq!(reply.hsts_max_age, if secure { 600 } else { 0 });
    }
    assert_eq!(allocations() - before, 0, "the domain lookup allocated");
}

/// A link with five rules and a two-way split is answered without
/// allocating too: the agent is read into a per-thread cache, the
/// language, query, cookie and the country database are read in place,
/// and the rules where they lie in the snapshot and in the overlay.
#[test]
fn a_link_with_rules_and_a_split_allocates_nothing() {
    use shortline_store::routing::{Conditions, QueryCondition, Routing, Rule, Variant, os};
    let target = |t: &str| Target::parse(t).unwrap();
    let when = |c: Conditions| Rule {
        when: c,
        target: target("https://example.com/ruled"),
    };
    let routing = Routing {
        rules: vec![
            when(Conditions {
                os: os::IOS,
                ..Conditions::default()
            }),
            when(Conditions {
                os: os::ANDROID,
                ..Conditions::default()
            }),
            when(Conditions {
                languages: vec!["de".into(), "fr".into()],
                ..Conditions::default()
            }),
            when(Conditions {
                query: Some(QueryCondition {
                    name: "ref".into(),
                    value: Some("mail".into()),
                }),
                ..Conditions::default()
            }),
            when(Conditions {
                countries: vec!["NZ".into()],
                until: Some(10),
                ..Conditions::default()
            }),
        ],
        variants: vec![
            Variant {
                weight: 1,
                target: target("https://example.com/a"),
            },
            Variant {
                weight: 1,
                target: target("https://example.com/b"),
            },
        ],
        sticky: true,
    };
    routing.check().unwrap();
    let routed = |code: &str| {
        let mut r = record(code, true);
        r.routing = shortline_store::routing::Encoded::new(&routing);
        r
    };
    let table = LiveTable::new(
        Snapshot::from_bytes(encode_snapshot(Seq(1), [&routed("ruled")]).unwrap()).unwrap(),
    );
    table.apply([Change {
        seq: Seq(2),
        code: Code::parse("fresh").unwrap(),
        record: Some(routed("fresh")),
    }]);
    let method = http::Method::GET;
    let mut location = Vec::with_capacity(256);
    let agents: [&[u8]; 3] = [
        b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1",
        b"Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36",
        b"",
    ];
    let targets: [&[u8]; 4] = [b"/ruled", b"/fresh", b"/ruled?ref=mail", b"/fresh?x=1"];
    let dir = tempfile::tempdir().unwrap();
    let countries = dir.path().join("countries.mmdb");
    crate::analytics::write_geoip(&countries);
    let geoip = shortline_common::geo::GeoIp::open(&countries).unwrap();
    assert_eq!(geoip.country("203.0.113.5".parse().unwrap()), Some(*b"NZ"));
    let ask = |target, agent, cookie| Ask {
        method: &method,
        target,
        host: b"s.example",
        secure: false,
        headers: shortline_proxy::targeting::Headers {
            user_agent: agent,
            accept_language: b"en-GB, fr;q=0.5",
            cookie,
            client_ip: Some(std::net::IpAddr::from([203, 0, 113, 5])),
            geoip: Some(&geoip),
        },
    };
    // Warm: the per-thread agent cache and random state.
    for agent in agents {
        let view = table.load();
        let _ = answer_for(
            &view,
            &ask(b"/ruled", agent, b""),
            UnknownHost::Default,
            100,
            &mut location,
        );
    }

    let before = allocations();
    let (mut ruled, mut split) = (0, 0);
    let mut cookies = 0;
    for _ in 0..50 {
        for target in targets {
            for agent in agents {
                for cookie in [&b""[..], b"a=1; sl_v=12345"] {
                    let view = table.load();
                    let reply = answer_for(
                        &view,
                        &ask(target, agent, cookie),
                        UnknownHost::Default,
                        100,
                        &mut location,
                    );
                    assert_eq!(reply.status, 302);
                    cookies += usize::from(reply.visitor.is_some());
                    let at = reply.location.unwrap();
                    if at.starts_with(b"https://example.com/ruled") {
                        ruled += 1;
                    } else if at.starts_with(b"https://example.com/a")
                        || at.starts_with(b"https://example.com/b")
                    {
                        split += 1;
                    }
                }
            }
        }
    }
    assert_eq!(allocations() - before, 0, "a routed redirect allocated");
    assert!(cookies > 0, "fresh clients were placed in the split");
    assert!(
        ruled > 0 && split > 0,
        "{ruled} by a rule, {split} by the split"
    );
}
