//! Feeds arbitrary text to the Safe Browsing canonicaliser and expression
//! builder. Nothing may panic, the output has no bytes that need escaping,
//! and there are never more than 30 expressions (5 hosts by 6 paths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shortline_control::domain::threats::canonical::{canonicalize, expressions};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let canonical = canonicalize(raw).to_string();
    assert!(
        !canonical.bytes().any(|b| b <= 0x20 || b >= 0x7f || b == b'#'),
        "{canonical:?}"
    );
    let found = expressions(raw);
    assert!(!found.is_empty() && found.len() <= 30, "{}", found.len());
});
