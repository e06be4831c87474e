//! The country of a click's address from a MaxMind-format database
//! (GeoLite2 or GeoIP2 Country or City, or any with `country.iso_code`):
//! control counts clicks by it, the proxy evaluates targeting rules with
//! countries by it. The address is looked up in memory and dropped; it is
//! never stored. A lookup reads the database in place and allocates
//! nothing.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use maxminddb::{PathElement, Reader};

/// A loaded country database.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl GeoIp {
    /// Opens a database file, checking that it is one.
    pub fn open(path: &Path) -> Result<Self> {
        let reader = Reader::open_readfile(path)
            .with_context(|| format!("cannot open the GeoIP database {}", path.display()))?;
        Ok(Self { reader })
    }

    /// Reads a database from memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let reader = Reader::from_source(bytes).context("not a MaxMind database")?;
        Ok(Self { reader })
    }

    /// The two uppercase letters of the address's country, if the database
    /// knows it. IPv4-mapped IPv6 addresses are looked up as IPv4.
    #[must_use]
    pub fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        let found = self.reader.lookup(ip).ok()?;
        let code: &str = found
            .decode_path(&[PathElement::Key("country"), PathElement::Key("iso_code")])
            .ok()
            .flatten()?;
        match code.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => None,
        }
    }
}
