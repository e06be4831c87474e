//! Short domains as the table carries them: a domain's settings are a
//! record of their own, keyed `.name` (and `.` for the default domain), so
//! they travel to proxies with the links, through the same snapshots,
//! deltas and change stream, and a proxy finds them with the same lock-free
//! lookup as a code.
//!
//! The answer to an ACME HTTP-01 challenge (RFC 8555, 8.3) is a record too,
//! keyed `~token`, whose target is the key authorization: every proxy
//! answers `/.well-known/acme-challenge/{token}` from its table.
//!
//! A link on a domain is keyed `name/code`, except on the domain that was
//! there before any other (its links kept their bare codes when domains
//! came in): that domain is not *scoped*.

use crate::code::{Code, CodeError, is_valid_domain};

/// The key of the default domain's settings.
pub const DEFAULT_KEY: &str = ".";

/// What a domain record's target starts with; the version of its encoding.
const TAG: &[u8] = b"shortline-domain/1";

/// The key of `domain`'s settings.
pub fn settings_key(domain: &str) -> Result<Code, CodeError> {
    Code::key(&format!(".{domain}"))
}

/// The key of the answer to the ACME HTTP-01 challenge `token`.
pub fn challenge_key(token: &str) -> Result<Code, CodeError> {
    Code::key(&format!("~{token}"))
}

/// The key of `code` on a domain: `domain/code` when the domain is scoped,
/// the bare code otherwise.
pub fn link_key(domain: &str, scoped: bool, code: &Code) -> Result<Code, CodeError> {
    if scoped {
        Code::key(&format!("{domain}/{code}"))
    } else {
        Ok(code.clone())
    }
}

/// A domain's settings as its record holds them, borrowed from the record
/// without allocating. A redirect is `None` where the built-in page answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainSettings<'a> {
    /// The domain's name, ASCII lowercase.
    pub name: &'a str,
    /// Whether its links are keyed `name/code`.
    pub scoped: bool,
    /// Whether plain HTTP requests are redirected to HTTPS.
    pub https_redirect: bool,
    /// `max-age` of the HSTS header sent over HTTPS; 0 sends none.
    pub hsts_max_age: u64,
    /// Where `/` redirects.
    pub root: Option<&'a str>,
    /// Where an unknown code redirects.
    pub not_found: Option<&'a str>,
    /// Where an expired or used-up link redirects.
    pub expired: Option<&'a str>,
}

impl<'a> DomainSettings<'a> {
    /// The record's target: space-separated `field=value` pairs after a
    /// versioned tag. Values never hold spaces: names are ASCII labels and
    /// redirect targets are normalised URLs, which escape them.
    #[must_use]
    pub fn encode(&self) -> String {
        let url = |u: Option<&str>| u.unwrap_or("-").to_owned();
        format!(
            "{} name={} scoped={} https_redirect={} hsts={} root={} not_found={} expired={}",
            std::str::from_utf8(TAG).expect("ASCII"),
            self.name,
            u8::from(self.scoped),
            u8::from(self.https_redirect),
            self.hsts_max_age,
            url(self.root),
            url(self.not_found),
            url(self.expired),
        )
    }

    /// Reads a record's target; `None` when it is not a domain record this
    /// build understands (a newer version answers as if absent).
    #[must_use]
    pub fn parse(target: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(target).ok()?;
        let mut fields = text.split(' ');
        if fields.next()?.as_bytes() != TAG {
            return None;
        }
        let mut settings = Self {
            name: "",
            scoped: false,
            https_redirect: false,
            hsts_max_age: 0,
            root: None,
            not_found: None,
            expired: None,
        };
        let url = |value: &'a str| (value != "-").then_some(value);
        for field in fields {
            let (name, value) = field.split_once('=')?;
            match name {
                "name" => settings.name = value,
                "scoped" => settings.scoped = value == "1",
                "https_redirect" => settings.https_redirect = value == "1",
                "hsts" => settings.hsts_max_age = value.parse().ok()?,
                "root" => settings.root = url(value),
                "not_found" => settings.not_found = url(value),
                "expired" => settings.expired = url(value),
                // A field from a newer build: ignored, as documented.
                _ => {}
            }
        }
        is_valid_domain(settings.name.as_bytes()).then_some(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_their_encoding() {
        let settings = DomainSettings {
            name: "go.acme.com",
            scoped: true,
            https_redirect: true,
            hsts_max_age: 31_536_000,
            root: Some("https://acme.com/"),
            not_found: None,
            expired: Some("https://acme.com/expired?x=%20"),
        };
        let text = settings.encode();
        assert_eq!(DomainSettings::parse(text.as_bytes()), Some(settings));
        assert!(crate::Target::parse(&text).is_ok(), "a storable target");
        let newer = format!("{text} colour=blue");
        assert_eq!(DomainSettings::parse(newer.as_bytes()), Some(settings));
        for bad in [
            "",
            "https://example.com/",
            "shortline-domain/2 name=a",
            "shortline-domain/1 name=A",
            "shortline-domain/1 hsts=x name=a",
        ] {
            assert_eq!(DomainSettings::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn keys_follow_the_domain_scope() {
        let code = Code::parse("sale").unwrap();
        assert_eq!(
            link_key("go.acme.com", true, &code).unwrap().as_str(),
            "go.acme.com/sale"
        );
        assert_eq!(
            link_key("acme.link", false, &code).unwrap().as_str(),
            "sale"
        );
        assert_eq!(settings_key("acme.link").unwrap().as_str(), ".acme.link");
        assert!(settings_key("Acme.link").is_err());
    }
}
