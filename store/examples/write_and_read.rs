//! Writes a small snapshot file and looks codes up in it.
//!
//! ```text
//! cargo run -p shortline-store --example write_and_read -- /tmp/demo.snap
//! ```

use std::path::PathBuf;

use shortline_store::{
    Code, LinkId, LinkRecord, LinkStatus, RedirectStatus, Seq, Snapshot, Target, write_snapshot,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os().nth(1).map_or_else(
        || std::env::temp_dir().join("shortline-demo.snap"),
        PathBuf::from,
    );
    let mut docs = LinkRecord::new(
        Code::parse("docs")?,
        Target::parse("https://example.com/docs")?,
        LinkId(1),
    );
    docs.redirect = RedirectStatus::Permanent;
    let mut promo = LinkRecord::new(
        Code::parse("promo-2026")?,
        Target::parse("https://example.com/sale")?,
        LinkId(2),
    );
    promo.expires_at = Some(1_798_761_600);
    promo.forward_query = true;
    let mut gone = LinkRecord::new(
        Code::parse("Xy_9")?,
        Target::parse("https://example.org/")?,
        LinkId(3),
    );
    gone.status = LinkStatus::Disabled;
    let stats = write_snapshot(&path, Seq(42), [&docs, &promo, &gone])?;
    println!(
        "wrote {} links, {} bytes, to {}",
        stats.record_count,
        stats.file_size_bytes,
        path.display()
    );

    let snapshot = Snapshot::open(&path)?;
    for code in ["docs", "promo-2026", "Xy_9", "missing"] {
        match snapshot.get(code.as_bytes()) {
            Some(link) => println!(
                "{code} -> {} ({}, {})",
                link.target_str().unwrap_or("?"),
                link.redirect.code(),
                link.status.as_str()
            ),
            None => println!("{code} -> not found"),
        }
    }
    Ok(())
}
