//! Inspects a snapshot file: its header, counts, an optional full check and
//! optional lookups.
//!
//! ```text
//! shortline-snapshot FILE [--verify] [CODE ...]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use shortline_store::Snapshot;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: shortline-snapshot FILE [--verify] [CODE ...]");
        return ExitCode::from(2);
    };
    if path.as_os_str() == "--help" || path.as_os_str() == "-h" {
        println!("usage: shortline-snapshot FILE [--verify] [CODE ...]");
        println!(
            "checks every block and prints a snapshot's header and counts; --verify decodes every record;"
        );
        println!("each CODE is looked up and printed");
        return ExitCode::SUCCESS;
    }
    let snapshot = match Snapshot::open_verified(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let info = snapshot.info();
    println!("file: {}", path.display());
    println!("sequence: {}", info.sequence.0);
    println!("records: {}", info.record_count);
    println!("index slots: {}", info.slot_count);
    println!("file size bytes: {}", info.file_size_bytes);
    println!("records size bytes: {}", info.records_size_bytes);
    println!("created at unix ms: {}", info.created_at_unix_ms);
    match snapshot.delta_of() {
        Some(of) => println!(
            "kind: delta over base {}, after sequence {}",
            of.base, of.parent.0
        ),
        None => println!("kind: base, id {}", snapshot.base_id()),
    }
    let mut status = ExitCode::SUCCESS;
    for arg in args {
        let arg = arg.to_string_lossy();
        if arg == "--verify" {
            match snapshot.verify_records() {
                Ok(n) => println!("verify: ok, {n} records decode and are indexed"),
                Err(e) => {
                    println!("verify: failed: {e}");
                    status = ExitCode::FAILURE;
                }
            }
            continue;
        }
        match snapshot
            .find(arg.as_bytes())
            .map(shortline_store::Entry::link)
        {
            Some(None) => println!("{arg}: deleted (a tombstone in this delta)"),
            Some(Some(link)) => println!(
                "{arg}: id={} status={} redirect={} expires_at={} forward_query={} target={}",
                link.link_id.0,
                link.status.as_str(),
                link.redirect.code(),
                link.expires_at
                    .map_or_else(|| "none".to_owned(), |t| t.to_string()),
                link.forward_query,
                String::from_utf8_lossy(link.target()),
            ),
            None => {
                println!("{arg}: not found");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
