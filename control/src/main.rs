//! `shortline-control`: the control plane binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use shortline_control::app::formats::Format;
use shortline_control::config::{Config, Overrides};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "shortline-control",
    version,
    about = "Shortline's control plane: admin API, store and publishing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane.
    Serve(Common),
    /// Run the control plane and a proxy beside it: the whole system on one host.
    Up(Common),
    /// Copy the running control plane's embedded store into a file (online:
    /// one consistent read, writes go on).
    Backup {
        #[command(flatten)]
        common: Common,
        /// Where to write the backup; written to a temporary name, synced,
        /// then renamed, so a file at this path is always whole.
        #[arg(long)]
        out: PathBuf,
        /// An admin API key (default: admin_token from the configuration).
        #[arg(long, env = "SHORTLINE_BACKUP_TOKEN")]
        token: Option<String>,
    },
    /// Mint a new admin API key in the store, for when the admin token is
    /// lost. Works on the store directly: stop the control plane first
    /// (the embedded store refuses a second process).
    AdminToken {
        #[command(flatten)]
        common: Common,
        /// The new key's name, shown in the key list.
        #[arg(long, default_value = "recovered admin")]
        name: String,
    },
    /// Restore a backup into an empty data_dir (control stopped).
    Restore {
        #[command(flatten)]
        common: Common,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Load links from a CSV file, or another shortener's export, straight
    /// into the store, each row checked as the create API checks it. Stop
    /// the control plane first with the embedded store. Run again with the
    /// same file, it goes on after the last committed row. Refused rows are
    /// printed to stdout as `row,reason`; progress goes to stderr (a bar
    /// on a terminal, lines otherwise).
    Import {
        #[command(flatten)]
        common: Common,
        /// The file, or an http(s) URL to fetch it from. CSV: a header row,
        /// then one link per row; columns url (required), code, domain,
        /// title, tags (`a|b`), expires_at, max_clicks, redirect,
        /// created_at, visits. The other formats are described in
        /// docs/import.md.
        source: String,
        /// What made the file.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Put every link on this short domain, whatever the file says
        /// (for example the links of bit.ly's own domain, which cannot move).
        #[arg(long)]
        domain: Option<String>,
        /// The key name that owns the imported links.
        #[arg(long, default_value = "import")]
        owner: String,
        /// Rows per transaction (default 50,000 with the embedded store,
        /// 2,000 with FoundationDB).
        #[arg(long)]
        batch: Option<usize>,
        /// Check every row and report, writing nothing (codes already taken
        /// and blocked domains are found only by a real import).
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the threat list line that lists a URL exactly (the SHA-256 of
    /// its canonical host and path), ready to append to the file.
    ThreatHash {
        /// The URL (any form; it is canonicalised first).
        url: String,
        /// Print every lookup expression of the URL with its hash; listing
        /// `host/` lists the whole host, `host/dir/` everything under dir.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug)]
struct Common {
    /// TOML configuration file; every key is optional (see docs/configuration.md).
    #[arg(long, env = "SHORTLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides control_listen.
    #[arg(long)]
    control_listen: Option<SocketAddr>,
    /// Overrides proxy_listen.
    #[arg(long)]
    proxy_listen: Option<SocketAddr>,
    /// Overrides proxy_metrics_listen.
    #[arg(long)]
    proxy_metrics_listen: Option<SocketAddr>,
    /// Overrides public_url.
    #[arg(long)]
    public_url: Option<String>,
}

impl Common {
    fn load(&self) -> Result<Config> {
        Config::load(
            self.config.as_deref(),
            &Overrides {
                data_dir: self.data_dir.clone(),
                control_listen: self.control_listen,
                proxy_listen: self.proxy_listen,
                proxy_metrics_listen: self.proxy_metrics_listen,
                public_url: self.public_url.clone(),
            },
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, with_proxy) = match &cli.command {
        Command::Serve(c) => (c, false),
        Command::Up(c) => (c, true),
        Command::Backup { common, out, token } => {
            return report(
                common
                    .load()
                    .and_then(|c| backup(&c, out, token.as_deref())),
            );
        }
        Command::AdminToken { common, name } => {
            return report(common.load().and_then(|c| admin_token(&c, name)));
        }
        Command::Restore { common, from } => {
            return report(common.load().and_then(|c| restore(&c, from)));
        }
        Command::Import {
            common,
            source,
            format,
            domain,
            owner,
            batch,
            dry_run,
        } => {
            let options = shortline_control::app::import::Options {
                source: source.clone(),
                format: *format,
                domain: domain.clone(),
                owner: owner.clone(),
                batch: *batch,
                dry_run: *dry_run,
            };
            return report(common.load().and_then(|c| import(c, &options)));
        }
        Command::ThreatHash { url, all } => {
            let canonical = shortline_control::domain::threats::canonical::canonicalize(url);
            println!("# canonical: {canonical}");
            let hashes = shortline_control::domain::threats::expression_hashes(url);
            for (expression, hash) in hashes.iter().take(if *all { usize::MAX } else { 1 }) {
                println!("{hash}  # {expression}");
            }
            return ExitCode::SUCCESS;
        }
    };
    let config = match common.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    shortline_common::settings::init_logging(config.log_format);
    match run(config, with_proxy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an import and prints its summary.
fn import(config: Config, options: &shortline_control::app::import::Options) -> Result<()> {
    // As in `run`: the network guard outlives the runtime and the store.
    #[cfg(feature = "fdb")]
    let _network = (config.store_backend == shortline_control::config::StoreBackend::Fdb)
        .then(shortline_control::db::fdb::boot);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = std::io::stdout();
    let mut progress = shortline_control::app::import::Progress::stderr();
    let summary = runtime.block_on(shortline_control::app::import::run(
        config,
        options,
        &mut report,
        &mut progress,
    ));
    drop(runtime);
    progress.finish();
    let summary = summary?;
    if options.dry_run {
        eprintln!("dry run: nothing was written");
    }
    anyhow::ensure!(
        summary.refused == 0,
        "{} of {} rows were refused (listed above)",
        summary.refused,
        summary.rows
    );
    Ok(())
}

/// Streams `GET /api/v1/backup` into `out`, checks it end to end, then
/// renames it into place.
fn backup(config: &Config, out: &std::path::Path, token: Option<&str>) -> Result<()> {
    use std::io::Write;
    let token = token
        .or(config.admin_token.as_deref())
        .context("give --token (or SHORTLINE_BACKUP_TOKEN): an admin API key")?;
    let url = format!("http://{}/api/v1/backup", config.control_listen);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .with_context(|| format!("cannot reach the control plane at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let detail = response.body_mut().read_to_string().unwrap_or_default();
        anyhow::bail!("the control plane answered {status}: {detail}");
    }
    let partial = out.with_extension("partial");
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let bytes = std::io::copy(
        &mut response.body_mut().with_config().limit(u64::MAX).reader(),
        &mut file,
    )
    .context("the backup stream broke off")?;
    file.flush()?;
    file.sync_all()?;
    let (header, records) = shortline_control::db::backup::verify(&mut std::io::BufReader::new(
        std::fs::File::open(&partial)?,
    ))
    .context("the downloaded backup does not check out")?;
    std::fs::rename(&partial, out)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    println!(
        "backup {}: {records} records, {bytes} bytes, through change {}",
        out.display(),
        header.seq
    );
    Ok(())
}

/// Adds a new admin key to the configured store and prints its token.
fn admin_token(config: &Config, name: &str) -> Result<()> {
    #[cfg(feature = "fdb")]
    let _network = (config.store_backend == shortline_control::config::StoreBackend::Fdb)
        .then(shortline_control::db::fdb::boot);
    let backend = shortline_control::app::server::open_backend(config)
        .context("cannot open the store; if the control plane is running, stop it first")?;
    let token = shortline_control::state::mint_admin_key(&*backend, name)?;
    println!("new admin token (shown once, only its hash is stored): {token}");
    println!("earlier keys still work; list them with GET /api/v1/keys and delete any that leaked");
    Ok(())
}

/// Restores a backup into the configured (empty) embedded store.
fn restore(config: &Config, from: &std::path::Path) -> Result<()> {
    if config.store_backend != shortline_control::config::StoreBackend::Redb {
        anyhow::bail!("restore writes the embedded store; restore FoundationDB with fdbrestore");
    }
    let open = || -> Result<std::io::BufReader<std::fs::File>> {
        Ok(std::io::BufReader::new(
            std::fs::File::open(from).with_context(|| format!("cannot open {}", from.display()))?,
        ))
    };
    let (header, _) = shortline_control::db::backup::verify(&mut open()?)?;
    let key = shortline_control::db::backup::permutation_key(&header)?;
    shortline_control::app::server::prepare_data_dir(&config.data_dir)?;
    let key_path = config.layout().permutation_key();
    match std::fs::read(&key_path) {
        Ok(existing) if existing != key => anyhow::bail!(
            "{} holds another permutation secret; restore into an empty data_dir",
            key_path.display()
        ),
        Ok(_) => {}
        Err(_) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .with_context(|| format!("cannot write {}", key_path.display()))?;
            std::io::Write::write_all(&mut file, &key)?;
            file.sync_all()?;
        }
    }
    let backend = shortline_control::app::server::open_backend(config)?;
    let restored = shortline_control::db::backup::import(&*backend, &mut open()?)?;
    println!(
        "restored {} records from {} (taken {}); change sequence now {}",
        restored.records,
        from.display(),
        header.created_at,
        restored.seq
    );
    Ok(())
}

fn run(config: Config, with_proxy: bool) -> Result<()> {
    // The FoundationDB network thread starts once and stops after everything
    // else (this guard is the last thing `run` drops).
    #[cfg(feature = "fdb")]
    let _network = (config.store_backend == shortline_control::config::StoreBackend::Fdb)
        .then(shortline_control::db::fdb::boot);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("control")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        if !with_proxy {
            return shortline_control::app::server::serve(config).await;
        }
        shortline_control::app::up::run(config).await
    });
    // Stop the runtime's threads (and the committer's store handle with
    // them) before the network guard goes.
    drop(runtime);
    result
}
