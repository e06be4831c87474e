//! The bare baseline: an HTTP/1.1 server that answers every request with the
//! same 302, with no lookup, no click capture and no metrics. The side-by-side
//! benchmark measures Shortline's proxy against it to price the lookup and
//! everything else the proxy does.
//!
//! ```text
//! bench-bare --listen 127.0.0.1:8090 --threads 1 --location https://example.com/
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The `Location` of every answer.
    #[arg(long, default_value = "https://example.com/")]
    location: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "bare redirect server listening on http://{}",
        listener.local_addr()?
    );
    let location = http::HeaderValue::from_str(&args.location).context("location")?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let location = location.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let location = location.clone();
                async move {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::FOUND;
                    response
                        .headers_mut()
                        .insert(http::header::LOCATION, location);
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
