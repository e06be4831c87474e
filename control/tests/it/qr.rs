//! QR codes of short links, decoded back: PNG through a QR decoder, SVG by
//! drawing its modules and decoding them the same way.

use serde_json::json;

use crate::{agent, start_with};

/// `GET path` with the admin key: status, headers and the raw body.
fn fetch(
    control: &crate::Control,
    path: &str,
    if_none_match: Option<&str>,
) -> (u16, Option<String>, Option<String>, Vec<u8>) {
    let mut request = agent()
        .get(&control.url(path))
        .header("Authorization", &format!("Bearer {}", control.token));
    if let Some(tag) = if_none_match {
        request = request.header("If-None-Match", tag);
    }
    let mut response = request.call().expect("control answered");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, etag) = (header("content-type"), header("etag"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_vec().unwrap_or_default();
    (status, content_type, etag, body)
}

/// The text of the one QR code in a greyscale image.
fn decode(width: usize, height: usize, pixel: impl Fn(usize, usize) -> u8) -> String {
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, pixel);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one code in the image");
    grids[0].decode().expect("a readable code").1
}

pub fn decode_png(bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let width = info.width as usize;
    decode(width, info.height as usize, |x, y| pixels[y * width + x])
}

/// Draws the SVG's `M{x} {y}h1v1h-1z` modules at 8 pixels each and decodes them.
fn decode_svg(text: &str) -> String {
    let side: usize = text
        .split("viewBox=\"0 0 ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a square viewBox");
    let path = text
        .split(" d=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut dark = vec![false; side * side];
    for module in path.split('M').filter(|m| !m.is_empty()) {
        let coords = module.trim_end_matches("h1v1h-1z");
        let (x, y) = coords.split_once(' ').unwrap();
        let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
        dark[y * side + x] = true;
    }
    let scale = 8;
    decode(side * scale, side * scale, |x, y| {
        if dark[(y / scale) * side + x / scale] {
            0
        } else {
            255
        }
    })
}

#[test]
fn a_links_qr_code_decodes_to_its_short_url_in_svg_and_png() {
    let control = start_with(&[("SHORTLINE_PUBLIC_URL", "https://acme.link")]);
    control.create(json!({"url": "https://example.com/printed", "alias": "flyer"}));

    let (status, content_type, etag, body) =
        fetch(&control, "/api/v1/links/flyer/qr?format=png&size=300", None);
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("image/png"));
    assert_eq!(decode_png(&body), "https://acme.link/flyer");
    let etag = etag.expect("an ETag");
    let (again, _, same, body) = fetch(
        &control,
        "/api/v1/links/flyer/qr?format=png&size=300",
        Some(&etag),
    );
    assert_eq!(
        (again, same.as_deref(), body.len()),
        (304, Some(etag.as_str()), 0)
    );

    let (status, content_type, svg_tag, body) =
        fetch(&control, "/api/v1/links/flyer/qr?ecc=H&margin=2", None);
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("image/svg+xml"));
    assert_ne!(
        svg_tag.as_deref(),
        Some(etag.as_str()),
        "each drawing its own tag"
    );
    assert_eq!(
        decode_svg(&String::from_utf8(body).unwrap()),
        "https://acme.link/flyer"
    );

    // A link on another domain encodes that domain's short URL.
    let made = control.post(
        "/api/v1/domains",
        json!({"name": "go.acme.test", "https": true}),
    );
    assert_eq!(made.status, 201, "{made:?}");
    control.create(
        json!({"url": "https://example.com/other", "alias": "flyer", "domain": "go.acme.test"}),
    );
    let (status, _, _, body) = fetch(
        &control,
        "/api/v1/links/flyer/qr?format=png&domain=go.acme.test",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(decode_png(&body), "https://go.acme.test/flyer");

    for (query, field) in [
        ("format=gif", "format"),
        ("size=10", "size"),
        ("size=5000", "size"),
        ("margin=17", "margin"),
        ("ecc=X", "ecc"),
        ("colour=red", "query"),
    ] {
        let refused = control.get(&format!("/api/v1/links/flyer/qr?{query}"));
        assert_eq!(refused.status, 422, "{query}: {refused:?}");
        assert_eq!(refused.body["field"], field, "{query}: {refused:?}");
    }
    assert_eq!(control.get("/api/v1/links/nope/qr").status, 404);
}
