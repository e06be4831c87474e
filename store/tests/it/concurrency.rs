//! Readers looking up while a writer swaps snapshots and applies changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shortline_store::{Change, Code, LinkRecord, LiveTable, Seq, Snapshot, encode_snapshot};

use crate::record;

const STABLE_CODES: u64 = 200;

fn stable(i: u64) -> String {
    format!("stable{i}")
}

/// Every stable code exists in every view; its record must always be whole:
/// each field derives from the version stored in `link_id`.
fn check_view(table: &LiveTable) -> u64 {
    let view = table.load();
    let mut checked = 0;
    for i in 0..STABLE_CODES {
        let code = stable(i);
        let link = view
            .get(code.as_bytes())
            .unwrap_or_else(|| panic!("{code} vanished at sequence {}", view.sequence().0));
        let expected = record(&code, link.link_id.0);
        assert_eq!(
            link.to_record().as_ref(),
            Some(&expected),
            "torn record for {code}"
        );
        checked += 1;
    }
    checked
}

#[test]
fn readers_never_see_torn_or_missing_entries() {
    let initial: Vec<LinkRecord> = (0..STABLE_CODES).map(|i| record(&stable(i), 1)).collect();
    let base = Snapshot::from_bytes(encode_snapshot(Seq(0), &initial).unwrap()).unwrap();
    let table = Arc::new(LiveTable::new(base));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let table = Arc::clone(&table);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    checked += check_view(&table);
                }
                checked
            })
        })
        .collect();

    // The writer: the model of the stable codes' current versions, changes to
    // them and to short-lived codes, and periodic compaction into a snapshot.
    let mut versions = vec![1u64; STABLE_CODES as usize];
    let mut seq = 0u64;
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut round = 0u64;
    while Instant::now() < deadline && round < 400 {
        round += 1;
        let mut batch = Vec::new();
        for k in 0..20 {
            seq += 1;
            let i = (round * 31 + k * 7) % STABLE_CODES;
            versions[i as usize] += 1;
            let code = stable(i);
            batch.push(Change {
                seq: Seq(seq),
                code: Code::parse(&code).unwrap(),
                record: Some(record(&code, versions[i as usize])),
            });
            seq += 1;
            let transient = format!("t{round}x{k}");
            batch.push(Change {
                seq: Seq(seq),
                code: Code::parse(&transient).unwrap(),
                record: (k % 2 == 0).then(|| record(&transient, 3)),
            });
        }
        table.apply(batch);
        if round.is_multiple_of(10) {
            let records: Vec<LinkRecord> = (0..STABLE_CODES)
                .map(|i| record(&stable(i), versions[i as usize]))
                .collect();
            let snapshot =
                Snapshot::from_bytes(encode_snapshot(Seq(seq), &records).unwrap()).unwrap();
            table.install(snapshot).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let checked: u64 = readers
        .into_iter()
        .map(|r| r.join().expect("reader panicked"))
        .sum();
    assert!(checked > 0, "readers ran");
    let view = table.load();
    for i in 0..STABLE_CODES {
        assert_eq!(
            view.get(stable(i).as_bytes()).unwrap().link_id.0,
            versions[i as usize]
        );
    }
    assert_eq!(view.sequence(), Seq(seq));
}
