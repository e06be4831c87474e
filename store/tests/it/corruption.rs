//! Corrupt, truncated and foreign files: open fails cleanly, or lookups stay
//! memory-safe and only ever return what a lookup may return.

use rand::{Rng, SeedableRng, rngs::StdRng};
use shortline_store::{
    Code, DeltaOf, OpenError, Seq, Snapshot, encode_delta, encode_snapshot, format,
};

use crate::record;

fn small_file() -> Vec<u8> {
    let records: Vec<_> = (0..20).map(|i| record(&format!("code{i}"), i)).collect();
    encode_snapshot(Seq(5), &records).unwrap()
}

/// A delta over `small_file`'s base: links changed and added, and tombstones.
fn small_delta() -> Vec<u8> {
    let base = Snapshot::from_bytes(small_file()).unwrap();
    let records: Vec<_> = (10..30)
        .map(|i| record(&format!("code{i}"), i + 100))
        .collect();
    let deleted: Vec<Code> = (0..5)
        .map(|i| Code::parse(&format!("code{i}")).unwrap())
        .collect();
    let of = DeltaOf {
        base: base.base_id(),
        parent: Seq(5),
    };
    let entries = records
        .iter()
        .map(|r| (&r.code, Some(r)))
        .chain(deleted.iter().map(|c| (c, None)));
    encode_delta(Seq(9), of, entries).unwrap()
}

/// A base and a delta: every check below runs on both kinds of segment.
fn small_files() -> [Vec<u8>; 2] {
    [small_file(), small_delta()]
}

fn exercise(snapshot: &Snapshot) {
    for i in 0..35 {
        let code = format!("code{i}");
        let _ = snapshot.get(code.as_bytes());
        if let Some(entry) = snapshot.find(code.as_bytes()) {
            assert_eq!(entry.code(), code.as_bytes());
        }
    }
    for entry in snapshot.entries() {
        let Ok(entry) = entry else { break };
        let _ = entry.link().map(|link| link.target_str());
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
    for file in small_files() {
        every_truncation_of(file);
    }
}

fn every_truncation_of(file: Vec<u8>) {
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
    for file in small_files() {
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x5a;
            assert!(
                Snapshot::from_bytes(bad).is_err(),
                "flip at byte {at} went unnoticed"
            );
        }
    }
}

#[test]
fn random_damage_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for file in small_files() {
        random_damage_of(&file, &mut rng);
    }
}

fn random_damage_of(file: &[u8], rng: &mut StdRng) {
    for _ in 0..3000 {
        let mut bad = file.to_vec();
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
    future[8..12].copy_from_slice(&(format::DELTA_FORMAT_VERSION + 1).to_le_bytes());
    let err = Snapshot::from_bytes(future).unwrap_err();
    assert!(matches!(err, OpenError::UnsupportedVersion { .. }));
    assert!(
        err.to_string()
            .contains(&format!("version {}", format::DELTA_FORMAT_VERSION + 1)),
        "{err}"
    );
}

/// A file whose checksums are recomputed after damage reaches the lookup code:
/// the lookups must stay within bounds on their own.
#[test]
fn damage_with_valid_checksums_stays_memory_safe() {
    let mut rng = StdRng::seed_from_u64(7);
    for file in small_files() {
        let header = format::Header::decode(&file).unwrap().size();
        for _ in 0..3000 {
            let mut bad = file.clone();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(header..bad.len());
                bad[at] = rng.random();
            }
            reseal(&mut bad);
            let snapshot = Snapshot::from_bytes(bad).expect("resealed file opens");
            exercise(&snapshot);
        }
    }
}

/// Recomputes every block checksum and the table's checksum.
fn reseal(file: &mut [u8]) {
    let mut header = format::Header::decode_for_length(file, file.len() as u64).unwrap();
    let table_at = header.checksums_offset as usize;
    let size = header.size();
    let table = format::block_checksums(&file[size..table_at], header.block_size);
    file[table_at..].copy_from_slice(&table);
    header.checksum = format::checksum(&table);
    file[..size].copy_from_slice(&header.encode());
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
