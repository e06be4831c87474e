//! Raw click export: newline-delimited JSON files for loading into a
//! warehouse. The schema is in docs/ANALYTICS.md.
//!
//! Lines are appended to `clicks-<start>.ndjson.open` and synced before the
//! flush that counts them commits, so an acknowledged click is in the export.
//! A file is closed (synced and renamed to `clicks-<start>.ndjson`) once it is
//! older than the rotation interval or larger than the size limit; loaders
//! read closed files only. A batch resent after a failed flush is exported
//! again: `(proxy_id, batch_seq, index)` identifies a click for de-duplication.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The open export file and when to rotate it.
#[derive(Debug)]
pub struct Exporter {
    dir: PathBuf,
    rotate_after: Duration,
    bytes_max: u64,
    current: Option<Open>,
}

#[derive(Debug)]
struct Open {
    file: File,
    path: PathBuf,
    started: SystemTime,
    bytes: u64,
    dirty: bool,
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl Exporter {
    /// Exports into `dir`, closing files left open by an earlier process.
    pub fn open(dir: &Path, rotate_after: Duration, bytes_max: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "open") {
                std::fs::rename(&path, path.with_extension(""))?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            rotate_after,
            bytes_max,
            current: None,
        })
    }

    /// Appends whole lines.
    pub fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        let now = SystemTime::now();
        let due = self.current.as_ref().is_some_and(|open| {
            open.bytes >= self.bytes_max
                || now.duration_since(open.started).unwrap_or_default() >= self.rotate_after
        });
        if due {
            self.close()?;
        }
        if self.current.is_none() {
            let name = format!("clicks-{:016}.ndjson.open", unix_ms(now));
            let path = self.dir.join(name);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.current = Some(Open {
                file,
                path,
                started: now,
                bytes: 0,
                dirty: false,
            });
        }
        let open = self.current.as_mut().expect("opened above");
        open.file.write_all(lines)?;
        open.bytes += lines.len() as u64;
        open.dirty = true;
        metrics::counter!("control_click_export_bytes_total").increment(lines.len() as u64);
        Ok(())
    }

    /// Makes every appended line durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some(open) = &mut self.current
            && open.dirty
        {
            open.file.sync_data()?;
            open.dirty = false;
        }
        Ok(())
    }

    /// Closes the current file so loaders can take it.
    pub fn close(&mut self) -> std::io::Result<()> {
        if let Some(open) = self.current.take() {
            open.file.sync_all()?;
            std::fs::rename(&open.path, open.path.with_extension(""))?;
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "could not close the click export file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_by_size_and_leftovers_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut export = Exporter::open(dir.path(), Duration::from_secs(3600), 10).unwrap();
        export.append(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        std::thread::sleep(Duration::from_millis(2));
        export.append(b"{\"a\":3}\n").unwrap();
        export.sync().unwrap();
        let names = |dir: &Path| {
            let mut n: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        let listed = names(dir.path());
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed[0].ends_with(".ndjson") && listed[1].ends_with(".ndjson.open"));
        std::mem::forget(export);
        // A crashed process's open file is closed by the next one.
        let _again = Exporter::open(dir.path(), Duration::from_secs(3600), 10).unwrap();
        assert!(names(dir.path()).iter().all(|n| n.ends_with(".ndjson")));
        let all: String = names(dir.path())
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(all.lines().count(), 3);
    }
}
