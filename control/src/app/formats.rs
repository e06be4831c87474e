//! The files `shortline-control import` reads: its own CSV, and what
//! bit.ly, YOURLS, Shlink and Kutt export. Each is read a link at a time
//! into the create request it stands for ([`Row`]). What an export says
//! that Shortline cannot keep (a password, a ban, a start date still to
//! come) refuses the row with why, so nothing is dropped without a word.
//!
//! | format | file | a link's code and domain | visits |
//! |---|---|---|---|
//! | `csv` | header row; `url`, `code`, `domain`, `title`, `tags` (`a\|b`), `expires_at`, `max_clicks`, `redirect`, `created_at`, `visits` | `code`, `domain` | `visits` |
//! | `bitly` | `GET /v4/groups/{group}/bitlinks` pages (JSON) | `link`, and each of `custom_bitlinks` | none in the export |
//! | `yourls` | the `yourls_url` table as CSV or TSV with a header row, or `?action=stats` (JSON) | `keyword` or `shorturl` | `clicks` |
//! | `shlink` | the web client's CSV export, or `GET /rest/v3/short-urls` pages (JSON) | `shortUrl` (`shortCode`, `domain`) | `visits`, `visitsSummary.total` |
//! | `kutt` | `GET /api/v2/links` pages (JSON) | `link` (`address`, `domain`) | `visit_count` |
//!
//! JSON files may hold one page, several pages one after another (as
//! saved page by page), or an array of pages or of links. A link's domain
//! comes from its short URL unless `--domain` names one for every row.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::http::links::CreateLink;
use crate::http::routing::RuleBody;

/// What made the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Shortline's own columns.
    #[default]
    Csv,
    Bitly,
    Yourls,
    Shlink,
    Kutt,
}

/// One link of a file, as the create request it stands for.
#[derive(Debug)]
pub struct Row {
    pub request: CreateLink,
    /// Unix seconds; `None` for the time of the import.
    pub created_at: Option<i64>,
    /// Visits the old system counted: the link's starting click total.
    pub visits: u64,
    /// How a refusal names the row beyond its number (`code "abc": `), for
    /// files whose rows are not lines.
    pub label: String,
}

/// A row of the file: the link, or why it is refused.
pub type Item = Result<Row, String>;

/// The rows of a file, read one at a time, with how far into it.
#[allow(missing_debug_implementations)] // holds a boxed iterator
pub struct Rows {
    items: Box<dyn Iterator<Item = Result<Item>> + Send>,
    read: Arc<AtomicU64>,
    size: u64,
}

impl Iterator for Rows {
    type Item = Result<Item>;
    fn next(&mut self) -> Option<Self::Item> {
        self.items.next()
    }
}

impl Rows {
    /// The share of the file's bytes read so far, 0 to 1.
    #[must_use]
    pub fn fraction(&self) -> f64 {
        if self.size == 0 {
            return 1.0;
        }
        (self.read.load(Ordering::Relaxed) as f64 / self.size as f64).min(1.0)
    }

    /// Opens `path` as `format`; `domain` replaces every row's domain.
    pub fn open(path: &Path, format: Format, domain: Option<&str>) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let read = Arc::new(AtomicU64::new(0));
        let mut input = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: file,
                read: Arc::clone(&read),
            },
        );
        let json = {
            let start = input
                .fill_buf()
                .with_context(|| format!("cannot read {}", path.display()))?;
            let start = start.strip_prefix(b"\xef\xbb\xbf").unwrap_or(start);
            matches!(
                start.iter().find(|b| !b.is_ascii_whitespace()),
                Some(b'{' | b'[')
            )
        };
        let items: Box<dyn Iterator<Item = Result<Item>> + Send> = match (format, json) {
            (Format::Csv, true) => {
                bail!("the csv format is a CSV file with a header row, not JSON")
            }
            (Format::Csv | Format::Yourls | Format::Shlink, false) => {
                Box::new(csv_rows(input, format)?)
            }
            (Format::Bitly | Format::Kutt, false) => bail!(
                "a {} export is JSON (the API's list of links); this file is not",
                name(format)
            ),
            (_, true) => {
                drop(input);
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                // SAFETY: the map is only read, and an import's file is
                // not written while it runs (docs/import.md asks for a file
                // at rest). A file cut short under the map would end the
                // process with SIGBUS rather than be read past its end.
                let map = unsafe { memmap2::Mmap::map(&file) }
                    .with_context(|| format!("cannot map {}", path.display()))?;
                Box::new(JsonRows {
                    map,
                    offset: 0,
                    read: Arc::clone(&read),
                    format,
                    pending: VecDeque::new(),
                    page: 0,
                })
            }
        };
        let items: Box<dyn Iterator<Item = Result<Item>> + Send> = match domain {
            Some(domain) => {
                let domain = domain.to_owned();
                Box::new(items.map(move |item| {
                    item.map(|row| {
                        row.map(|mut row| {
                            row.request.domain = Some(domain.clone());
                            row
                        })
                    })
                }))
            }
            None => items,
        };
        Ok(Self { items, read, size })
    }
}

fn name(format: Format) -> &'static str {
    match format {
        Format::Csv => "csv",
        Format::Bitly => "bitly",
        Format::Yourls => "yourls",
        Format::Shlink => "shlink",
        Format::Kutt => "kutt",
    }
}

/// A reader that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A column of a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Url,
    Code,
    Domain,
    Title,
    Tags,
    ExpiresAt,
    MaxClicks,
    Redirect,
    CreatedAt,
    Visits,
    /// A whole short URL: its host is the domain, its path the code.
    ShortUrl,
    Ignored,
}

const CSV_COLUMNS: &[(&str, Field)] = &[
    ("url", Field::Url),
    ("code", Field::Code),
    ("domain", Field::Domain),
    ("title", Field::Title),
    ("tags", Field::Tags),
    ("expires_at", Field::ExpiresAt),
    ("max_clicks", Field::MaxClicks),
    ("redirect", Field::Redirect),
    ("created_at", Field::CreatedAt),
    ("visits", Field::Visits),
];

/// The `yourls_url` table.
const YOURLS_COLUMNS: &[(&str, Field)] = &[
    ("keyword", Field::Code),
    ("url", Field::Url),
    ("title", Field::Title),
    ("timestamp", Field::CreatedAt),
    ("ip", Field::Ignored),
    ("clicks", Field::Visits),
];

/// The Shlink web client's export.
const SHLINK_COLUMNS: &[(&str, Field)] = &[
    ("createdAt", Field::CreatedAt),
    ("shortUrl", Field::ShortUrl),
    ("shortCode", Field::Code),
    ("domain", Field::Domain),
    ("longUrl", Field::Url),
    ("title", Field::Title),
    ("tags", Field::Tags),
    ("visits", Field::Visits),
];

/// The columns of a CSV file, from its header row.
struct Columns {
    fields: Vec<(usize, Field)>,
    tag_separator: char,
    /// Whether rows are named by their code in refusals.
    label: bool,
}

impl Columns {
    fn from_header(header: &csv::StringRecord, format: Format) -> Result<Self> {
        let (known, tag_separator) = match format {
            Format::Yourls => (YOURLS_COLUMNS, ','),
            Format::Shlink => (SHLINK_COLUMNS, ','),
            _ => (CSV_COLUMNS, '|'),
        };
        let mut fields: Vec<(usize, Field)> = Vec::new();
        for (i, name) in header.iter().enumerate() {
            let name = name.trim().trim_start_matches('\u{feff}');
            let field = match known.iter().find(|(n, _)| *n == name) {
                Some((_, field)) => *field,
                // Another system's export may grow columns; ours may not.
                None if format != Format::Csv => Field::Ignored,
                None => bail!(
                    "unknown column {name:?}; the columns are {}",
                    known.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            };
            if field != Field::Ignored && fields.iter().any(|(_, f)| *f == field) {
                bail!("column {name:?} appears twice");
            }
            fields.push((i, field));
        }
        let has = |field| fields.iter().any(|(_, f)| *f == field);
        if !has(Field::Url) {
            let url = known
                .iter()
                .find(|(_, f)| *f == Field::Url)
                .expect("listed")
                .0;
            bail!("the header has no {url} column");
        }
        if format == Format::Yourls && !has(Field::Code) {
            bail!("the header has no keyword column");
        }
        if format == Format::Shlink && !has(Field::Code) && !has(Field::ShortUrl) {
            bail!("the header has neither a shortUrl nor a shortCode column");
        }
        Ok(Self {
            fields,
            tag_separator,
            label: format != Format::Csv,
        })
    }

    fn row(&self, record: &csv::StringRecord) -> Item {
        let mut link = Link::default();
        for &(i, field) in &self.fields {
            let Some(value) = record.get(i).map(str::trim).filter(|v| !v.is_empty()) else {
                continue;
            };
            let value = value.to_owned();
            match field {
                Field::Url => link.url = value,
                Field::Code => link.code = Some(value),
                Field::Domain => link.domain = Some(value),
                Field::Title => link.title = Some(value),
                Field::Tags => {
                    link.tags = value
                        .split(self.tag_separator)
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty())
                        .collect();
                }
                Field::ExpiresAt => link.expires_at = Some(value),
                Field::MaxClicks => link.max_clicks = Some(number("max_clicks", &value)?),
                Field::Redirect => {
                    let status = number("redirect", &value)?;
                    link.redirect = Some(
                        u16::try_from(status)
                            .map_err(|_| format!("redirect: {status} is not a status"))?,
                    );
                }
                Field::CreatedAt => link.created_at = Some(value),
                Field::Visits => link.visits = number("visits", &value)?,
                Field::ShortUrl => link.short_url = Some(value),
                Field::Ignored => {}
            }
        }
        link.row(self.label)
    }
}

fn number(name: &str, text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("{name}: {text:?} is not a whole number"))
}

fn csv_rows(
    mut input: impl BufRead + Send + 'static,
    format: Format,
) -> Result<impl Iterator<Item = Result<Item>> + Send> {
    let header_line = input
        .fill_buf()
        .context("cannot read the header row")?
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default()
        .to_vec();
    // A table dumped by `mysql --batch` is tab-separated.
    let delimiter = if header_line.contains(&b'\t') && !header_line.contains(&b',') {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(input);
    let columns = Columns::from_header(
        reader.headers().context("cannot read the header row")?,
        format,
    )?;
    let mut number = 1_u64;
    Ok(reader.into_records().map(move |record| {
        number += 1;
        let record = record.with_context(|| format!("line {number} cannot be read"))?;
        Ok(columns.row(&record))
    }))
}

/// A link as an export describes it, before it is checked.
#[derive(Debug, Default)]
struct Link {
    url: String,
    code: Option<String>,
    domain: Option<String>,
    short_url: Option<String>,
    title: Option<String>,
    tags: Vec<String>,
    expires_at: Option<String>,
    max_clicks: Option<u64>,
    redirect: Option<u16>,
    forward_query: Option<bool>,
    created_at: Option<String>,
    visits: u64,
    /// Targeting rules (Shlink's device-specific targets).
    rules: Vec<RuleBody>,
}

impl Link {
    fn row(self, label: bool) -> Item {
        let (mut code, mut domain) = (self.code, self.domain);
        if let Some(short) = &self.short_url {
            let (host, path) = split_short_url(short)?;
            domain = Some(host);
            code = Some(path);
        }
        let name = code.as_deref().unwrap_or_default();
        let label = if label { label_of(name) } else { String::new() };
        let created_at = self
            .created_at
            .map(|t| parse_time("created_at", &t))
            .transpose()
            .map_err(|e| format!("{label}{e}"))?;
        let expires_at = self
            .expires_at
            .map(|t| parse_time("expires_at", &t).map(crate::http::wire::rfc3339))
            .transpose()
            .map_err(|e| format!("{label}{e}"))?;
        Ok(Row {
            request: CreateLink {
                url: self.url,
                alias: code,
                domain,
                strategy: None,
                expires_at,
                ttl_seconds: None,
                max_clicks: self.max_clicks,
                redirect: self.redirect,
                forward_query: self.forward_query,
                tags: (!self.tags.is_empty()).then_some(self.tags),
                title: self.title,
                target_locked: None,
                rules: (!self.rules.is_empty()).then_some(self.rules),
                variants: None,
                sticky_variants: None,
            },
            created_at,
            visits: self.visits,
            label,
        })
    }
}

/// A short URL's host (its domain) and path (its code).
fn split_short_url(short: &str) -> Result<(String, String), String> {
    let with_scheme = if short.contains("://") {
        short.to_owned()
    } else {
        format!("https://{short}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| format!("short URL {short:?} cannot be read: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("short URL {short:?} has no host"))?;
    let code = url.path().trim_start_matches('/');
    if code.is_empty() {
        return Err(format!("short URL {short:?} has no code"));
    }
    let code = percent_decode(code);
    Ok((host.to_owned(), code))
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("c={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| text.to_owned(), |(_, v)| v.into_owned())
}

/// Unix seconds of a time as exports write it: RFC 3339, ISO 8601 with a
/// `+0000` offset (bit.ly), or `YYYY-MM-DD HH:MM:SS` (YOURLS, MySQL; read
/// as UTC).
fn parse_time(field: &str, text: &str) -> Result<i64, String> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    use time::macros::format_description;
    let at = time::OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(text, &Iso8601::DEFAULT))
        .or_else(|_| {
            time::OffsetDateTime::parse(
                text,
                format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
                ),
            )
        })
        .or_else(|_| {
            time::PrimitiveDateTime::parse(
                text,
                format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
            )
            .map(time::PrimitiveDateTime::assume_utc)
        })
        .map_err(|_| {
            format!("{field}: {text:?} is not a time (RFC 3339 or YYYY-MM-DD HH:MM:SS)")
        })?
        .unix_timestamp();
    if at < 0 {
        return Err(format!("{field}: {text:?} is before 1970"));
    }
    Ok(at)
}

/// The links of a JSON export, page by page, parsed from the file mapped
/// in memory (several times faster than through a reader).
struct JsonRows {
    map: memmap2::Mmap,
    /// Where the next page starts.
    offset: usize,
    read: Arc<AtomicU64>,
    format: Format,
    pending: VecDeque<Item>,
    page: u64,
}

impl Iterator for JsonRows {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            let rest = &self.map[self.offset..];
            let rest = rest.strip_prefix(b"\xef\xbb\xbf").unwrap_or(rest);
            let skipped = self.map.len() - self.offset - rest.len();
            let mut pages = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
            let page = match pages.next()? {
                Ok(page) => page,
                Err(e) => {
                    return Some(Err(anyhow::anyhow!(
                        "the JSON after page {} cannot be read: {e}",
                        self.page
                    )));
                }
            };
            self.offset += skipped + pages.byte_offset();
            self.read.store(self.offset as u64, Ordering::Relaxed);
            self.page += 1;
            let links = match links_of(page, self.format) {
                Ok(links) => links,
                Err(e) => return Some(Err(e.context(format!("page {}", self.page)))),
            };
            let format = self.format;
            let rows: Vec<Vec<Item>> = links
                .into_par_iter()
                .map(|link| json_rows(link, format))
                .collect();
            self.pending.extend(rows.into_iter().flatten());
        }
    }
}

/// The links of one JSON value: a page, an array of pages, or an array of
/// links.
fn links_of(value: Value, format: Format) -> Result<Vec<Value>> {
    let list_key = |format| match format {
        Format::Bitly => "links",
        Format::Kutt => "data",
        Format::Yourls => "links",
        Format::Shlink | Format::Csv => "shortUrls",
    };
    match value {
        Value::Array(items) => {
            let mut links = Vec::new();
            for item in items {
                if item.get(list_key(format)).is_some() {
                    links.extend(links_of(item, format)?);
                } else {
                    links.push(item);
                }
            }
            Ok(links)
        }
        Value::Object(mut page) => {
            let key = list_key(format);
            let list = page.remove(key).with_context(|| {
                format!(
                    "a {} page has a {key:?} list; this one has {:?}",
                    name(format),
                    page.keys().collect::<Vec<_>>()
                )
            })?;
            Ok(match (format, list) {
                // Shlink nests the list: {"shortUrls": {"data": [...]}}.
                (Format::Shlink, Value::Object(mut inner)) => match inner.remove("data") {
                    Some(Value::Array(items)) => items,
                    _ => bail!("a shlink page's shortUrls has no data list"),
                },
                // YOURLS keys its links link_1, link_2, ...: in that order.
                (Format::Yourls, Value::Object(map)) => {
                    let mut links: Vec<(u64, Value)> = map
                        .into_iter()
                        .map(|(k, v)| {
                            let n = k
                                .strip_prefix("link_")
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(u64::MAX);
                            (n, v)
                        })
                        .collect();
                    links.sort_by_key(|(n, _)| *n);
                    links.into_iter().map(|(_, v)| v).collect()
                }
                (_, Value::Array(items)) => items,
                (_, other) => bail!("{key:?} is not a list: {other}"),
            })
        }
        other => bail!("expected a page (an object) or a list, found {other}"),
    }
}

/// A count written as a number or as digits in a string (YOURLS).
fn count(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

#[derive(Deserialize)]
struct BitlyLink {
    link: String,
    #[serde(default)]
    custom_bitlinks: Vec<String>,
    long_url: String,
    title: Option<String>,
    created_at: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct YourlsLink {
    shorturl: String,
    url: String,
    title: Option<String>,
    timestamp: Option<String>,
    clicks: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShlinkLink {
    short_code: String,
    short_url: Option<String>,
    long_url: String,
    date_created: Option<String>,
    visits_summary: Option<Value>,
    visits_count: Option<u64>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    meta: ShlinkMeta,
    domain: Option<String>,
    title: Option<String>,
    forward_query: Option<bool>,
    device_long_urls: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ShlinkMeta {
    valid_since: Option<String>,
    valid_until: Option<String>,
    max_visits: Option<u64>,
}

#[derive(Deserialize)]
struct KuttLink {
    address: String,
    target: String,
    description: Option<String>,
    created_at: Option<String>,
    expire_in: Option<String>,
    #[serde(default)]
    visit_count: u64,
    domain: Option<String>,
    #[serde(default)]
    banned: bool,
    password: Option<Value>,
    link: Option<String>,
}

/// The rows of one link of a JSON export.
fn json_rows(value: Value, format: Format) -> Vec<Item> {
    // Named by its code when it has one; the link is consumed below.
    let code_key = match format {
        Format::Bitly => "link",
        Format::Yourls => "shorturl",
        Format::Shlink => "shortCode",
        Format::Kutt | Format::Csv => "address",
    };
    let code = value
        .get(code_key)
        .and_then(Value::as_str)
        .map(|code| label_of(&shorten(code)))
        .unwrap_or_default();
    let refused =
        |e: serde_json::Error| vec![Err(format!("{code}not a {} link: {e}", name(format)))];
    match format {
        Format::Bitly => match serde_json::from_value::<BitlyLink>(value) {
            Ok(link) => {
                let mut shorts = vec![link.link.clone()];
                for custom in &link.custom_bitlinks {
                    if !shorts.contains(custom) {
                        shorts.push(custom.clone());
                    }
                }
                shorts
                    .into_iter()
                    .map(|short| {
                        Link {
                            url: link.long_url.clone(),
                            short_url: Some(short),
                            title: link.title.clone(),
                            tags: link.tags.clone(),
                            created_at: link.created_at.clone(),
                            ..Link::default()
                        }
                        .row(true)
                    })
                    .collect()
            }
            Err(e) => refused(e),
        },
        Format::Yourls => match serde_json::from_value::<YourlsLink>(value) {
            Ok(link) => vec![
                Link {
                    url: link.url,
                    short_url: Some(link.shorturl),
                    title: link.title.filter(|t| !t.is_empty()),
                    created_at: link.timestamp,
                    visits: count(link.clicks.as_ref()),
                    ..Link::default()
                }
                .row(true),
            ],
            Err(e) => refused(e),
        },
        Format::Shlink => match serde_json::from_value::<ShlinkLink>(value) {
            Ok(link) => vec![shlink_row(link)],
            Err(e) => refused(e),
        },
        Format::Kutt => match serde_json::from_value::<KuttLink>(value) {
            Ok(link) => vec![kutt_row(link)],
            Err(e) => refused(e),
        },
        Format::Csv => unreachable!("csv files are not JSON"),
    }
}

/// Shlink's device-specific targets as targeting rules: `ios` and
/// `android` by the client's system, `desktop` by its device type, as
/// Shlink tells them apart. A device it does not name is refused.
fn shlink_device_rules(urls: Option<&Value>) -> Result<Vec<RuleBody>, String> {
    let Some(urls) = urls.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let urls = urls.as_object().ok_or("deviceLongUrls is not an object")?;
    let rule = |url: &str, device: Vec<String>, os: Vec<String>| RuleBody {
        url: url.to_owned(),
        device,
        os,
        browser: Vec::new(),
        language: Vec::new(),
        country: Vec::new(),
        query: None,
        from: None,
        until: None,
    };
    let mut rules = Vec::new();
    // Shlink checks the systems before the device type.
    for name in ["ios", "android", "desktop"] {
        let (device, os) = if name == "desktop" {
            (vec![name.to_owned()], Vec::new())
        } else {
            (Vec::new(), vec![name.to_owned()])
        };
        match urls.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(url)) => rules.push(rule(url, device, os)),
            Some(other) => return Err(format!("deviceLongUrls.{name} is not a URL: {other}")),
        }
    }
    if let Some(unknown) = urls
        .keys()
        .find(|k| !["ios", "android", "desktop"].contains(&k.as_str()))
    {
        return Err(format!(
            "deviceLongUrls.{unknown} names a device that has no rule here (ios, android, desktop)"
        ));
    }
    Ok(rules)
}

fn shlink_row(link: ShlinkLink) -> Item {
    let label = label_of(&link.short_code);
    let rules =
        shlink_device_rules(link.device_long_urls.as_ref()).map_err(|e| format!("{label}{e}"))?;
    if let Some(since) = &link.meta.valid_since {
        let since = parse_time("validSince", since).map_err(|e| format!("{label}{e}"))?;
        if since > crate::model::now_unix() {
            return Err(format!(
                "{label}validSince is still to come, and a link here is live from its creation"
            ));
        }
    }
    let visits = link
        .visits_summary
        .as_ref()
        .map(|s| count(s.get("total")))
        .or(link.visits_count)
        .unwrap_or(0);
    let short_url = link.short_url.filter(|s| !s.is_empty());
    Link {
        url: link.long_url,
        code: short_url.is_none().then_some(link.short_code),
        domain: link.domain,
        short_url,
        title: link.title,
        tags: link.tags,
        expires_at: link.meta.valid_until,
        max_clicks: link.meta.max_visits,
        forward_query: link.forward_query,
        created_at: link.date_created,
        visits,
        rules,
        ..Link::default()
    }
    .row(true)
}

fn kutt_row(link: KuttLink) -> Item {
    let label = label_of(&link.address);
    let protected = match &link.password {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        _ => false,
    };
    if protected {
        return Err(format!(
            "{label}the link is password-protected, and links here are not"
        ));
    }
    if link.banned {
        return Err(format!("{label}the link is banned in the export"));
    }
    let short_url = link.link.filter(|s| !s.is_empty());
    Link {
        url: link.target,
        code: short_url.is_none().then_some(link.address),
        domain: link.domain,
        short_url,
        title: link.description.filter(|d| !d.is_empty()),
        expires_at: link.expire_in,
        created_at: link.created_at,
        visits: link.visit_count,
        ..Link::default()
    }
    .row(true)
}

/// How a refusal names a link of an export: `code "abc": `.
fn label_of(code: &str) -> String {
    format!("code {code:?}: ")
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(120) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shlink_device_targets_become_rules_or_a_clear_refusal() {
        let urls = serde_json::json!({"desktop": "https://d.example/", "ios": null, "android": "https://a.example/"});
        let rules = shlink_device_rules(Some(&urls)).unwrap();
        let shown: Vec<(&str, &[String], &[String])> = rules
            .iter()
            .map(|r| (r.url.as_str(), r.device.as_slice(), r.os.as_slice()))
            .collect();
        assert_eq!(
            shown,
            [
                ("https://a.example/", &[][..], &["android".to_owned()][..]),
                ("https://d.example/", &["desktop".to_owned()][..], &[][..]),
            ]
        );
        assert!(shlink_device_rules(None).unwrap().is_empty());
        assert!(
            shlink_device_rules(Some(&serde_json::json!({"android": null})))
                .unwrap()
                .is_empty()
        );
        let unknown = shlink_device_rules(Some(&serde_json::json!({"tv": "https://t.example/"})));
        assert_eq!(
            unknown.unwrap_err(),
            "deviceLongUrls.tv names a device that has no rule here (ios, android, desktop)"
        );
        let not_a_url = shlink_device_rules(Some(&serde_json::json!({"ios": 3})));
        assert_eq!(not_a_url.unwrap_err(), "deviceLongUrls.ios is not a URL: 3");
    }

    #[test]
    fn times_as_exports_write_them() {
        assert_eq!(parse_time("t", "2020-01-02T03:04:05Z"), Ok(1_577_934_245));
        assert_eq!(
            parse_time("t", "2020-01-02T04:04:05+01:00"),
            Ok(1_577_934_245)
        );
        assert_eq!(
            parse_time("t", "2020-01-02T03:04:05+0000"),
            Ok(1_577_934_245)
        );
        assert_eq!(parse_time("t", "2020-01-02 03:04:05"), Ok(1_577_934_245));
        assert!(
            parse_time("t", "yesterday")
                .unwrap_err()
                .contains("not a time")
        );
    }

    #[test]
    fn short_urls_give_domain_and_code() {
        assert_eq!(
            split_short_url("https://Go.Example.com/Abc_1").unwrap(),
            ("go.example.com".to_owned(), "Abc_1".to_owned())
        );
        assert_eq!(
            split_short_url("bit.ly/3xyz").unwrap(),
            ("bit.ly".to_owned(), "3xyz".to_owned())
        );
        assert!(split_short_url("https://sho.rt/").is_err());
    }

    #[test]
    fn pages_arrays_and_bare_lists_give_the_same_links() {
        let link = serde_json::json!({"address": "a1", "target": "https://e.com/"});
        let page = serde_json::json!({"limit": 10, "skip": 0, "total": 1, "data": [link.clone()]});
        for value in [
            page.clone(),
            Value::Array(vec![page.clone()]),
            Value::Array(vec![link.clone()]),
        ] {
            assert_eq!(links_of(value, Format::Kutt).unwrap(), vec![link.clone()]);
        }
        let error = links_of(serde_json::json!({"items": []}), Format::Kutt).unwrap_err();
        assert!(error.to_string().contains("\"data\" list"), "{error}");
    }

    #[test]
    fn yourls_links_keep_their_numbered_order() {
        let page = serde_json::json!({"links": {
            "link_10": {"n": 10}, "link_2": {"n": 2}, "link_1": {"n": 1}
        }});
        let links = links_of(page, Format::Yourls).unwrap();
        let order: Vec<u64> = links.iter().map(|l| l["n"].as_u64().unwrap()).collect();
        assert_eq!(order, [1, 2, 10]);
    }
}
