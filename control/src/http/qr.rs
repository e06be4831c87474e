//! `GET /api/v1/links/{code}/qr`: a QR code of a link's short URL (with its
//! domain), as SVG or PNG, cached by ETag.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use qrcode::{Color, EcLevel, QrCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::extract::{ApiPath, Auth, Shared};
use super::links::{domain_of, link_key, read_link};
use super::problem::{ApiError, AppResult};
use crate::domain::domains::split_key;

/// Image sizes allowed, in pixels.
const SIZE_MIN: u32 = 64;
const SIZE_MAX: u32 = 4096;
/// The quiet zone allowed around the code, in modules.
const MARGIN_MAX: u32 = 16;

/// How a QR code is drawn.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QrParams {
    /// `svg` (default) or `png`.
    pub format: Option<String>,
    /// Width and height in pixels, 64 to 4096 (default 512); the code is
    /// drawn at the largest whole number of pixels per module that fits.
    pub size: Option<u32>,
    /// Quiet zone in modules, 0 to 16 (default 4, as the standard asks).
    pub margin: Option<u32>,
    /// Error correction: `L`, `M` (default), `Q` or `H`.
    pub ecc: Option<String>,
    /// The short domain of the code (default: the default domain).
    pub domain: Option<String>,
}

/// A checked request for an image.
#[derive(Debug, Clone, Copy)]
struct Drawing {
    png: bool,
    size: u32,
    margin: u32,
    ecc: EcLevel,
}

fn drawing(params: &QrParams) -> AppResult<Drawing> {
    let png = match params.format.as_deref() {
        None | Some("svg") => false,
        Some("png") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("{other:?} is not svg or png"),
            ));
        }
    };
    let size = params.size.unwrap_or(512);
    if !(SIZE_MIN..=SIZE_MAX).contains(&size) {
        return Err(ApiError::invalid(
            "size",
            format!("must be {SIZE_MIN} to {SIZE_MAX} pixels"),
        ));
    }
    let margin = params.margin.unwrap_or(4);
    if margin > MARGIN_MAX {
        return Err(ApiError::invalid(
            "margin",
            format!("must be 0 to {MARGIN_MAX} modules"),
        ));
    }
    let ecc = match params.ecc.as_deref().unwrap_or("M") {
        "L" | "l" => EcLevel::L,
        "M" | "m" => EcLevel::M,
        "Q" | "q" => EcLevel::Q,
        "H" | "h" => EcLevel::H,
        other => {
            return Err(ApiError::invalid(
                "ecc",
                format!("{other:?} is not L, M, Q or H"),
            ));
        }
    };
    Ok(Drawing {
        png,
        size,
        margin,
        ecc,
    })
}

/// The modules of `text`'s code with its quiet zone, row by row (true is
/// dark), and the side in modules.
fn modules(text: &str, drawing: Drawing) -> AppResult<(Vec<bool>, u32)> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), drawing.ecc)
        .map_err(|e| ApiError::invalid("ecc", format!("the short URL does not fit: {e}")))?;
    let width = u32::try_from(code.width()).expect("a QR code is at most 177 modules wide");
    let side = width + 2 * drawing.margin;
    let colors = code.to_colors();
    let mut dark = vec![false; (side * side) as usize];
    for y in 0..width {
        for x in 0..width {
            dark[((y + drawing.margin) * side + x + drawing.margin) as usize] =
                colors[(y * width + x) as usize] == Color::Dark;
        }
    }
    Ok((dark, side))
}

/// Pixels per module: the most that fit `size`, at least one.
fn scale(drawing: Drawing, side: u32) -> u32 {
    (drawing.size / side).max(1)
}

fn svg(dark: &[bool], side: u32, drawing: Drawing) -> Vec<u8> {
    use std::fmt::Write as _;
    let pixels = side * scale(drawing, side);
    let mut path = String::with_capacity(dark.len() * 4);
    for (i, _) in dark.iter().enumerate().filter(|(_, d)| **d) {
        let (x, y) = (i as u32 % side, i as u32 / side);
        let _ = write!(path, "M{x} {y}h1v1h-1z");
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{pixels}\" height=\"{pixels}\" viewBox=\"0 0 {side} {side}\" shape-rendering=\"crispEdges\"><rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/><path fill=\"#000\" d=\"{path}\"/></svg>\n"
    )
    .into_bytes()
}

fn png(dark: &[bool], side: u32, drawing: Drawing) -> AppResult<Vec<u8>> {
    let scale = scale(drawing, side);
    let pixels = side * scale;
    let mut image = Vec::with_capacity((pixels * pixels) as usize);
    for y in 0..pixels {
        for x in 0..pixels {
            let module = dark[((y / scale) * side + x / scale) as usize];
            image.push(if module { 0 } else { 255 });
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, pixels, pixels);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| ApiError::Internal(format!("PNG: {e}")))?;
    writer
        .write_image_data(&image)
        .map_err(|e| ApiError::Internal(format!("PNG: {e}")))?;
    writer
        .finish()
        .map_err(|e| ApiError::Internal(format!("PNG: {e}")))?;
    Ok(out)
}

#[utoipa::path(get, path = "/api/v1/links/{code}/qr", security(("bearer" = [])),
    params(("code" = String, Path), QrParams),
    responses((status = 200, description = "the QR code of the short URL", content((String = "image/svg+xml"), (String = "image/png"))),
        (status = 304, description = "not modified (If-None-Match)"),
        (status = 404, body = super::problem::Problem), (status = 422, body = super::problem::Problem)))]
pub(super) async fn link_qr(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(code): ApiPath<String>,
    params: Result<Query<QrParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let drawing = drawing(&params)?;
    let key = link_key(&state, Some(&principal), params.domain.as_deref(), code)?;
    let (link, _) = read_link(&Arc::clone(&state), key, &principal).await?;
    let (_, base) = domain_of(&state, &link.code);
    let short_url = format!("{base}/{}", split_key(&link.code).1);
    let digest = Sha256::digest(
        format!(
            "{short_url}\n{}\n{}\n{}\n{:?}",
            drawing.png, drawing.size, drawing.margin, drawing.ecc
        )
        .as_bytes(),
    );
    let etag = format!("\"qr-{}\"", hex::encode(&digest[..12]));
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a header value");
    let cache = HeaderValue::from_static("private, max-age=3600");
    if headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*")
    {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    let (dark, side) = modules(&short_url, drawing)?;
    let (body, content_type) = if drawing.png {
        (png(&dark, side, drawing)?, "image/png")
    } else {
        (svg(&dark, side, drawing), "image/svg+xml")
    };
    metrics::counter!("control_qr_codes_total", "format" => if drawing.png { "png" } else { "svg" })
        .increment(1);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response())
}
