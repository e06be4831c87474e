//! Opens arbitrary bytes as a snapshot and, when they open, looks codes up,
//! iterates and verifies. Nothing may panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shortline_store::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = Snapshot::from_bytes(data.to_vec()) else {
        return;
    };
    for code in [&b"a"[..], b"docs", b"promo-2026", b"Xy_9", b"code1", b""] {
        if let Some(link) = snapshot.get(code) {
            assert_eq!(link.code(), code);
        }
    }
    for link in snapshot.iter().flatten() {
        let _ = link.target_str();
        let _ = snapshot.get(link.code());
    }
    let _ = snapshot.verify_records();
});
