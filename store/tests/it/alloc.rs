//! Lookups allocate nothing: counted by a global allocator that tallies the
//! allocations of the current thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shortline_store::{
    Change, Code, DeltaOf, LiveTable, Seq, Snapshot, encode_delta, encode_snapshot,
};

use crate::record;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is a const-initialised thread local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: as for `dealloc`, and `new_size` comes from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn lookups_allocate_nothing() {
    let records: Vec<_> = (0..1000).map(|i| record(&format!("k{i}"), i)).collect();
    let base = Snapshot::from_bytes(encode_snapshot(Seq(1), &records).unwrap()).unwrap();
    // Two deltas over the base: one changes and deletes base codes, one
    // adds codes; lookups go through both and their filters.
    let changed: Vec<_> = (0..100)
        .map(|i| record(&format!("k{i}"), i + 5000))
        .collect();
    let deleted: Vec<Code> = (100..110)
        .map(|i| Code::parse(&format!("k{i}")).unwrap())
        .collect();
    let added: Vec<_> = (0..100).map(|i| record(&format!("d{i}"), i)).collect();
    let delta = |seq, parent, entries: Vec<(&Code, Option<&shortline_store::LinkRecord>)>| {
        let of = DeltaOf {
            base: base.base_id(),
            parent: Seq(parent),
        };
        Snapshot::from_bytes(encode_delta(Seq(seq), of, entries).unwrap()).unwrap()
    };
    let first = delta(
        2,
        1,
        changed
            .iter()
            .map(|r| (&r.code, Some(r)))
            .chain(deleted.iter().map(|c| (c, None)))
            .collect(),
    );
    let second = delta(3, 2, added.iter().map(|r| (&r.code, Some(r))).collect());
    let table = LiveTable::with_deltas(base, vec![first, second]).unwrap();
    table.apply((0..50).map(|i| {
        let code = format!("o{i}");
        Change {
            seq: Seq(4 + i),
            code: Code::parse(&code).unwrap(),
            record: Some(record(&code, i)),
        }
    }));
    let probes: Vec<Vec<u8>> = (0..1100)
        .map(|i| format!("k{i}").into_bytes())
        .chain((0..60).map(|i| format!("o{i}").into_bytes()))
        .chain((0..120).map(|i| format!("d{i}").into_bytes()))
        .collect();
    // Warm up: arc-swap sets up its per-thread state on the first load.
    let _ = table.load().get(b"k1");

    let before = allocations();
    let mut found = 0u64;
    for probe in &probes {
        let view = table.load();
        if let Some(link) = view.get(probe) {
            found += link.link_id.0 & 1;
            found += 1;
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "lookups allocated");
    assert!(found >= 1140, "the probes hit: {found}");
    // The counter works: an allocation is seen.
    let before = allocations();
    let v = vec![1u8; 10];
    assert_eq!(allocations() - before, 1);
    drop(v);
}
