//! goose against one URL path list, for comparison with wrk and
//! shortline-loadtest (`docs/BENCHMARKS.md`, "Why the load tester is not
//! goose"). Paths come from the file named by `PATHS`; goose's own flags set
//! the host, users and run time:
//!
//! ```text
//! PATHS=paths.txt ./target/release/goose-compare --host http://127.0.0.1:8080 \
//!     --users 64 --hatch-rate 64 --run-time 8s --no-reset-metrics -q
//! ```

use std::sync::OnceLock;

use goose::prelude::*;

static PATHS: OnceLock<Vec<String>> = OnceLock::new();

/// Redirects are answers to check, not to follow.
async fn no_redirects(user: &mut GooseUser) -> TransactionResult {
    user.set_client_builder(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()))
        .await?;
    Ok(())
}

async fn redirect(user: &mut GooseUser) -> TransactionResult {
    let paths = PATHS.get().expect("paths loaded");
    let n = user.weighted_users_index.wrapping_mul(2_654_435_761) as usize;
    let index = (n ^ user.get_iterations()) % paths.len();
    let _ = user.get(&paths[index]).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    let file = std::env::var("PATHS").expect("PATHS names a file of request paths");
    let paths: Vec<String> = std::fs::read_to_string(file)
        .expect("readable PATHS file")
        .lines()
        .map(str::to_owned)
        .collect();
    PATHS.set(paths).expect("set once");
    GooseAttack::initialize()?
        .register_scenario(
            scenario!("redirects")
                .register_transaction(transaction!(no_redirects).set_on_start())
                .register_transaction(transaction!(redirect)),
        )
        .execute()
        .await?;
    Ok(())
}
