//! Opens arbitrary bytes as a snapshot, checked whole and checked block by
//! block as they are read, and when they open looks codes up, iterates and
//! verifies, base files and delta segments (tombstones included) alike.
//! Nothing may panic or read out of bounds, and a lookup finds only the
//! code it asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shortline_store::Snapshot;

fuzz_target!(|data: &[u8]| {
    let opened = [
        Snapshot::from_bytes(data.to_vec()),
        Snapshot::from_bytes_lazy(data.to_vec()),
    ];
    for snapshot in opened.into_iter().flatten() {
        exercise(&snapshot);
    }
});

fn exercise(snapshot: &Snapshot) {
    for code in [&b"a"[..], b"docs", b"promo-2026", b"Xy_9", b"code1", b""] {
        if let Some(link) = snapshot.get(code) {
            assert_eq!(link.code(), code);
        }
    }
    for entry in snapshot.entries().flatten() {
        if let Some(found) = snapshot.find(entry.code()) {
            assert_eq!(found.code(), entry.code());
        }
        if let Some(link) = entry.link() {
            let _ = link.target_str();
        }
    }
    let _ = snapshot.verify_records();
    let _ = snapshot.verify();
}
