//! The store conformance suite. Every backend must pass it; the embedded one
//! runs it in unit tests, FoundationDB's whenever `FDB_CLUSTER_FILE` is set.
//! Each check panics with a message naming what the backend got wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shortline_store::Seq;

use super::{Backend, Space, StoreError, prefix_end};

/// Runs every check against `backend`, which must start empty.
pub fn run_all(backend: &dyn Backend) {
    reads_see_own_writes_and_commits(backend);
    failed_transactions_leave_nothing(backend);
    ranges_are_ordered_bounded_and_limited(backend);
    change_log_is_ordered_and_resumable(backend);
    counters_add(backend);
}

/// Checks that need the backend shared between threads.
pub fn run_concurrent<B: Backend>(backend: Arc<B>) {
    concurrent_claims_have_one_winner(Arc::clone(&backend));
    concurrent_adds_are_not_lost(backend);
}

fn get(backend: &dyn Backend, space: Space, key: &[u8]) -> Option<Vec<u8>> {
    backend.read(|txn| txn.get(space, key)).expect("read")
}

fn reads_see_own_writes_and_commits(backend: &dyn Backend) {
    backend
        .write(&mut |txn| {
            txn.set(Space::Links, b"conf/a", b"1")?;
            assert_eq!(
                txn.get(Space::Links, b"conf/a")?.as_deref(),
                Some(&b"1"[..]),
                "own write"
            );
            txn.set(Space::Links, b"conf/b", b"2")?;
            txn.clear(Space::Links, b"conf/b")?;
            assert_eq!(txn.get(Space::Links, b"conf/b")?, None, "own clear");
            txn.add(Space::Counters, b"conf/many", 3)?;
            let keys = [
                b"conf/b".to_vec(),
                b"conf/a".to_vec(),
                b"conf/none".to_vec(),
            ];
            assert_eq!(
                txn.get_many(Space::Links, &keys)?,
                [None, Some(b"1".to_vec()), None],
                "many reads, in order, own writes seen"
            );
            assert_eq!(
                txn.get_many(Space::Counters, &[b"conf/many".to_vec()])?,
                [Some(3i64.to_le_bytes().to_vec())],
                "an atomic add is seen by a later read"
            );
            Ok(())
        })
        .expect("write");
    let many = backend
        .read(|txn| txn.get_many(Space::Links, &[b"conf/a".to_vec(), b"conf/b".to_vec()]))
        .expect("read");
    assert_eq!(many, [Some(b"1".to_vec()), None], "many reads of a view");
    assert_eq!(
        get(backend, Space::Links, b"conf/a").as_deref(),
        Some(&b"1"[..]),
        "committed write"
    );
    assert_eq!(
        get(backend, Space::Links, b"conf/b"),
        None,
        "committed clear"
    );
    assert_eq!(
        get(backend, Space::Keys, b"conf/a"),
        None,
        "spaces are separate"
    );
}

fn failed_transactions_leave_nothing(backend: &dyn Backend) {
    let before = last_seq(backend);
    let result = backend.write(&mut |txn| {
        txn.set(Space::Links, b"conf/failed", b"x")?;
        txn.log_change(b"never")?;
        Err(StoreError::Conflict)
    });
    assert!(result.is_err(), "the body's error is returned");
    assert_eq!(
        get(backend, Space::Links, b"conf/failed"),
        None,
        "no write of a failed transaction"
    );
    assert_eq!(
        last_seq(backend),
        before,
        "no change logged by a failed transaction"
    );
}

fn ranges_are_ordered_bounded_and_limited(backend: &dyn Backend) {
    backend
        .write(&mut |txn| {
            for key in ["r/c", "r/a", "r/b", "r/d", "q/z", "s/a"] {
                txn.set(Space::ByTag, key.as_bytes(), b"")?;
            }
            Ok(())
        })
        .expect("write");
    let pairs = backend
        .read(|txn| txn.range(Space::ByTag, b"r/", &prefix_end(b"r/"), 3))
        .expect("read");
    let keys: Vec<_> = pairs
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(keys, ["r/a", "r/b", "r/c"], "ordered, bounded and limited");
    let pairs = backend
        .read(|txn| txn.range(Space::ByTag, b"r/b", b"r/d", 100))
        .expect("read");
    assert_eq!(pairs.len(), 2, "end is exclusive");
}

fn last_seq(backend: &dyn Backend) -> Seq {
    backend.read(|txn| txn.last_seq()).expect("read")
}

fn change_log_is_ordered_and_resumable(backend: &dyn Backend) {
    let start = last_seq(backend);
    let first = backend
        .write(&mut |txn| {
            txn.log_change(b"one")?;
            txn.log_change(b"two")
        })
        .expect("write");
    let second = backend
        .write(&mut |txn| txn.log_change(b"three"))
        .expect("write");
    assert!(
        first > start && second > first,
        "sequences grow: {start:?} {first:?} {second:?}"
    );
    assert_eq!(last_seq(backend), second, "last_seq is the newest commit");
    let changes = backend
        .read(|txn| txn.changes_after(start, 100))
        .expect("read");
    let bodies: Vec<_> = changes.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(bodies, [&b"one"[..], b"two", b"three"], "oldest first");
    assert!(
        changes.windows(2).all(|w| w[0].0 <= w[1].0),
        "never decreasing"
    );
    assert!(
        changes[1].0 < changes[2].0,
        "later commits have greater sequences"
    );
    assert_eq!(
        changes[1].0, first,
        "a commit reports its last change's sequence"
    );
    let resume_at = first;
    let changes = backend
        .read(|txn| txn.changes_after(resume_at, 1))
        .expect("read");
    assert_eq!(changes.len(), 1, "limited");
    assert_eq!(changes[0].1, b"three", "resumes after the given commit");
    let changes = backend
        .read(|txn| txn.changes_after(start, 1))
        .expect("read");
    assert!(
        changes.len() == 1 || changes.iter().all(|(s, _)| *s == changes[0].0),
        "a page ends between commits: {} changes",
        changes.len()
    );
    // Counting back through the log, by changes and not by sequence
    // numbers (FoundationDB's are commit versions, far apart).
    let behind = |seq, back| {
        backend
            .read(|txn| txn.change_behind(seq, back))
            .expect("read")
    };
    assert_eq!(behind(second, 0), Some(second), "0 back is the newest");
    assert_eq!(
        behind(second, 1),
        Some(first),
        "1 back is the change before"
    );
    assert_eq!(behind(second, 2), Some(changes_first_seq(backend, start)));
    assert_eq!(
        behind(first, 0),
        Some(first),
        "counted from the newest at or below"
    );
    assert!(
        behind(second, 3).is_none_or(|seq| seq <= start),
        "no change of this test lies 3 back"
    );
    assert_eq!(behind(second, u64::MAX), None, "fewer changes than asked");
    let unchanged = backend
        .write(&mut |txn| txn.set(Space::Meta, b"conf", b"1"))
        .expect("write");
    assert_eq!(
        unchanged, second,
        "a write without changes reports the current sequence"
    );

    backend.prune_changes(resume_at).expect("prune");
    let oldest = backend.read(|txn| txn.first_change()).expect("read");
    assert!(
        oldest > Some(resume_at),
        "pruned through {resume_at:?}, oldest now {oldest:?}"
    );
    let pruned = backend.read(|txn| txn.pruned_through()).expect("read");
    assert_eq!(pruned, resume_at, "pruned_through records the prune");
}

/// The sequence of the first change after `start`.
fn changes_first_seq(backend: &dyn Backend, start: Seq) -> Seq {
    backend
        .read(|txn| txn.changes_after(start, 1))
        .expect("read")[0]
        .0
}

fn counters_add(backend: &dyn Backend) {
    backend
        .write(&mut |txn| {
            txn.add(Space::Counters, b"conf/n", 5)?;
            txn.add(Space::Counters, b"conf/n", -2)
        })
        .expect("write");
    let value = get(backend, Space::Counters, b"conf/n").expect("counter exists");
    assert_eq!(i64::from_le_bytes(value.try_into().expect("8 bytes")), 3);
}

fn concurrent_claims_have_one_winner<B: Backend>(backend: Arc<B>) {
    let winners = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let backend = Arc::clone(&backend);
            let winners = Arc::clone(&winners);
            std::thread::spawn(move || {
                let mut won = false;
                backend
                    .write(&mut |txn| {
                        won = false;
                        if txn.get(Space::Links, b"conf/contested")?.is_none() {
                            txn.set(Space::Links, b"conf/contested", format!("{i}").as_bytes())?;
                            won = true;
                        }
                        Ok(())
                    })
                    .expect("write");
                if won {
                    winners.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("claimer");
    }
    assert_eq!(winners.load(Ordering::SeqCst), 1, "exactly one claim wins");
}

fn concurrent_adds_are_not_lost<B: Backend>(backend: Arc<B>) {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let backend = Arc::clone(&backend);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    backend
                        .write(&mut |txn| txn.add(Space::Counters, b"conf/concurrent", 1))
                        .expect("add");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("adder");
    }
    let value = get(&*backend, Space::Counters, b"conf/concurrent").expect("counter exists");
    assert_eq!(i64::from_le_bytes(value.try_into().expect("8 bytes")), 200);
}
