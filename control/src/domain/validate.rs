//! Target URL and field validation. Nothing here touches the network: no DNS,
//! no fetch. Every refusal names the field and the reason.

use shortline_store::Target;
use url::{Host, Url};

use crate::config::Config;
use crate::domain::Error;

/// Checks targets against the configured policy.
#[derive(Debug, Clone)]
pub struct Validator {
    schemes: Vec<String>,
    url_length_max: usize,
    /// Hosts of the shortener itself, lowercase ASCII (punycode).
    own_hosts: Vec<String>,
    blocked_domains: Vec<String>,
}

/// Lowercase ASCII form of a domain as given in configuration.
fn normalise_domain(domain: &str) -> Option<String> {
    let trimmed = domain.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return None;
    }
    idna::domain_to_ascii(trimmed).ok()
}

/// Whether `host` is `domain` or one of its subdomains.
#[must_use]
pub fn host_matches(host: &str, domain: &str) -> bool {
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

/// Why a host looks like another one (an IDN homograph), if it does.
///
/// A label may not mix scripts (Latin `a` with Cyrillic `р`), and a label in
/// another script may not be confusable, character for character, with a
/// plain ASCII label (the Cyrillic `аррӏе` that renders as `apple`): the
/// confusable skeletons of Unicode TR39.
#[must_use]
pub fn homograph(ascii_host: &str) -> Option<String> {
    use unicode_security::{MixedScript, skeleton};
    let (unicode, result) = idna::domain_to_unicode(ascii_host);
    if result.is_err() {
        return Some(format!(
            "host {ascii_host:?} is not a valid internationalised name"
        ));
    }
    for label in unicode.split('.').filter(|l| !l.is_ascii()) {
        if !label.is_single_script() {
            return Some(format!(
                "host label {label:?} mixes scripts, the disguise of an IDN homograph"
            ));
        }
        let look_alike: String = skeleton(label).collect();
        if look_alike.is_ascii() {
            return Some(format!(
                "host label {label:?} imitates the ASCII name {look_alike:?} (an IDN homograph)"
            ));
        }
    }
    None
}

impl Validator {
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let mut own_hosts: Vec<String> = config
            .short_domains
            .iter()
            .filter_map(|d| normalise_domain(d))
            .collect();
        if let Some(host) = Url::parse(&config.public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            own_hosts.push(host.to_ascii_lowercase());
        }
        Self {
            schemes: config
                .allowed_schemes
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            url_length_max: config.url_length_max,
            own_hosts,
            blocked_domains: config
                .blocked_domains
                .iter()
                .filter_map(|d| normalise_domain(d))
                .collect(),
        }
    }

    /// Checks a target and returns its normalised form (host in punycode).
    pub fn target(&self, raw: &str) -> Result<Target, Error> {
        let refuse = |reason: String| Err(Error::invalid("url", reason));
        if raw.is_empty() {
            return refuse("url is required".into());
        }
        if raw.len() > self.url_length_max {
            return refuse(format!(
                "url is {} bytes long, the limit is {}",
                raw.len(),
                self.url_length_max
            ));
        }
        if let Some(reason) = character_refusal(raw) {
            return refuse(reason);
        }
        let url = match Url::parse(raw) {
            Ok(url) => url,
            Err(url::ParseError::RelativeUrlWithoutBase) => {
                return refuse("url must be absolute, with a scheme such as https://".into());
            }
            Err(e) => return refuse(format!("url does not parse: {e}")),
        };
        if !self.schemes.iter().any(|s| s == url.scheme()) {
            return refuse(format!(
                "scheme {:?} is not allowed; allowed: {}",
                url.scheme(),
                self.schemes.join(", ")
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return refuse("url must not contain credentials (user:password@)".into());
        }
        let host = match url.host() {
            Some(Host::Domain(d)) if !d.is_empty() => d.to_ascii_lowercase(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => format!("[{ip}]"),
            _ => return refuse("url has no host".into()),
        };
        let bare_host = host.trim_end_matches('.');
        if let Some(reason) = homograph(bare_host) {
            return refuse(reason);
        }
        if let Some(own) = self
            .own_hosts
            .iter()
            .find(|own| host_matches(bare_host, own))
        {
            return refuse(format!(
                "url points at this shortener ({own}); links to short links are refused"
            ));
        }
        if let Some(blocked) = self
            .blocked_domains
            .iter()
            .find(|d| host_matches(bare_host, d))
        {
            return refuse(format!("domain {blocked} is blocked"));
        }
        let normalised = url.as_str();
        if normalised.len() > self.url_length_max {
            return refuse(format!(
                "url is {} bytes long once normalised, the limit is {}",
                normalised.len(),
                self.url_length_max
            ));
        }
        Target::parse(normalised).map_err(|e| Error::invalid("url", e.to_string()))
    }
}

/// Why the characters of a raw target are refused, if they are: control
/// characters, bidirectional overrides and whitespace. Checked before
/// parsing, because the url crate silently drops tabs and newlines.
fn character_refusal(raw: &str) -> Option<String> {
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Some(format!(
            "url contains the control character U+{:04X}",
            c as u32
        ));
    }
    // Bidirectional overrides disguise what a URL shows (`gnp.exe`).
    if let Some(c) = raw
        .chars()
        .find(|c| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    {
        return Some(format!(
            "url contains the bidirectional control character U+{:04X}",
            c as u32
        ));
    }
    if raw.chars().any(char::is_whitespace) {
        return Some("url contains whitespace".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn validator() -> Validator {
        let mut config = Config::load_from(None, &[], &Overrides::default()).unwrap();
        config.public_url = "https://sho.rt".into();
        config.short_domains = vec!["s.example".into()];
        config.blocked_domains = vec!["evil.example".into()];
        Validator::new(&config)
    }

    fn refusal(raw: &str) -> String {
        match validator().target(raw) {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, "url");
                reason
            }
            other => panic!("{raw:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn good_urls_are_normalised() {
        let v = validator();
        assert_eq!(
            v.target("https://example.com").unwrap().as_str(),
            "https://example.com/"
        );
        assert_eq!(
            v.target("http://bücher.example/a?b=c#d").unwrap().as_str(),
            "http://xn--bcher-kva.example/a?b=c#d"
        );
        // Real internationalised names in one script are fine.
        for ok in [
            "https://пример.рф/",
            "https://例え.jp/",
            "https://café.example/",
        ] {
            assert!(v.target(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            v.target("https://EXAMPLE.com/Path").unwrap().as_str(),
            "https://example.com/Path"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        assert!(refusal("").contains("required"));
        assert!(refusal("javascript:alert(1)").contains("scheme"));
        assert!(refusal("data:text/html,x").contains("scheme"));
        assert!(refusal("ftp://example.com/").contains("scheme"));
        assert!(refusal("https://example.com/\r\nSet-Cookie:x").contains("control"));
        assert!(refusal("https://exa\tmple.com/").contains("control"));
        assert!(refusal("https://user:pw@example.com/").contains("credentials"));
        assert!(refusal("https://google.com@evil.example/").contains("credentials"));
        assert!(refusal("https://sho.rt/abc").contains("shortener"));
        assert!(refusal("https://x.s.example/abc").contains("shortener"));
        assert!(refusal("https://evil.example/").contains("blocked"));
        assert!(refusal("https://a.b.evil.example/").contains("blocked"));
        assert!(refusal("example.com/path").contains("absolute"));
        assert!(refusal("/relative").contains("absolute"));
        assert!(refusal(&format!("https://example.com/{}", "a".repeat(10_000))).contains("limit"));
        assert!(refusal("https://exa mple.com/").contains("whitespace"));
        // Cyrillic "а" among Latin letters; an all-Cyrillic "apple"; the same in punycode.
        assert!(refusal("https://\u{430}pple.com/").contains("homograph"));
        assert!(refusal("https://\u{430}\u{440}\u{440}\u{4cf}\u{435}.com/").contains("homograph"));
        assert!(refusal("https://xn--80ak6aa92e.com/").contains("homograph"));
        assert!(refusal("https://p\u{430}y\u{440}al\u{4e2d}.com/").contains("scripts"));
        assert!(
            validator().target("https://notevil.example/").is_ok(),
            "suffix without a dot is not a subdomain"
        );
    }
}
