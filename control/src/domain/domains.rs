//! Short domains: the names links are served under. Codes and aliases are
//! unique per domain (`acme.link/sale` and `go.acme.com/sale` are two
//! links), and so are retired codes, because both are kept by the link's
//! table key ([`shortline_store::domain::link_key`]).
//!
//! One domain is the default: links created without a `domain` go there.
//! The first domain (made from `public_url` when domains came in, see
//! [`migrate`]) is not scoped: its links keep their bare codes, so nothing
//! stored before had to move.

use serde::{Deserialize, Serialize};
use shortline_store::domain::{DEFAULT_KEY, DomainSettings, link_key, settings_key};
use shortline_store::{Code, LinkId, LinkRecord, LinkStatus, RedirectStatus, Target};

use super::{Error, Outcome};
use crate::db::{ReadTxn, Space, StoreError, StoreResult, Txn, keys};
use crate::model::ChangeDoc;

/// Domains listed at most (a deployment has a handful).
pub const DOMAINS_MAX: usize = 1000;

/// A short domain as stored (JSON in the `Domains` space).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainDoc {
    /// ASCII, lowercase, without a trailing dot (`xn--` for IDN).
    pub name: String,
    /// Whether its links are keyed `name/code`; false only for the first.
    pub scoped: bool,
    /// Whether short links are `https://`.
    pub https: bool,
    /// Whether the plain listener redirects this domain to HTTPS.
    pub https_redirect: bool,
    /// HSTS `max-age` sent over HTTPS; 0 sends none.
    pub hsts_max_age: u64,
    /// Where `/` redirects; `None`: the built-in page.
    pub root_redirect: Option<Target>,
    /// Where an unknown code redirects; `None`: the built-in 404.
    pub not_found_redirect: Option<Target>,
    /// Where an expired or used-up link redirects; `None`: the built-in 410.
    pub expired_redirect: Option<Target>,
    /// The port short links name, when not the scheme's own (`public_url`'s).
    #[serde(default)]
    pub port: Option<u16>,
    /// Whether its certificate is ordered and renewed over ACME.
    #[serde(default)]
    pub acme: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl DomainDoc {
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("domain document: {e}")))
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a domain document always serialises")
    }

    /// The domain of bare codes in a store that has no domains yet.
    fn unscoped() -> Self {
        Self {
            name: String::new(),
            scoped: false,
            https: false,
            https_redirect: false,
            hsts_max_age: 0,
            root_redirect: None,
            not_found_redirect: None,
            expired_redirect: None,
            port: None,
            acme: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// The start of this domain's short links: scheme, name and port.
    #[must_use]
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        match self.port {
            Some(port) => format!("{scheme}://{}:{port}", self.name),
            None => format!("{scheme}://{}", self.name),
        }
    }

    /// The table key of `code` on this domain.
    #[must_use]
    pub fn key(&self, code: &Code) -> Code {
        link_key(&self.name, self.scoped, code).expect("a stored domain name is a valid key part")
    }

    /// The record proxies read this domain's settings from.
    #[must_use]
    pub fn record(&self, key: Code) -> LinkRecord {
        let settings = DomainSettings {
            name: &self.name,
            scoped: self.scoped,
            https_redirect: self.https_redirect,
            hsts_max_age: self.hsts_max_age,
            root: self.root_redirect.as_deref(),
            not_found: self.not_found_redirect.as_deref(),
            expired: self.expired_redirect.as_deref(),
        };
        let target = Target::parse(&settings.encode())
            .expect("names and normalised URLs make a storable target");
        let mut record = LinkRecord::new(key, target, LinkId(0));
        record.status = LinkStatus::Active;
        record.redirect = RedirectStatus::Found;
        record
    }
}

/// The domain and bare code a table key names: `go.acme.com/sale` is
/// `(Some("go.acme.com"), "sale")`, a bare `sale` is `(None, "sale")`.
#[must_use]
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((domain, code)) => (Some(domain), code),
        None => (None, key),
    }
}

/// A domain name as stored: an internationalised name in its ASCII
/// (`xn--`) form, lowercase, without a trailing dot; no port, path or
/// scheme.
pub fn normalize(name: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::Invalid {
        field: "name".into(),
        reason,
    };
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() || trimmed.contains(['/', ':', '@', '?', '#', ' ']) {
        return Err(invalid(format!(
            "{name:?} is not a domain name (give the name alone, like go.example.com)"
        )));
    }
    let ascii = idna::domain_to_ascii(trimmed)
        .map_err(|_| invalid(format!("{name:?} is not a valid domain name")))?;
    if !shortline_store::is_valid_domain(ascii.as_bytes()) {
        return Err(invalid(format!(
            "{name:?} is not a usable domain name: labels of letters, digits and inner '-', at most {} bytes in all",
            shortline_store::DOMAIN_LEN_MAX
        )));
    }
    Ok(ascii)
}

/// A domain, if it exists.
pub fn get(txn: &dyn ReadTxn, name: &str) -> StoreResult<Option<DomainDoc>> {
    txn.get(Space::Domains, name.as_bytes())?
        .map(|bytes| DomainDoc::decode(&bytes))
        .transpose()
}

/// The default domain's name, once there are domains.
pub fn default_name(txn: &dyn ReadTxn) -> StoreResult<Option<String>> {
    Ok(txn
        .get(Space::Meta, keys::DEFAULT_DOMAIN)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// Every domain, by name.
pub fn list(txn: &dyn ReadTxn) -> StoreResult<Vec<DomainDoc>> {
    txn.range(Space::Domains, b"", &[0xff], DOMAINS_MAX)?
        .iter()
        .map(|(_, value)| DomainDoc::decode(value))
        .collect()
}

/// The domain a link is created on or addressed by: `name`, or the default.
pub fn resolve(txn: &dyn ReadTxn, name: Option<&str>) -> Outcome<DomainDoc> {
    let name = match name {
        Some(name) => match normalize(name) {
            Ok(name) => name,
            Err(e) => return Ok(Err(field_error(e, "domain"))),
        },
        None => match default_name(txn)? {
            Some(name) => name,
            // A store from before domains, not yet started by a control
            // plane (which makes the first one): bare codes, as then.
            None => return Ok(Ok(DomainDoc::unscoped())),
        },
    };
    Ok(get(txn, &name)?.ok_or_else(|| Error::Invalid {
        field: "domain".into(),
        reason: format!("{name:?} is not a short domain here (see /api/v1/domains)"),
    }))
}

fn field_error(error: Error, field: &str) -> Error {
    match error {
        Error::Invalid { reason, .. } => Error::Invalid {
            field: field.into(),
            reason,
        },
        other => other,
    }
}

/// Writes `doc` and logs its record (and the default's, when it is the
/// default) for the proxies.
fn write(txn: &mut dyn Txn, doc: &DomainDoc, is_default: bool) -> StoreResult<()> {
    txn.set(Space::Domains, doc.name.as_bytes(), &doc.encode())?;
    let key = settings_key(&doc.name).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    log(txn, key.clone(), Some(doc.record(key)))?;
    if is_default {
        txn.set(Space::Meta, keys::DEFAULT_DOMAIN, doc.name.as_bytes())?;
        let key = Code::key(DEFAULT_KEY).expect("the default key is a key");
        log(txn, key.clone(), Some(doc.record(key)))?;
    }
    Ok(())
}

fn log(txn: &mut dyn Txn, code: Code, record: Option<LinkRecord>) -> StoreResult<()> {
    txn.log_change(
        &ChangeDoc {
            code,
            record,
            event: None,
        }
        .encode(),
    )
}

/// Adds a domain; the first one is the default whatever `make_default` says.
pub fn create(txn: &mut dyn Txn, mut doc: DomainDoc, make_default: bool) -> Outcome<DomainDoc> {
    if get(txn, &doc.name)?.is_some() {
        return Ok(Err(Error::Conflict {
            field: "name".into(),
            reason: format!("domain {:?} exists", doc.name),
        }));
    }
    let first = default_name(txn)?.is_none();
    doc.scoped = !first;
    write(txn, &doc, first || make_default)?;
    Ok(Ok(doc))
}

/// Changes to a domain's settings; absent fields are left alone.
#[derive(Debug, Default, Clone)]
pub struct DomainPatch {
    pub make_default: bool,
    pub https: Option<bool>,
    pub https_redirect: Option<bool>,
    pub hsts_max_age: Option<u64>,
    pub acme: Option<bool>,
    pub root_redirect: Option<Option<Target>>,
    pub not_found_redirect: Option<Option<Target>>,
    pub expired_redirect: Option<Option<Target>>,
}

/// Applies `patch` to the domain `name`.
pub fn patch(txn: &mut dyn Txn, name: &str, patch: &DomainPatch, now: i64) -> Outcome<DomainDoc> {
    let Some(mut doc) = get(txn, name)? else {
        return Ok(Err(Error::NotFound));
    };
    let set = |field: &mut Option<Target>, value: &Option<Option<Target>>| {
        if let Some(value) = value {
            field.clone_from(value);
        }
    };
    set(&mut doc.root_redirect, &patch.root_redirect);
    set(&mut doc.not_found_redirect, &patch.not_found_redirect);
    set(&mut doc.expired_redirect, &patch.expired_redirect);
    doc.https = patch.https.unwrap_or(doc.https);
    doc.https_redirect = patch.https_redirect.unwrap_or(doc.https_redirect);
    doc.hsts_max_age = patch.hsts_max_age.unwrap_or(doc.hsts_max_age);
    doc.acme = patch.acme.unwrap_or(doc.acme);
    doc.updated_at = now;
    let is_default = patch.make_default || default_name(txn)?.as_deref() == Some(name);
    write(txn, &doc, is_default)?;
    Ok(Ok(doc))
}

/// Removes a domain that holds no links and is not the default. Its
/// retired codes stay retired, should the name come back.
pub fn delete(txn: &mut dyn Txn, name: &str) -> Outcome<()> {
    let Some(doc) = get(txn, name)? else {
        return Ok(Err(Error::NotFound));
    };
    let refuse = |reason: String| {
        Ok(Err(Error::Conflict {
            field: "name".into(),
            reason,
        }))
    };
    if default_name(txn)?.as_deref() == Some(name) {
        return refuse(format!(
            "{name:?} is the default domain; make another domain the default first"
        ));
    }
    if !doc.scoped {
        return refuse(format!(
            "{name:?} holds the links made before domains existed and cannot be removed"
        ));
    }
    let prefix = format!("{name}/");
    let end = crate::db::prefix_end(prefix.as_bytes());
    if !txn
        .range(Space::Links, prefix.as_bytes(), &end, 1)?
        .is_empty()
    {
        return refuse(format!("{name:?} still has links; delete them first"));
    }
    txn.clear(Space::Domains, name.as_bytes())?;
    let key = settings_key(name).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    log(txn, key, None)?;
    Ok(Ok(()))
}

/// Whether `host` (a target's host) is one of the short domains: a link
/// there would redirect to a short link, possibly itself.
pub fn is_short_domain(txn: &dyn ReadTxn, host: &str) -> StoreResult<bool> {
    Ok(txn.get(Space::Domains, host.as_bytes())?.is_some())
}

/// Makes the first domain from `public_url`, once: the links stored before
/// domains existed keep their bare codes and belong to it. Returns whether
/// it did.
pub fn migrate(txn: &mut dyn Txn, public_url: &str, now: i64) -> StoreResult<bool> {
    if txn.get(Space::Meta, keys::DOMAINS_MIGRATED)?.is_some() {
        return Ok(false);
    }
    let url = url::Url::parse(public_url)
        .map_err(|e| StoreError::Corrupt(format!("public_url {public_url:?}: {e}")))?;
    let host = url.host_str().unwrap_or("localhost");
    let name = normalize(host).map_err(|e| StoreError::Corrupt(format!("public_url: {e}")))?;
    let doc = DomainDoc {
        name,
        scoped: false,
        https: url.scheme() == "https",
        https_redirect: false,
        hsts_max_age: 0,
        root_redirect: None,
        not_found_redirect: None,
        expired_redirect: None,
        port: url.port(),
        acme: false,
        created_at: now,
        updated_at: now,
    };
    if default_name(txn)?.is_none()
        && let Err(e) = create(txn, doc, true)?
    {
        return Err(StoreError::Corrupt(format!("first domain: {e}")));
    }
    txn.set(Space::Meta, keys::DOMAINS_MIGRATED, b"1")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_to_ascii_lowercase() {
        assert_eq!(normalize("Go.Acme.COM.").unwrap(), "go.acme.com");
        assert_eq!(
            normalize("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        for bad in [
            "",
            "http://a.example",
            "a.example:8080",
            "a b",
            "a..b",
            "-a.example",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert!(normalize(&format!("{}.example", "a".repeat(200))).is_err());
    }

    #[test]
    fn keys_split_into_domain_and_code() {
        assert_eq!(split_key("go.acme.com/sale"), (Some("go.acme.com"), "sale"));
        assert_eq!(split_key("sale"), (None, "sale"));
    }
}
