use shortline_store::{Seq, Snapshot, SnapshotWriter, WriteError, encode_snapshot, write_snapshot};

use crate::record;

#[test]
fn written_files_open_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.snap");
    let records: Vec<_> = (0..5000).map(|i| record(&format!("k{i}"), i)).collect();
    let stats = write_snapshot(&path, Seq(77), &records).unwrap();
    assert_eq!(stats.record_count, 5000);
    assert!(
        stats.overhead_bytes_per_link() <= 32.0,
        "overhead {} bytes per link",
        stats.overhead_bytes_per_link()
    );
    let snapshot = Snapshot::open(&path).unwrap();
    assert_eq!(snapshot.sequence(), Seq(77));
    assert_eq!(snapshot.info().file_size_bytes, stats.file_size_bytes);
    for r in &records {
        assert_eq!(
            snapshot
                .get(r.code.as_bytes())
                .unwrap()
                .to_record()
                .as_ref(),
            Some(r)
        );
    }
    assert_eq!(snapshot.verify_records().unwrap(), 5000);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "links.snap")
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn rewriting_replaces_the_file_atomically_for_open_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.snap");
    write_snapshot(&path, Seq(1), [record("a", 1)]).unwrap();
    let old = Snapshot::open(&path).unwrap();
    write_snapshot(&path, Seq(2), [record("b", 2)]).unwrap();
    let new = Snapshot::open(&path).unwrap();
    // The old map still reads the old file: rename never touches its inode.
    assert!(old.get(b"a").is_some());
    assert!(old.get(b"b").is_none());
    assert!(new.get(b"b").is_some());
    assert!(new.get(b"a").is_none());
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let err = Snapshot::open(std::path::Path::new("/nonexistent/links.snap")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/links.snap"), "{err}");
}

#[test]
fn inspect_command_prints_header_and_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.snap");
    write_snapshot(&path, Seq(9), [record("abc", 1)]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shortline-snapshot"))
        .arg(&path)
        .args(["--verify", "abc", "zzz"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sequence: 9"), "{text}");
    assert!(text.contains("records: 1"), "{text}");
    assert!(text.contains("verify: ok"), "{text}");
    assert!(text.contains("abc: id=1"), "{text}");
    assert!(text.contains("target=https://example.com/abc/v1"), "{text}");
    assert!(text.contains("zzz: not found"), "{text}");
    assert!(
        !out.status.success(),
        "a missing code makes the command fail"
    );
}

fn names_in(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

/// The streaming writer, fed in any order, writes the file the in-memory
/// encoder builds (all but the per-file seed and time), and it checks whole.
#[test]
fn a_streamed_file_holds_what_was_pushed_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.snap");
    let records: Vec<_> = (0..30_000u64)
        .map(|i| record(&format!("s{}", i.wrapping_mul(7919) % 30_000), i))
        .collect();
    let mut writer = SnapshotWriter::create(&path, Seq(12)).unwrap();
    for r in records.iter().rev() {
        writer.push(r).unwrap();
    }
    assert_eq!(writer.len(), 30_000);
    let stats = writer.finish().unwrap();
    assert_eq!(names_in(dir.path()), vec!["links.snap"]);
    let snapshot = Snapshot::open_verified(&path).unwrap();
    assert_eq!(snapshot.sequence(), Seq(12));
    assert_eq!(snapshot.info().file_size_bytes, stats.file_size_bytes);
    assert_eq!(
        stats.file_size_bytes,
        encode_snapshot(Seq(12), &records).unwrap().len() as u64
    );
    for r in &records {
        assert_eq!(snapshot.get(r.code.as_bytes()), Some(r.view()));
    }
    assert_eq!(snapshot.verify_records().unwrap(), 30_000);
}

#[test]
fn a_duplicate_or_an_abandoned_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.snap");
    let mut writer = SnapshotWriter::create(&path, Seq(1)).unwrap();
    for i in 0..100 {
        writer.push(&record(&format!("d{i}"), i)).unwrap();
    }
    writer.push(&record("d42", 1000)).unwrap();
    let err = writer.finish().unwrap_err();
    assert!(
        matches!(&err, WriteError::DuplicateCode(code) if code == "d42"),
        "{err}"
    );
    assert!(
        names_in(dir.path()).is_empty(),
        "{:?}",
        names_in(dir.path())
    );

    let mut writer = SnapshotWriter::create(&path, Seq(1)).unwrap();
    writer.push(&record("gone", 1)).unwrap();
    drop(writer);
    assert!(
        names_in(dir.path()).is_empty(),
        "{:?}",
        names_in(dir.path())
    );
}
