//! The links a run asks for: read from a file, or created through the API
//! (tagged, so they can be found and deleted afterwards), and waited for
//! until the proxy serves them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::conn::Conn;

/// Links created per seeding request (the API's batch limit).
pub const SEED_BATCH_LINKS: usize = 1000;
/// Longest wait for seeded links to reach the proxy. Generous: a busy host
/// may take seconds to publish a change.
pub const VISIBLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Every link this tool creates carries this tag, and one naming its run.
pub const TAG: &str = "loadtest";
/// Connections used to delete a run's links.
const CLEANUP_CONNECTIONS: usize = 8;

/// A short link and the target it must redirect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub code: String,
    pub target: String,
}

/// The tag naming one run's links.
#[must_use]
pub fn run_tag(run_id: u64) -> String {
    format!("{TAG}-{run_id:x}")
}

/// Reads `code<TAB>target` lines.
pub fn read_links(path: &Path) -> Result<Vec<Link>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut links = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (code, target) = line
            .split_once('\t')
            .with_context(|| format!("{}:{}: expected code<TAB>target", path.display(), n + 1))?;
        links.push(Link {
            code: code.to_owned(),
            target: target.to_owned(),
        });
    }
    Ok(links)
}

/// Creates `count` links through the API, a batch at a time, printing
/// progress to stderr.
pub async fn create_links(control: &mut Conn, count: usize, tag: &str) -> Result<Vec<Link>> {
    let mut links = Vec::with_capacity(count);
    let started = Instant::now();
    while links.len() < count {
        let made = links.len();
        let batch = SEED_BATCH_LINKS.min(count - made);
        let items: Vec<Value> = (made..made + batch)
            .map(|i| {
                json!({
                    "url": format!("https://example.com/loadtest/{tag}/{i}"),
                    "tags": [TAG, tag],
                })
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "links": items }))?;
        let answer = control
            .send("POST", "/api/v1/links/batch", Some(body))
            .await
            .context("seeding failed")?;
        if answer.status != 200 {
            bail!(
                "seeding failed: POST /api/v1/links/batch answered {}: {}",
                answer.status,
                answer.body_excerpt(500)
            );
        }
        let parsed: Value =
            serde_json::from_slice(&answer.body).context("seeding: the answer is not JSON")?;
        for result in parsed["results"]
            .as_array()
            .context("seeding: the answer has no results")?
        {
            let link = &result["link"];
            let (Some(code), Some(target)) = (link["code"].as_str(), link["url"].as_str()) else {
                bail!("seeding: the API refused a link: {result}");
            };
            links.push(Link {
                code: code.to_owned(),
                target: target.to_owned(),
            });
        }
        eprintln!(
            "seeding: {} of {count} links created ({:.1} s)",
            links.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(links)
}

/// Waits until the proxy serves `link` (its preview page, which is not
/// counted as a click). The proxy applies changes in order, so once the
/// newest seeded link is served, every older one is.
pub async fn wait_until_served(proxy: &mut Conn, link: &Link) -> Result<()> {
    let path = format!("/{}+", link.code);
    let deadline = Instant::now() + VISIBLE_TIMEOUT;
    let mut last;
    loop {
        match proxy.send("GET", &path, None).await {
            Ok(answer) if answer.status == 200 => return Ok(()),
            Ok(answer) => last = format!("status {}", answer.status),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!(
                "the proxy did not serve seeded link {} within {} s (last answer: {last}); is --target the proxy of --control?",
                link.code,
                VISIBLE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lists the codes of every link tagged `tag`.
async fn codes_tagged(control: &mut Conn, tag: &str) -> Result<Vec<String>> {
    let mut codes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/links?tag={tag}&limit=1000&cursor={c}"),
            None => format!("/api/v1/links?tag={tag}&limit=1000"),
        };
        let answer = control.send("GET", &path, None).await?;
        if answer.status != 200 {
            bail!(
                "GET {path} answered {}: {}",
                answer.status,
                answer.body_excerpt(300)
            );
        }
        let page: Value = serde_json::from_slice(&answer.body)?;
        for item in page["items"].as_array().context("a page has items")? {
            codes.push(
                item["code"]
                    .as_str()
                    .context("an item has a code")?
                    .to_owned(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(codes),
        }
    }
}

/// Deletes one link, waiting out rate limits.
async fn delete_link(control: &mut Conn, code: &str) -> Result<()> {
    let path = format!("/api/v1/links/{code}");
    loop {
        let answer = control.send("DELETE", &path, None).await?;
        match answer.status {
            204 | 404 => return Ok(()),
            429 => tokio::time::sleep(Duration::from_millis(200)).await,
            status => bail!(
                "DELETE {path} answered {status}: {}",
                answer.body_excerpt(300)
            ),
        }
    }
}

/// Deletes every link tagged `tag`; returns how many.
pub async fn delete_tagged(authority: &str, token: &str, tag: &str) -> Result<usize> {
    let codes = codes_tagged(&mut Conn::new(authority, Some(token)), tag).await?;
    let total = codes.len();
    let mut tasks = Vec::new();
    for share in codes.chunks(total.div_ceil(CLEANUP_CONNECTIONS).max(1)) {
        let share = share.to_vec();
        let mut conn = Conn::new(authority, Some(token));
        tasks.push(tokio::spawn(async move {
            for code in share {
                delete_link(&mut conn, &code).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_files_are_read_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("links.tsv");
        std::fs::write(&path, "a\thttps://e.com/a\n\nb\thttps://e.com/b\n").unwrap();
        let links = read_links(&path).unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!(links[1].target, "https://e.com/b");
        std::fs::write(&path, "a\thttps://e.com/a\nbroken\n").unwrap();
        let error = read_links(&path).unwrap_err().to_string();
        assert!(error.contains("links.tsv:2"), "{error}");
    }

    #[test]
    fn run_tags_are_tagged_loadtest() {
        assert_eq!(run_tag(0xab), "loadtest-ab");
    }
}
