//! Targeting rules and weighted splits: where a click on a link goes when
//! the link sends different clients to different places.
//!
//! A link may carry an ordered list of [`Rule`]s (all of a rule's
//! conditions must hold; the first rule that matches wins) and a list of
//! weighted [`Variant`]s, chosen per click when no rule matches. Without
//! either, the link's own target answers, and a lookup reads nothing more.
//!
//! In a snapshot the routing is one extension item of the record
//! (`extension::ROUTING`), and [`route`] evaluates it where it lies, in
//! the memory map: no allocation, no lock, no copy.
//!
//! The encoded value: a flags byte (bit 0: sticky), the rule count, each
//! rule (a condition count, each condition as a kind byte, a length byte
//! and its value, then the target as a `u16` length and its bytes), the
//! variant count, each variant (a `u16` weight, then its target as above).

use crate::code::Target;

/// Most rules a link holds.
pub const RULES_MAX: usize = 16;
/// Most variants a link holds.
pub const VARIANTS_MAX: usize = 8;
/// Most languages or countries one condition lists.
pub const LIST_MAX: usize = 32;
/// Longest query parameter name or value a condition names.
pub const QUERY_PART_MAX: usize = 100;

/// The names of the bits set in `mask`, from a `NAMES` table below
/// ([`device::NAMES`], [`os::NAMES`], [`browser::NAMES`]), in its order.
pub fn names_of(
    names: &'static [(&'static str, u8)],
    mask: u8,
) -> impl Iterator<Item = &'static str> {
    names
        .iter()
        .filter(move |(_, bit)| mask & bit != 0)
        .map(|(name, _)| *name)
}

/// Device types, as bits of a mask.
pub mod device {
    pub const MOBILE: u8 = 1;
    pub const TABLET: u8 = 2;
    pub const DESKTOP: u8 = 4;
    /// `(name, bit)` for each, as the API spells them.
    pub const NAMES: [(&str, u8); 3] =
        [("mobile", MOBILE), ("tablet", TABLET), ("desktop", DESKTOP)];
}

/// Operating systems, as bits of a mask.
pub mod os {
    pub const IOS: u8 = 1;
    pub const ANDROID: u8 = 2;
    pub const WINDOWS: u8 = 4;
    pub const MACOS: u8 = 8;
    pub const LINUX: u8 = 16;
    /// `(name, bit)` for each, as the API spells them.
    pub const NAMES: [(&str, u8); 5] = [
        ("ios", IOS),
        ("android", ANDROID),
        ("windows", WINDOWS),
        ("macos", MACOS),
        ("linux", LINUX),
    ];
}

/// Browsers, as bits of a mask.
pub mod browser {
    pub const CHROME: u8 = 1;
    pub const FIREFOX: u8 = 2;
    pub const SAFARI: u8 = 4;
    pub const EDGE: u8 = 8;
    pub const OPERA: u8 = 16;
    /// `(name, bit)` for each, as the API spells them.
    pub const NAMES: [(&str, u8); 5] = [
        ("chrome", CHROME),
        ("firefox", FIREFOX),
        ("safari", SAFARI),
        ("edge", EDGE),
        ("opera", OPERA),
    ];
}

/// How a link routes its clicks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Routing {
    /// Tried in order; the first whose conditions all hold answers.
    pub rules: Vec<Rule>,
    /// Chosen by weight, per click, when no rule matches.
    pub variants: Vec<Variant>,
    /// Whether a client keeps its variant (by a cookie) across clicks.
    pub sticky: bool,
}

/// Conditions and the target they send to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Rule {
    pub when: Conditions,
    pub target: Target,
}

/// What a rule asks of a click; every one given must hold. A mask of 0
/// and an empty list ask nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Conditions {
    /// [`device`] bits.
    pub devices: u8,
    /// [`os`] bits.
    pub os: u8,
    /// [`browser`] bits.
    pub browsers: u8,
    /// Language tags, lowercase (`en`, `pt-br`): the client's preferred
    /// language is one of them, or a regional form of one without a
    /// region (`en` holds for `en-GB`).
    pub languages: Vec<String>,
    /// Two-letter country codes, uppercase.
    pub countries: Vec<String>,
    /// A query parameter present, or equal to a value.
    pub query: Option<QueryCondition>,
    /// Unix seconds from which the rule holds.
    pub from: Option<i64>,
    /// Unix seconds from which it no longer holds.
    pub until: Option<i64>,
}

/// A query parameter the request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QueryCondition {
    pub name: String,
    /// `None`: present with any value.
    pub value: Option<String>,
}

/// A target of a split and its share.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Variant {
    pub weight: u16,
    pub target: Target,
}

/// Most bytes a link's routing takes encoded (its targets included).
pub const ENCODED_MAX: usize = 16 * 1024;

/// A [`Routing`] as a record carries it: encoded, so a lookup evaluates it
/// with [`route`] whether it lies in a snapshot or in the overlay. Never
/// empty: a link without rules and variants has none.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded(Box<[u8]>);

impl Encoded {
    /// Encodes `routing`; `None` when it routes nothing.
    #[must_use]
    pub fn new(routing: &Routing) -> Option<Self> {
        if routing.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        routing.encode(&mut out);
        Some(Self(out.into()))
    }

    /// Takes encoded bytes that decode, as read from a record.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Routing::decode(bytes)
            .filter(|r| !r.is_empty())
            .map(|_| Self(bytes.into()))
    }

    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The routing back as values.
    #[must_use]
    pub fn decode(&self) -> Routing {
        Routing::decode(&self.0).expect("an Encoded is built from a routing that encodes")
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.decode().fmt(f)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Encoded {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.decode().serialize(serializer)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Encoded {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only what a record can hold is refused here, not the API's
        // limits: a change the control plane sent is never turned away
        // for a limit this build does not share.
        let routing = Routing::deserialize(deserializer)?;
        let encoded = Self::new(&routing)
            .ok_or_else(|| serde::de::Error::custom("a routing that routes nothing"))?;
        if encoded.0.len() > ENCODED_MAX || Routing::decode(&encoded.0).as_ref() != Some(&routing) {
            return Err(serde::de::Error::custom(format!(
                "a routing a record cannot hold (at most {ENCODED_MAX} bytes, 255 rules, variants and conditions)"
            )));
        }
        Ok(encoded)
    }
}

/// Why a routing was refused: the field it concerns (`rules` or
/// `variants`) and a message naming the rule or variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CheckError {}

const KIND_DEVICES: u8 = 1;
const KIND_OS: u8 = 2;
const KIND_BROWSERS: u8 = 3;
const KIND_LANGUAGES: u8 = 4;
const KIND_COUNTRIES: u8 = 5;
const KIND_QUERY_PRESENT: u8 = 6;
const KIND_QUERY_EQUALS: u8 = 7;
const KIND_FROM: u8 = 8;
const KIND_UNTIL: u8 = 9;

const FLAG_STICKY: u8 = 1;

impl Routing {
    /// Whether it changes nothing: every click goes to the link's target.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.variants.is_empty()
    }

    /// Checks the limits and the shape of every condition. The message
    /// names the rule or variant (counted from 1) and what is wrong.
    pub fn check(&self) -> Result<(), CheckError> {
        let rules = |message| CheckError {
            field: "rules",
            message,
        };
        let variants = |message| CheckError {
            field: "variants",
            message,
        };
        if self.rules.len() > RULES_MAX {
            return Err(rules(format!("at most {RULES_MAX} rules")));
        }
        if self.variants.len() > VARIANTS_MAX {
            return Err(variants(format!("at most {VARIANTS_MAX} variants")));
        }
        if self.variants.len() == 1 {
            return Err(variants("a split needs two variants or more".into()));
        }
        for (i, variant) in self.variants.iter().enumerate() {
            if variant.weight == 0 {
                return Err(variants(format!(
                    "variant {}: weight must be at least 1",
                    i + 1
                )));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.when
                .check()
                .map_err(|e| rules(format!("rule {}: {e}", i + 1)))?;
        }
        let mut out = Vec::new();
        self.encode(&mut out);
        if out.len() > ENCODED_MAX {
            return Err(rules(format!(
                "the rules and variants take {} bytes; at most {ENCODED_MAX}",
                out.len()
            )));
        }
        Ok(())
    }

    /// Appends the encoded value (see the module's documentation).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(if self.sticky { FLAG_STICKY } else { 0 });
        out.push(self.rules.len() as u8);
        for rule in &self.rules {
            rule.when.encode(out);
            push_target(out, &rule.target);
        }
        out.push(self.variants.len() as u8);
        for variant in &self.variants {
            out.extend_from_slice(&variant.weight.to_le_bytes());
            push_target(out, &variant.target);
        }
    }

    /// Reads an encoded value back; `None` when it does not decode.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let sticky = r.u8()? & FLAG_STICKY != 0;
        let mut rules = Vec::new();
        for _ in 0..r.u8()? {
            let mut when = Conditions::default();
            for _ in 0..r.u8()? {
                let kind = r.u8()?;
                let len = r.u8()? as usize;
                let value = r.take(len)?;
                when.decode_one(kind, value)?;
            }
            let target = Target::parse(std::str::from_utf8(r.target()?).ok()?).ok()?;
            rules.push(Rule { when, target });
        }
        let mut variants = Vec::new();
        for _ in 0..r.u8()? {
            let weight = r.u16()?;
            let target = Target::parse(std::str::from_utf8(r.target()?).ok()?).ok()?;
            variants.push(Variant { weight, target });
        }
        r.0.is_empty().then_some(Self {
            rules,
            variants,
            sticky,
        })
    }
}

fn push_target(out: &mut Vec<u8>, target: &Target) {
    let bytes = target.as_str().as_bytes();
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

impl Conditions {
    fn check(&self) -> Result<(), String> {
        if self.languages.len() > LIST_MAX || self.countries.len() > LIST_MAX {
            return Err(format!(
                "at most {LIST_MAX} languages and {LIST_MAX} countries"
            ));
        }
        for tag in &self.languages {
            if !is_language_tag(tag) {
                return Err(format!("{tag:?} is not a language tag (`en`, `pt-BR`)"));
            }
        }
        if self.languages.iter().map(|t| t.len() + 1).sum::<usize>() > 255 {
            return Err("the languages are too long together".into());
        }
        for code in &self.countries {
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "{code:?} is not a two-letter country code (`US`, `DE`)"
                ));
            }
        }
        if let Some(query) = &self.query {
            let name_ok = !query.name.is_empty()
                && query.name.len() <= QUERY_PART_MAX
                && query
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.[]".contains(&b));
            if !name_ok {
                return Err(format!(
                    "query parameter {:?}: 1 to {QUERY_PART_MAX} characters of letters, digits and _-.[]",
                    query.name
                ));
            }
            if let Some(value) = &query.value
                && (value.len() > QUERY_PART_MAX || value.chars().any(char::is_control))
            {
                return Err(format!(
                    "query value: at most {QUERY_PART_MAX} characters, none of them control characters"
                ));
            }
        }
        if let (Some(from), Some(until)) = (self.from, self.until)
            && from >= until
        {
            return Err("the time window ends before it starts".into());
        }
        if *self == Self::default() {
            return Err("a rule needs at least one condition".into());
        }
        Ok(())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let count_at = out.len();
        out.push(0);
        let mut count = 0u8;
        let mut item = |out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]| {
            let len: usize = parts.iter().map(|p| p.len()).sum();
            out.push(kind);
            out.push(len as u8);
            for part in parts {
                out.extend_from_slice(part);
            }
            count += 1;
        };
        for (kind, mask) in [
            (KIND_DEVICES, self.devices),
            (KIND_OS, self.os),
            (KIND_BROWSERS, self.browsers),
        ] {
            if mask != 0 {
                item(out, kind, &[&[mask]]);
            }
        }
        if !self.languages.is_empty() {
            let joined = self.languages.join(",").to_ascii_lowercase();
            item(out, KIND_LANGUAGES, &[joined.as_bytes()]);
        }
        if !self.countries.is_empty() {
            let joined = self.countries.concat();
            item(out, KIND_COUNTRIES, &[joined.as_bytes()]);
        }
        match &self.query {
            Some(QueryCondition { name, value: None }) => {
                item(out, KIND_QUERY_PRESENT, &[name.as_bytes()]);
            }
            Some(QueryCondition {
                name,
                value: Some(value),
            }) => item(
                out,
                KIND_QUERY_EQUALS,
                &[&[name.len() as u8], name.as_bytes(), value.as_bytes()],
            ),
            None => {}
        }
        if let Some(from) = self.from {
            item(out, KIND_FROM, &[&from.to_le_bytes()]);
        }
        if let Some(until) = self.until {
            item(out, KIND_UNTIL, &[&until.to_le_bytes()]);
        }
        out[count_at] = count;
    }

    fn decode_one(&mut self, kind: u8, value: &[u8]) -> Option<()> {
        let text = || std::str::from_utf8(value).ok().map(str::to_owned);
        match kind {
            KIND_DEVICES => self.devices = *value.first()?,
            KIND_OS => self.os = *value.first()?,
            KIND_BROWSERS => self.browsers = *value.first()?,
            KIND_LANGUAGES => self.languages = text()?.split(',').map(str::to_owned).collect(),
            KIND_COUNTRIES => {
                self.countries = value
                    .chunks(2)
                    .map(|c| std::str::from_utf8(c).ok().map(str::to_owned))
                    .collect::<Option<_>>()?;
            }
            KIND_QUERY_PRESENT => {
                self.query = Some(QueryCondition {
                    name: text()?,
                    value: None,
                });
            }
            KIND_QUERY_EQUALS => {
                let (&name_len, rest) = value.split_first()?;
                let (name, wanted) = rest.split_at_checked(name_len as usize)?;
                self.query = Some(QueryCondition {
                    name: std::str::from_utf8(name).ok()?.to_owned(),
                    value: Some(std::str::from_utf8(wanted).ok()?.to_owned()),
                });
            }
            KIND_FROM => self.from = Some(i64::from_le_bytes(value.try_into().ok()?)),
            KIND_UNTIL => self.until = Some(i64::from_le_bytes(value.try_into().ok()?)),
            _ => return None,
        }
        Some(())
    }
}

/// `en`, `pt-br`, `zh-hant`: a primary subtag of 2 or 3 letters and
/// optional subtags of 1 to 8 letters or digits.
fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or_default();
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn target(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()? as usize;
        self.take(len)
    }
}

/// What a browser's `User-Agent` says, as [`device`], [`os`] and
/// [`browser`] bits (0 where it says nothing known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agent {
    pub device: u8,
    pub os: u8,
    pub browser: u8,
}

impl Agent {
    /// Reads the agent string: substring tests in the order that the
    /// common agents need (Edge and Opera say `Chrome` too, Chrome says
    /// `Safari`, Android says `Linux`). Each test scans the string, so
    /// callers that see the same agents again keep the answers
    /// (the proxy's `targeting::agent`).
    #[must_use]
    pub fn parse(agent: &[u8]) -> Self {
        let has = |needle: &[u8]| agent.windows(needle.len()).any(|w| w == needle);
        let os = if has(b"iPhone") || has(b"iPad") || has(b"iPod") {
            os::IOS
        } else if has(b"Android") {
            os::ANDROID
        } else if has(b"Windows") {
            os::WINDOWS
        } else if has(b"Macintosh") || has(b"Mac OS X") {
            os::MACOS
        } else if has(b"Linux") || has(b"X11") {
            os::LINUX
        } else {
            0
        };
        let device = if has(b"iPad") || has(b"Tablet") || (os == os::ANDROID && !has(b"Mobile")) {
            device::TABLET
        } else if has(b"Mobi") || has(b"iPhone") || has(b"iPod") {
            device::MOBILE
        } else if os != 0 {
            device::DESKTOP
        } else {
            0
        };
        let browser = if has(b"Edg/") || has(b"EdgA/") || has(b"EdgiOS/") || has(b"Edge/") {
            browser::EDGE
        } else if has(b"OPR/") || has(b"Opera") {
            browser::OPERA
        } else if has(b"Firefox/") || has(b"FxiOS/") {
            browser::FIREFOX
        } else if has(b"Chrome/") || has(b"CriOS/") || has(b"Chromium/") {
            browser::CHROME
        } else if has(b"Safari/") {
            browser::SAFARI
        } else {
            0
        };
        Self {
            device,
            os,
            browser,
        }
    }
}

/// What a click brings for the rules to look at.
#[derive(Clone, Copy, Default)]
pub struct Client<'a> {
    pub agent: Agent,
    /// The `Accept-Language` header, as sent.
    pub accept_language: &'a [u8],
    /// The query string, without `?`.
    pub query: &'a [u8],
    /// The client's country (two uppercase letters) when it can be known:
    /// asked only by a rule with countries, at most once per click.
    pub country: Option<&'a dyn Fn() -> Option<[u8; 2]>>,
    pub now: i64,
    /// Where the click falls in a split, uniform over `u32`: random per
    /// click, or kept by the client when the split is sticky.
    pub bucket: u32,
}

impl std::fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("agent", &self.agent)
            .field(
                "accept_language",
                &String::from_utf8_lossy(self.accept_language),
            )
            .field("query", &String::from_utf8_lossy(self.query))
            .field("country", &self.country.is_some())
            .field("now", &self.now)
            .field("bucket", &self.bucket)
            .finish()
    }
}

/// Where [`route`] sends a click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed<'a> {
    pub target: &'a [u8],
    /// The rule that matched (from 0).
    pub rule: Option<u8>,
    /// The variant chosen (from 0).
    pub variant: Option<u8>,
}

/// Where the encoded routing `encoded` sends `client`: the first rule
/// that holds, else a variant by `client.bucket`; `None` when neither
/// (the link's own target) or the bytes do not decode.
#[must_use]
pub fn route<'a>(encoded: &'a [u8], client: &Client<'_>) -> Option<Routed<'a>> {
    let country = std::cell::OnceCell::new();
    let country = || *country.get_or_init(|| client.country.and_then(|find| find()));
    let mut r = Reader(encoded);
    let _flags = r.u8()?;
    let rules = r.u8()?;
    for index in 0..rules {
        let mut holds = true;
        for _ in 0..r.u8()? {
            let kind = r.u8()?;
            let len = r.u8()? as usize;
            let value = r.take(len)?;
            holds = holds && condition_holds(kind, value, client, &country);
        }
        let target = r.target()?;
        if holds {
            return Some(Routed {
                target,
                rule: Some(index),
                variant: None,
            });
        }
    }
    let count = r.u8()?;
    if count == 0 {
        return None;
    }
    let variants = r.0;
    let mut total = 0u64;
    let mut scan = Reader(variants);
    for _ in 0..count {
        total += u64::from(scan.u16()?);
        scan.target()?;
    }
    let point = (u64::from(client.bucket) * total) >> 32;
    let mut reached = 0u64;
    let mut scan = Reader(variants);
    for index in 0..count {
        reached += u64::from(scan.u16()?);
        let target = scan.target()?;
        if point < reached {
            return Some(Routed {
                target,
                rule: None,
                variant: Some(index),
            });
        }
    }
    None
}

/// A click on a link with rules or a split that went to the link's own
/// target, as [`route_code`] writes it.
pub const ROUTE_OWN: u8 = 1;
const ROUTE_RULE: u8 = 2;
const ROUTE_VARIANT: u8 = 32;

/// One byte for where a click on a link with rules or a split went, for
/// analytics: [`ROUTE_OWN`], a rule or a variant. (0 is a plain link's.)
#[must_use]
pub fn route_code(routed: Option<&Routed<'_>>) -> u8 {
    match routed {
        Some(Routed {
            rule: Some(rule), ..
        }) => ROUTE_RULE + rule,
        Some(Routed {
            variant: Some(variant),
            ..
        }) => ROUTE_VARIANT + variant,
        _ => ROUTE_OWN,
    }
}

/// The name analytics shows for a [`route_code`]: `link` (its own
/// target), `rule N` or `variant N`, counted from 1; `None` for 0 and
/// for codes no route has.
#[must_use]
pub fn route_name(code: u8) -> Option<String> {
    let rules = ROUTE_RULE..ROUTE_RULE + RULES_MAX as u8;
    let variants = ROUTE_VARIANT..ROUTE_VARIANT + VARIANTS_MAX as u8;
    match code {
        ROUTE_OWN => Some("link".to_owned()),
        c if rules.contains(&c) => Some(format!("rule {}", c - ROUTE_RULE + 1)),
        c if variants.contains(&c) => Some(format!("variant {}", c - ROUTE_VARIANT + 1)),
        _ => None,
    }
}

/// Whether the encoded routing keeps a client's variant across clicks.
#[must_use]
pub fn is_sticky(encoded: &[u8]) -> bool {
    encoded.first().is_some_and(|f| f & FLAG_STICKY != 0)
}

fn condition_holds(
    kind: u8,
    value: &[u8],
    client: &Client<'_>,
    country: &dyn Fn() -> Option<[u8; 2]>,
) -> bool {
    let mask = || value.first().copied().unwrap_or(0);
    let time = || value.try_into().map(i64::from_le_bytes).ok();
    match kind {
        KIND_DEVICES => client.agent.device & mask() != 0,
        KIND_OS => client.agent.os & mask() != 0,
        KIND_BROWSERS => client.agent.browser & mask() != 0,
        KIND_LANGUAGES => preferred_language(client.accept_language).is_some_and(|preferred| {
            value
                .split(|&b| b == b',')
                .any(|t| language_matches(t, preferred))
        }),
        KIND_COUNTRIES => country().is_some_and(|c| value.chunks(2).any(|code| code == c)),
        KIND_QUERY_PRESENT => query_value(client.query, value).is_some(),
        KIND_QUERY_EQUALS => value.split_first().is_some_and(|(&n, rest)| {
            rest.split_at_checked(n as usize)
                .is_some_and(|(name, wanted)| {
                    query_value(client.query, name).is_some_and(|got| decoded_equals(got, wanted))
                })
        }),
        KIND_FROM => time().is_some_and(|from| client.now >= from),
        KIND_UNTIL => time().is_some_and(|until| client.now < until),
        _ => false,
    }
}

/// The language the client prefers most: the `Accept-Language` entry of
/// the highest quality above 0 (the first of equals), `*` aside.
fn preferred_language(header: &[u8]) -> Option<&[u8]> {
    let mut best: Option<(&[u8], u16)> = None;
    for entry in header.split(|&b| b == b',') {
        let mut parts = entry.split(|&b| b == b';');
        let tag = parts.next().unwrap_or_default().trim_ascii();
        if tag.is_empty() || tag == b"*" {
            continue;
        }
        let mut quality = 1000;
        for param in parts {
            if let Some(q) = param.trim_ascii().strip_prefix(b"q=") {
                quality = parse_quality(q);
            }
        }
        if quality > 0 && best.is_none_or(|(_, q)| quality > q) {
            best = Some((tag, quality));
        }
    }
    best.map(|(tag, _)| tag)
}

/// A q-value in thousandths; 0 for one that does not parse.
fn parse_quality(q: &[u8]) -> u16 {
    match q {
        [b'1', rest @ ..] if rest.iter().all(|&b| b == b'.' || b == b'0') => 1000,
        [b'0'] => 0,
        [b'0', b'.', digits @ ..] if digits.len() <= 3 && digits.iter().all(u8::is_ascii_digit) => {
            let mut value = 0u16;
            for i in 0..3 {
                value = value * 10 + digits.get(i).map_or(0, |d| u16::from(d - b'0'));
            }
            value
        }
        _ => 0,
    }
}

/// `en` holds for `en` and `en-GB`; `en-gb` only for `en-GB`.
fn language_matches(wanted: &[u8], preferred: &[u8]) -> bool {
    if wanted.is_empty() {
        return false;
    }
    match preferred.get(..wanted.len()) {
        Some(head) if head.eq_ignore_ascii_case(wanted) => {
            preferred.len() == wanted.len() || preferred[wanted.len()] == b'-'
        }
        _ => false,
    }
}

/// The raw value of the first `name` parameter of `query`.
fn query_value<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        decoded_equals(key, name).then_some(value)
    })
}

/// Whether `raw` (percent-encoded, `+` for space) decodes to `wanted`.
fn decoded_equals(raw: &[u8], wanted: &[u8]) -> bool {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let (mut i, mut j) = (0, 0);
    while i < raw.len() {
        let byte = match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    i += 2;
                    h << 4 | l
                }
                _ => b'%',
            },
            b'+' => b' ',
            other => other,
        };
        if wanted.get(j) != Some(&byte) {
            return false;
        }
        i += 1;
        j += 1;
    }
    j == wanted.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    const IPHONE: &[u8] = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    const PIXEL: &[u8] = b"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
    const GALAXY_TAB: &[u8] = b"Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const WINDOWS_EDGE: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0";
    const MAC_FIREFOX: &[u8] =
        b"Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:121.0) Gecko/20100101 Firefox/121.0";
    const LINUX_CHROME: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    #[test]
    fn agents_are_read_as_device_os_and_browser() {
        let cases: [(&[u8], u8, u8, u8); 7] = [
            (IPHONE, device::MOBILE, os::IOS, browser::SAFARI),
            (PIXEL, device::MOBILE, os::ANDROID, browser::CHROME),
            (GALAXY_TAB, device::TABLET, os::ANDROID, browser::CHROME),
            (WINDOWS_EDGE, device::DESKTOP, os::WINDOWS, browser::EDGE),
            (MAC_FIREFOX, device::DESKTOP, os::MACOS, browser::FIREFOX),
            (LINUX_CHROME, device::DESKTOP, os::LINUX, browser::CHROME),
            (b"curl/8.5.0", 0, 0, 0),
        ];
        for (agent, device, os, browser) in cases {
            assert_eq!(
                Agent::parse(agent),
                Agent {
                    device,
                    os,
                    browser
                },
                "{}",
                String::from_utf8_lossy(agent)
            );
        }
    }

    fn stores() -> Routing {
        Routing {
            rules: vec![
                Rule {
                    when: Conditions {
                        os: os::IOS,
                        ..Conditions::default()
                    },
                    target: target("https://apps.apple.com/app/1"),
                },
                Rule {
                    when: Conditions {
                        os: os::ANDROID,
                        devices: device::MOBILE | device::TABLET,
                        ..Conditions::default()
                    },
                    target: target("https://play.google.com/store/apps/details?id=x"),
                },
                Rule {
                    when: Conditions {
                        languages: vec!["de".into(), "pt-br".into()],
                        ..Conditions::default()
                    },
                    target: target("https://example.com/local"),
                },
                Rule {
                    when: Conditions {
                        query: Some(QueryCondition {
                            name: "ref".into(),
                            value: Some("news letter".into()),
                        }),
                        ..Conditions::default()
                    },
                    target: target("https://example.com/nl"),
                },
                Rule {
                    when: Conditions {
                        countries: vec!["FR".into(), "BE".into()],
                        from: Some(100),
                        until: Some(200),
                        ..Conditions::default()
                    },
                    target: target("https://example.com/fr-sale"),
                },
            ],
            variants: vec![
                Variant {
                    weight: 1,
                    target: target("https://example.com/a"),
                },
                Variant {
                    weight: 3,
                    target: target("https://example.com/b"),
                },
            ],
            sticky: true,
        }
    }

    fn encoded(routing: &Routing) -> Vec<u8> {
        let mut out = Vec::new();
        routing.encode(&mut out);
        out
    }

    fn to<'a>(bytes: &'a [u8], client: &Client<'_>) -> (&'a str, Option<u8>, Option<u8>) {
        let routed = route(bytes, client).expect("routed");
        (
            std::str::from_utf8(routed.target).unwrap(),
            routed.rule,
            routed.variant,
        )
    }

    #[test]
    fn the_encoding_round_trips_and_is_checked() {
        let routing = stores();
        routing.check().unwrap();
        let bytes = encoded(&routing);
        assert_eq!(Routing::decode(&bytes), Some(routing));
        assert!(is_sticky(&bytes));
        for cut in 0..bytes.len() {
            assert_eq!(Routing::decode(&bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn the_first_rule_that_holds_wins_else_a_variant_by_weight() {
        let bytes = encoded(&stores());
        let client = |agent: &[u8]| Client {
            agent: Agent::parse(agent),
            now: 150,
            ..Client::default()
        };
        assert_eq!(to(&bytes, &client(IPHONE)).1, Some(0));
        assert_eq!(to(&bytes, &client(PIXEL)).1, Some(1));
        assert_eq!(to(&bytes, &client(GALAXY_TAB)).1, Some(1));
        let german = Client {
            accept_language: b"fr;q=0.5, de-AT;q=0.9, en;q=0.8",
            ..client(MAC_FIREFOX)
        };
        assert_eq!(to(&bytes, &german).0, "https://example.com/local");
        let portuguese = Client {
            accept_language: b"pt-BR",
            ..client(MAC_FIREFOX)
        };
        assert_eq!(to(&bytes, &portuguese).1, Some(2));
        let portugal = Client {
            accept_language: b"pt-PT,pt;q=0.9",
            ..client(MAC_FIREFOX)
        };
        assert_eq!(
            to(&bytes, &portugal).1,
            None,
            "pt-br does not hold for pt-PT"
        );
        let newsletter = Client {
            query: b"x=1&ref=news%20letter",
            ..client(WINDOWS_EDGE)
        };
        assert_eq!(to(&bytes, &newsletter).1, Some(3));
        let plus = Client {
            query: b"ref=news+letter",
            ..client(WINDOWS_EDGE)
        };
        assert_eq!(to(&bytes, &plus).1, Some(3));
        let other_value = Client {
            query: b"ref=news",
            ..client(WINDOWS_EDGE)
        };
        assert_eq!(to(&bytes, &other_value).1, None);
        let in_france = || Some(*b"FR");
        let france = |now| Client {
            country: Some(&in_france),
            now,
            ..client(LINUX_CHROME)
        };
        assert_eq!(to(&bytes, &france(100)).1, Some(4));
        assert_eq!(to(&bytes, &france(199)).1, Some(4));
        assert_eq!(to(&bytes, &france(200)).1, None, "the window has ended");
        assert_eq!(to(&bytes, &france(99)).1, None, "the window has not begun");

        // No rule: one click in four to `a`, by bucket.
        let at = |bucket| Client {
            bucket,
            ..client(LINUX_CHROME)
        };
        assert_eq!(to(&bytes, &at(0)), ("https://example.com/a", None, Some(0)));
        assert_eq!(to(&bytes, &at(u32::MAX / 4 - 1)).2, Some(0));
        assert_eq!(to(&bytes, &at(u32::MAX / 4 + 1)).2, Some(1));
        assert_eq!(to(&bytes, &at(u32::MAX)).2, Some(1));
    }

    #[test]
    fn routes_have_one_byte_and_a_name() {
        let at = |rule, variant| Routed {
            target: b"",
            rule,
            variant,
        };
        let named = |routed: Option<&Routed<'_>>| route_name(route_code(routed)).unwrap();
        assert_eq!(named(None), "link");
        assert_eq!(named(Some(&at(Some(0), None))), "rule 1");
        assert_eq!(named(Some(&at(Some(15), None))), "rule 16");
        assert_eq!(named(Some(&at(None, Some(7)))), "variant 8");
        assert_eq!(route_name(0), None);
        assert_eq!(route_name(18), None);
        assert_eq!(route_name(40), None);
    }

    /// A record from the control plane is taken whatever the API's limits
    /// (a newer control may allow more), but never one a record cannot hold.
    #[cfg(feature = "serde")]
    #[test]
    fn a_record_takes_any_routing_it_can_hold() {
        let mut many = stores();
        many.rules = vec![many.rules[0].clone(); RULES_MAX + 4];
        assert!(many.check().is_err());
        let json = serde_json::to_string(&many).unwrap();
        let taken: Encoded = serde_json::from_str(&json).unwrap();
        assert_eq!(taken.decode(), many);

        let mut long = stores();
        long.rules[2].when.languages = vec!["en".into(); 200];
        let json = serde_json::to_string(&long).unwrap();
        let refused = serde_json::from_str::<Encoded>(&json).unwrap_err();
        assert!(
            refused.to_string().contains("a record cannot hold"),
            "{refused}"
        );
        let empty = serde_json::to_string(&Routing::default()).unwrap();
        assert!(serde_json::from_str::<Encoded>(&empty).is_err());
    }

    #[test]
    fn rules_without_variants_fall_back_to_the_link() {
        let mut routing = stores();
        routing.variants.clear();
        let bytes = encoded(&routing);
        assert_eq!(route(&bytes, &Client::default()), None);
    }

    #[test]
    fn quality_values_pick_the_preferred_language() {
        assert_eq!(preferred_language(b"en-US,en;q=0.9"), Some(&b"en-US"[..]));
        assert_eq!(preferred_language(b"*, fr;q=0.1"), Some(&b"fr"[..]));
        assert_eq!(preferred_language(b"de;q=0, it;q=0.3"), Some(&b"it"[..]));
        assert_eq!(
            preferred_language(b"da, en-gb;q=0.8, en;q=0.7"),
            Some(&b"da"[..])
        );
        assert_eq!(preferred_language(b"de;q=0"), None);
        assert_eq!(preferred_language(b""), None);
        assert_eq!(parse_quality(b"0.25"), 250);
        assert_eq!(parse_quality(b"1.000"), 1000);
        assert_eq!(parse_quality(b"2"), 0);
    }

    #[test]
    fn limits_and_shapes_are_refused_naming_the_rule() {
        let mut routing = stores();
        routing.rules[1].when.languages = vec!["english!".into()];
        assert!(routing.check().unwrap_err().message.starts_with("rule 2:"));
        let mut routing = stores();
        routing.rules[0].when = Conditions::default();
        assert_eq!(
            routing.check().unwrap_err().message,
            "rule 1: a rule needs at least one condition"
        );
        let mut routing = stores();
        routing.rules[4].when.until = Some(50);
        assert!(
            routing
                .check()
                .unwrap_err()
                .message
                .contains("ends before it starts")
        );
        let mut routing = stores();
        routing.variants[1].weight = 0;
        assert_eq!(
            routing.check().unwrap_err(),
            CheckError {
                field: "variants",
                message: "variant 2: weight must be at least 1".into()
            }
        );
        let mut routing = stores();
        routing.variants.truncate(1);
        assert!(routing.check().is_err());
        let mut routing = stores();
        routing.rules = vec![routing.rules[0].clone(); RULES_MAX + 1];
        assert!(routing.check().is_err());
        let mut routing = stores();
        routing.rules[0].when.countries = vec!["us".into()];
        assert!(
            routing
                .check()
                .unwrap_err()
                .message
                .contains("country code")
        );
    }
}
