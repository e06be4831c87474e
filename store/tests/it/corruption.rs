//! Corrupt, truncated and foreign files: open fails cleanly, or lookups stay
//! memory-safe and only ever return what a lookup may return.

use rand::{Rng, SeedableRng, rngs::StdRng};
use shortline_store::{OpenError, Seq, Snapshot, encode_snapshot, format};

use crate::record;

fn small_file() -> Vec<u8> {
    let records: Vec<_> = (0..20).map(|i| record(&format!("code{i}"), i)).collect();
    encode_snapshot(Seq(5), &records).unwrap()
}

fn exercise(snapshot: &Snapshot) {
    for i in 0..25 {
        let _ = snapshot.get(format!("code{i}").as_bytes());
    }
    for link in snapshot.iter() {
        let Ok(link) = link else { break };
        let _ = link.target_str();
    }
    let _ = snapshot.verify_records();
    let _ = snapshot.verify();
}

#[test]
fn every_truncation_is_refused() {
    let file = small_file();
    for len in 0..file.len() {
        let err = Snapshot::from_bytes(file[..len].to_vec()).unwrap_err();
        assert!(
            matches!(err, OpenError::Truncated { .. }),
            "truncated to {len}: unexpected {err}"
        );
    }
    assert!(Snapshot::from_bytes(file).is_ok());
}

#[test]
fn truncated_file_on_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.snap");
    let file = small_file();
    std::fs::write(&path, &file[..file.len() / 2]).unwrap();
    assert!(matches!(
        Snapshot::open(&path),
        Err(OpenError::Truncated { .. })
    ));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        Snapshot::open(&path),
        Err(OpenError::Truncated { .. })
    ));
}

#[test]
fn every_single_byte_flip_is_detected() {
    let file = small_file();
    for at in 0..file.len() {
        let mut bad = file.clone();
        bad[at] ^= 0x5a;
        assert!(
            Snapshot::from_bytes(bad).is_err(),
            "flip at byte {at} went unnoticed"
        );
    }
}

#[test]
fn random_damage_never_panics() {
    let file = small_file();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..3000 {
        let mut bad = file.clone();
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..bad.len());
            bad[at] = rng.random();
        }
        if let Ok(snapshot) = Snapshot::from_bytes(bad.clone()) {
            exercise(&snapshot);
        }
        if let Ok(snapshot) = Snapshot::from_bytes_lazy(bad) {
            exercise(&snapshot);
        }
    }
}

#[test]
fn foreign_and_future_files_are_named_as_such() {
    let mut foreign = small_file();
    foreign[..8].copy_from_slice(b"GIF89a\0\0");
    assert!(matches!(
        Snapshot::from_bytes(foreign),
        Err(OpenError::Foreign)
    ));
    let mut future = small_file();
    future[8..12].copy_from_slice(&(format::FORMAT_VERSION + 1).to_le_bytes());
    let err = Snapshot::from_bytes(future).unwrap_err();
    assert!(matches!(err, OpenError::UnsupportedVersion { .. }));
    assert!(
        err.to_string()
            .contains(&format!("version {}", format::FORMAT_VERSION + 1)),
        "{err}"
    );
}

/// A file whose checksums are recomputed after damage reaches the lookup code:
/// the lookups must stay within bounds on their own.
#[test]
fn damage_with_valid_checksums_stays_memory_safe() {
    let file = small_file();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..3000 {
        let mut bad = file.clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(format::HEADER_SIZE..bad.len());
            bad[at] = rng.random();
        }
        reseal(&mut bad);
        let snapshot = Snapshot::from_bytes(bad).expect("resealed file opens");
        exercise(&snapshot);
    }
}

/// Recomputes every block checksum and the table's checksum.
fn reseal(file: &mut [u8]) {
    let mut header = format::Header::decode_for_length(file, file.len() as u64).unwrap();
    let table_at = header.checksums_offset as usize;
    let table = format::block_checksums(&file[format::HEADER_SIZE..table_at], header.block_size);
    file[table_at..].copy_from_slice(&table);
    header.checksum = format::checksum(&table);
    file[..format::HEADER_SIZE].copy_from_slice(&header.encode());
}

/// The fuzz target's seed corpus (and any crash input saved there) goes
/// through the same calls on every test run.
#[test]
fn fuzz_corpus_inputs_are_handled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/open_lookup");
    let mut seen = 0;
    let mut opened = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        seen += 1;
        if let Ok(snapshot) = Snapshot::from_bytes(bytes.clone()) {
            opened += 1;
            exercise(&snapshot);
        }
        if let Ok(snapshot) = Snapshot::from_bytes_lazy(bytes) {
            exercise(&snapshot);
        }
    }
    assert!(seen >= 4, "the seed corpus is present");
    assert!(
        opened >= 2,
        "the seed corpus holds a valid snapshot of each version"
    );
}
