//! Who clicked: the user agent parsed into browser, OS, device class and
//! whether a person, a crawler or a link-preview fetcher sent it, and the
//! referrer reduced to its host.
//!
//! User agents are parsed by `woothee` (a maintained, data-driven parser
//! shared by several languages). Link-preview fetchers (chat apps and social
//! networks unfurling a pasted link) are recognised first from their
//! documented product tokens, since to the parser most are plain crawlers and
//! some look like browsers. Results are cached by user agent: real traffic
//! repeats a small set of agents, and parsing is the costly part of a click.

use std::collections::HashMap;

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

/// Whether a click came from a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Human,
    /// A crawler, monitor, script or HTTP library.
    Bot,
    /// A link-preview fetcher unfurling the link in a chat or a feed.
    Preview,
}

impl Class {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Bot => "bot",
            Self::Preview => "preview",
        }
    }
}

/// The kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    Other,
}

impl Device {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
            Self::Bot => "bot",
            Self::Other => "other",
        }
    }
}

/// A classified user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub class: Class,
    pub browser: &'static str,
    pub os: &'static str,
    pub device: Device,
}

/// Product tokens of link-preview fetchers, matched case-insensitively.
const PREVIEW_TOKENS: &[&str] = &[
    "facebookexternalhit",
    "facebookcatalog",
    "slackbot-linkexpanding",
    "slack-imgproxy",
    "twitterbot",
    "linkedinbot",
    "whatsapp",
    "telegrambot",
    "discordbot",
    "skypeuripreview",
    "redditbot",
    "embedly",
    "iframely",
    "vkshare",
    "pinterestbot",
    "mastodon",
    "bluesky cardyb",
    "google-pagerenderer",
    "microsoftpreview",
];

/// Tokens of scripts and HTTP libraries the parser does not list as crawlers.
const SCRIPT_TOKENS: &[&str] = &[
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "httpclient",
    "node-fetch",
    "axios/",
    "postmanruntime",
    "headlesschrome",
    "phantomjs",
    "bot/",
    "bot;",
    "bot)",
    "+http",
    "spider",
    "crawl",
];

/// Entries kept in the cache before it starts over.
const CACHE_ENTRIES_MAX: usize = 8192;

/// A user-agent classifier with a bounded cache.
pub struct Classifier {
    parser: woothee::parser::Parser,
    cache: HashMap<u64, Agent>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Interns the parser's names (a fixed data set) so agents hold `&'static str`.
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::OnceLock<std::sync::Mutex<HashMap<String, &'static str>>> =
        std::sync::OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let mut names = names.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&s) = names.get(name) {
        return s;
    }
    // The parser's vocabulary is a few hundred names; anything else is not
    // interned, so a hostile agent cannot grow this map.
    if names.len() >= 4096 {
        return "Other";
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(name.to_owned(), leaked);
    leaked
}

impl Classifier {
    #[must_use]
    pub fn new() -> Self {
        Self {
            parser: woothee::parser::Parser::new(),
            cache: HashMap::new(),
        }
    }

    /// Classifies a user agent.
    pub fn classify(&mut self, user_agent: &str) -> Agent {
        let key = xxh3_64(user_agent.as_bytes());
        if let Some(agent) = self.cache.get(&key) {
            return agent.clone();
        }
        let agent = self.parse(user_agent);
        if self.cache.len() >= CACHE_ENTRIES_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, agent.clone());
        agent
    }

    fn parse(&self, user_agent: &str) -> Agent {
        let ua = user_agent.trim();
        let bot = |browser: &'static str, class: Class| Agent {
            class,
            browser,
            os: "Other",
            device: Device::Bot,
        };
        // No browser sends an empty user agent.
        if ua.is_empty() || ua == "-" {
            return bot("Other", Class::Bot);
        }
        if PREVIEW_TOKENS.iter().any(|t| contains_ignore_case(ua, t)) {
            let name = self
                .parser
                .parse(ua)
                .map(|r| r.name)
                .filter(|n| *n != woothee::woothee::VALUE_UNKNOWN)
                .map_or("Preview fetcher", intern);
            return bot(name, Class::Preview);
        }
        let parsed = self.parser.parse(ua);
        if let Some(r) = &parsed
            && r.category == "crawler"
        {
            return bot(intern(r.name), Class::Bot);
        }
        if SCRIPT_TOKENS.iter().any(|t| contains_ignore_case(ua, t)) {
            return bot("Other", Class::Bot);
        }
        let Some(r) = parsed else {
            return Agent {
                class: Class::Human,
                browser: "Other",
                os: "Other",
                device: Device::Other,
            };
        };
        let known = |s: &str| {
            if s == woothee::woothee::VALUE_UNKNOWN || s.is_empty() {
                "Other"
            } else {
                intern(s)
            }
        };
        let device = match r.category {
            "pc" => Device::Desktop,
            "smartphone" | "mobilephone" => {
                if r.os == "iPad"
                    || (r.os == "Android" && !contains_ignore_case(ua, "mobile"))
                    || contains_ignore_case(ua, "tablet")
                {
                    Device::Tablet
                } else {
                    Device::Mobile
                }
            }
            _ => Device::Other,
        };
        // Agents the parser cannot place at all are counted as people with
        // unknown details, not silently as bots.
        Agent {
            class: Class::Human,
            browser: known(r.name),
            os: known(r.os),
            device,
        }
    }
}

/// The referrer's host, lowercased, without `www.` and port; `direct` when
/// there is no referrer and `unknown` when it is not an absolute URL.
#[must_use]
pub fn referrer_host(referrer: &str) -> String {
    let referrer = referrer.trim();
    if referrer.is_empty() {
        return "direct".to_owned();
    }
    match url::Url::parse(referrer) {
        Ok(url) => match url.host_str() {
            Some(host) => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                host.strip_prefix("www.")
                    .map_or(host.clone(), str::to_owned)
            }
            None => "unknown".to_owned(),
        },
        Err(_) => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    pub const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
    pub const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
    pub const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";

    #[test]
    fn browsers_are_people_with_their_device() {
        let mut c = Classifier::new();
        let a = c.classify(CHROME_WINDOWS);
        assert_eq!(
            (a.class, a.browser, a.os, a.device),
            (Class::Human, "Chrome", "Windows 10", Device::Desktop)
        );
        let a = c.classify(SAFARI_IPHONE);
        assert_eq!(
            (a.class, a.browser, a.os, a.device),
            (Class::Human, "Safari", "iPhone", Device::Mobile)
        );
        assert_eq!(c.classify(SAFARI_IPAD).device, Device::Tablet);
        let a = c.classify(FIREFOX_LINUX);
        assert_eq!((a.browser, a.os), ("Firefox", "Linux"));
    }

    #[test]
    fn crawlers_scripts_and_previews_are_told_apart() {
        let mut c = Classifier::new();
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
            "",
        ] {
            assert_eq!(c.classify(ua).class, Class::Bot, "{ua:?}");
            assert_eq!(c.classify(ua).device, Device::Bot, "{ua:?}");
        }
        for ua in [
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "Twitterbot/1.0",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "WhatsApp/2.23.20.0",
            "TelegramBot (like TwitterBot)",
            "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        ] {
            assert_eq!(c.classify(ua).class, Class::Preview, "{ua:?}");
        }
    }

    #[test]
    fn the_cache_returns_what_the_parser_says_and_stays_bounded() {
        let mut c = Classifier::new();
        for i in 0..(CACHE_ENTRIES_MAX * 2) {
            let ua = format!("{CHROME_WINDOWS} build/{i}");
            assert_eq!(c.classify(&ua).browser, "Chrome");
        }
        assert!(c.cache.len() <= CACHE_ENTRIES_MAX);
    }

    #[test]
    fn referrers_reduce_to_their_host() {
        assert_eq!(referrer_host(""), "direct");
        assert_eq!(
            referrer_host("https://www.Example.com:8443/a?b"),
            "example.com"
        );
        assert_eq!(
            referrer_host("https://news.ycombinator.com/item?id=1"),
            "news.ycombinator.com"
        );
        assert_eq!(referrer_host("not a url"), "unknown");
        assert_eq!(referrer_host("android-app://com.slack"), "com.slack");
    }
}
