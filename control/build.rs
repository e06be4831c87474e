//! With the `fdb` feature, points the linker and the loader at the
//! FoundationDB client library (`libfdb_c.so`): the folder `FDB_LIB_DIR`
//! names, else a FoundationDB build kept beside the workspace
//! (`../shared/fdb/lib`), else nothing, and the system's library path
//! finds the one FoundationDB's `foundationdb-clients` package installs.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=FDB_LIB_DIR");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_FDB").is_none() {
        return;
    }
    let beside = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../shared/fdb/lib");
    let dir = std::env::var_os("FDB_LIB_DIR").map_or(beside, PathBuf::from);
    let library = dir.join("libfdb_c.so");
    println!("cargo::rerun-if-changed={}", library.display());
    if !library.is_file() {
        return;
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    println!("cargo::rustc-link-search=native={}", dir.display());
    // The binaries and tests find the library where they were linked
    // against it, without LD_LIBRARY_PATH.
    println!("cargo::rustc-link-arg=-Wl,-rpath,{}", dir.display());
}
