//! The HTML pages the proxy answers with: the link preview and the warning
//! for a flagged link. Made per request (they are rare); everything from the
//! link is escaped.

use shortline_store::routing::Routing;
use shortline_store::{LinkView, Resolution};

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>{title}</h1>{body_html}</body></html>\n"
    )
}

/// A time as HTTP writes it (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(unix: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    httpdate::fmt_http_date(at)
}

/// A short link as people read it: `go.acme.com/sale`, or the bare code
/// where the table has no domains.
pub(crate) fn short_name(domain: &str, code: &[u8]) -> String {
    let code = String::from_utf8_lossy(code);
    if domain.is_empty() {
        escape_html(&code)
    } else {
        escape_html(&format!("{domain}/{code}"))
    }
}

pub(crate) fn flagged_page(domain: &str, code: &[u8]) -> String {
    let link = short_name(domain, code);
    page(
        "Warning: this link has been flagged",
        &format!(
            "<p>The short link <code>{link}</code> has been flagged as possibly harmful by the operator of this service, \
             so it is not followed. If you believe this is a mistake, contact the operator.</p>"
        ),
    )
}

/// An inline SVG QR code of `url`, for people to scan the link from the
/// preview page.
fn qr_svg(url: &str) -> Option<String> {
    let code = qrcode::QrCode::new(url.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(160, 160)
        .quiet_zone(true)
        .build();
    // The renderer starts with an XML declaration, which HTML does not take.
    Some(svg[svg.find("<svg")?..].to_owned())
}

/// Every other place a link with rules or a split sends clicks, so the
/// preview hides none of its destinations.
fn routes(routing: &Routing) -> String {
    let link = |target: &shortline_store::Target| {
        let url = escape_html(target.as_str());
        format!("<a href=\"{url}\" rel=\"noopener noreferrer nofollow\">{url}</a>")
    };
    let mut out = String::new();
    if !routing.rules.is_empty() {
        let rules: String = routing
            .rules
            .iter()
            .map(|rule| {
                format!(
                    "<li>{}: {}</li>",
                    escape_html(&describe(&rule.when)),
                    link(&rule.target)
                )
            })
            .collect();
        out.push_str(&format!(
            "<p>Some visitors are sent elsewhere, by the first rule that holds for them:</p><ol>{rules}</ol>"
        ));
    }
    if !routing.variants.is_empty() {
        let total: u64 = routing.variants.iter().map(|v| u64::from(v.weight)).sum();
        let variants: String = routing
            .variants
            .iter()
            .map(|v| {
                let share = u64::from(v.weight) * 1000 / total.max(1);
                format!(
                    "<li>{}.{}% of visitors: {}</li>",
                    share / 10,
                    share % 10,
                    link(&v.target)
                )
            })
            .collect();
        let others = if routing.rules.is_empty() {
            "Visitors"
        } else {
            "The others"
        };
        out.push_str(&format!(
            "<p>{others} are split between:</p><ul>{variants}</ul>"
        ));
    }
    out
}

/// A rule's conditions in words.
fn describe(when: &shortline_store::routing::Conditions) -> String {
    use shortline_store::routing::{browser, device, names_of, os};
    let mut parts = Vec::new();
    for (what, names, mask) in [
        ("device", &device::NAMES[..], when.devices),
        ("system", &os::NAMES[..], when.os),
        ("browser", &browser::NAMES[..], when.browsers),
    ] {
        if mask != 0 {
            let named: Vec<&str> = names_of(names, mask).collect();
            parts.push(format!("{what} {}", named.join(" or ")));
        }
    }
    if !when.languages.is_empty() {
        parts.push(format!("language {}", when.languages.join(" or ")));
    }
    if !when.countries.is_empty() {
        parts.push(format!("country {}", when.countries.join(" or ")));
    }
    if let Some(q) = &when.query {
        parts.push(match &q.value {
            Some(value) => format!("query {}={value}", q.name),
            None => format!("query has {}", q.name),
        });
    }
    if let Some(from) = when.from {
        parts.push(format!("from {}", http_date(from)));
    }
    if let Some(until) = when.until {
        parts.push(format!("until {}", http_date(until)));
    }
    parts.join(", ")
}

pub(crate) fn preview_page(
    link: &LinkView<'_>,
    domain: &str,
    code: &[u8],
    secure: bool,
    now: i64,
) -> String {
    let target = escape_html(&String::from_utf8_lossy(link.target()));
    let qr = if domain.is_empty() {
        String::new()
    } else {
        let scheme = if secure { "https" } else { "http" };
        let url = format!("{scheme}://{domain}/{}", String::from_utf8_lossy(code));
        qr_svg(&url)
            .map(|svg| {
                format!(
                    "<figure role=\"img\" aria-label=\"QR code of {}\">{svg}</figure>",
                    escape_html(&url)
                )
            })
            .unwrap_or_default()
    };
    let code = short_name(domain, code);
    // Bait and switch (a harmless target changed once the link spread) is
    // worth seeing before a click.
    let changed = match link.changed_at {
        Some(at) => {
            let before: String = link
                .previous
                .iter()
                .map(|(until, target)| {
                    format!(
                        "<li><code>{}</code>, until {}</li>",
                        escape_html(&String::from_utf8_lossy(target)),
                        http_date(until)
                    )
                })
                .collect();
            format!(
                "<p>Its destination was last changed on {}.</p>\
                 <details><summary>Where it led before</summary><ul>{before}</ul>\
                 <p>The most recent changes; <a href=\"?history\">every change</a> is in the link's public history.</p></details>",
                http_date(at)
            )
        }
        None => "<p>Its destination has not changed since the link was made.</p>".to_owned(),
    };
    let routed = link
        .routing
        .and_then(Routing::decode)
        .map(|routing| routes(&routing))
        .unwrap_or_default();
    let body = match link.resolve(now) {
        Resolution::Redirect => format!(
            "<p>The short link <code>{code}</code> leads to:</p><p><a href=\"{target}\" rel=\"noopener noreferrer nofollow\">{target}</a></p>{routed}{changed}{qr}"
        ),
        Resolution::Flagged => format!(
            "<p>The short link <code>{code}</code> has been flagged as possibly harmful; its target is not shown.</p>"
        ),
        Resolution::Gone(_) => format!(
            "<p>The short link <code>{code}</code> is no longer available. It led to:</p><p><code>{target}</code></p>"
        ),
    };
    page("Link preview", &body)
}

/// `page` with a note in bold under its heading. The note is HTML.
pub(crate) fn with_notice(page: &str, notice: &str) -> String {
    page.replacen(
        "</h1>",
        &format!("</h1><p><strong>{notice}</strong></p>"),
        1,
    )
}

/// A link's whole destination history (`/{code}+?history=N`), a page of
/// changes at a time, oldest first.
pub(crate) fn history_page(
    ask: &crate::history::HistoryAsk,
    history: &crate::history::History,
) -> String {
    let target = escape_html(&history.url);
    let short_name = &ask.short_name;
    let leads = if ask.gone {
        format!(
            "<p>The short link <code>{short_name}</code> is no longer available. It led to:</p><p><code>{target}</code></p>"
        )
    } else {
        format!(
            "<p>The short link <code>{short_name}</code> leads to:</p>\
             <p><a href=\"{target}\" rel=\"noopener noreferrer nofollow\">{target}</a></p>"
        )
    };
    let mut body = format!(
        "{leads}<p>It was made on {}.",
        escape_html(&history.created_at)
    );
    match &history.target_changed_at {
        Some(at) => body.push_str(&format!(
            " Its destination was last changed on {}.</p>",
            escape_html(at)
        )),
        None => body.push_str(" Its destination has not changed since.</p>"),
    }
    if history.target_locked {
        body.push_str("<p>Its destination is locked: only an administrator can change it.</p>");
    }
    if history.changes.is_empty() {
        if ask.after > 0 {
            body.push_str("<p>No changes after these.</p>");
        }
    } else {
        body.push_str(
            "<table><thead><tr><th>#</th><th>When</th><th>From</th><th>To</th></tr></thead><tbody>",
        );
        for change in &history.changes {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                change.n,
                escape_html(&change.at),
                escape_html(&change.from),
                escape_html(&change.to)
            ));
        }
        body.push_str("</tbody></table>");
    }
    if let Some(next) = history.next_after {
        body.push_str(&format!(
            "<p><a href=\"?history={next}\">Later changes</a></p>"
        ));
    }
    body.push_str("<p><a href=\"?\">Back to the preview</a></p>");
    page("Link history", &body)
}
