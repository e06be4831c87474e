//! Feeds arbitrary request targets to the proxy's path parser and answer
//! builder over a small table (one link forwards queries). Nothing may
//! panic; every answer has a known status and a `Location`, when there is
//! one, that cannot inject a header.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shortline_proxy::app::answer;
use shortline_proxy::path::{Route, header_safe, parse};
use shortline_store::{Code, LinkId, LinkRecord, LiveTable, Seq, Snapshot, Target, encode_snapshot};

fn table() -> &'static LiveTable {
    static TABLE: OnceLock<LiveTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let plain = LinkRecord::new(
            Code::parse("abc").unwrap(),
            Target::parse("https://example.com/").unwrap(),
            LinkId(1),
        );
        let mut forwarding = LinkRecord::new(
            Code::parse("fwd").unwrap(),
            Target::parse("https://example.com/p?x=1#frag").unwrap(),
            LinkId(2),
        );
        forwarding.forward_query = true;
        let bytes = encode_snapshot(Seq(1), [&plain, &forwarding]).unwrap();
        LiveTable::new(Snapshot::from_bytes(bytes).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    if let Route::Code { code, query } = parse(data) {
        assert!(!code.is_empty() && code.len() <= 64);
        if let Some(q) = query {
            assert!(!q.is_empty());
        }
    }
    let view = table().load();
    let mut buffer = Vec::new();
    for method in [http::Method::GET, http::Method::HEAD, http::Method::POST] {
        let reply = answer(&view, &method, data, 0, &mut buffer);
        assert!(
            matches!(reply.status, 200 | 301 | 302 | 307 | 308 | 400 | 404 | 405 | 410 | 414),
            "status {}",
            reply.status
        );
        if let Some(location) = reply.location {
            assert!(header_safe(location), "{location:?}");
        }
    }
});
