//! `shortline`: the admin REST API from a terminal or a script.
//!
//! `shortline login` checks a key against the control plane and keeps the
//! URL and the token in a file only its owner can read; every other command
//! uses them (or `--server`/`--token`, `SHORTLINE_SERVER`/`SHORTLINE_TOKEN`).
//! Answers are tables for people, or the API's JSON with `--json`; a refusal
//! is the API's problem (title, detail, field) on stderr, exit status 1.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Where the control plane listens by default (`shortline-control up`).
const DEFAULT_URL: &str = "http://127.0.0.1:8081";

#[derive(Parser)]
#[command(
    name = "shortline",
    version,
    about = "Shortline's admin API from the command line"
)]
struct Cli {
    /// The control plane's URL; default: the one `login` saved, else
    /// http://127.0.0.1:8081.
    #[arg(long, global = true, env = "SHORTLINE_SERVER")]
    server: Option<String>,
    /// An API key's token; default: the one `login` saved.
    #[arg(long, global = true, env = "SHORTLINE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where `login` keeps the URL and token (default:
    /// $XDG_CONFIG_HOME/shortline/cli.json, else ~/.config/shortline/cli.json).
    #[arg(long, global = true, env = "SHORTLINE_CLI_CONFIG")]
    config: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a token against the control plane and keep it (file mode 0600).
    /// The token comes from --token or SHORTLINE_TOKEN, else from standard
    /// input (not echoed on a terminal).
    Login,
    /// Forget the saved token.
    Logout,
    /// Short links.
    #[command(subcommand)]
    Links(LinksCommand),
    /// API keys (admin).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// People's accounts (admin).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Short domains (admin).
    #[command(subcommand)]
    Domains(DomainsCommand),
    /// Webhook subscriptions: yours, or every one for an admin.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum LinksCommand {
    /// Create a link and print its short URL.
    Create {
        /// The target.
        url: String,
        #[command(flatten)]
        fields: LinkFields,
        /// A custom code.
        #[arg(long)]
        alias: Option<String>,
    },
    /// List links, newest first.
    List {
        /// Only links with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only this owner's links (admin).
        #[arg(long)]
        owner: Option<String>,
        /// Links per page (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Every page, not only the first.
        #[arg(long)]
        all: bool,
    },
    /// Show a link.
    Get {
        code: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Change a link: only the fields given.
    Update {
        code: String,
        /// A new target.
        #[arg(long = "url")]
        target: Option<String>,
        #[command(flatten)]
        fields: LinkFields,
        /// active or disabled.
        #[arg(long)]
        status: Option<String>,
        /// Remove every tag.
        #[arg(long, conflicts_with = "tags")]
        clear_tags: bool,
    },
    /// Delete a link.
    Delete {
        code: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// A link's clicks: totals and breakdowns.
    Stats {
        code: String,
        #[arg(long)]
        domain: Option<String>,
        /// RFC 3339 start (default: 30 days ago).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 end (default: now).
        #[arg(long)]
        to: Option<String>,
        /// hour or day.
        #[arg(long)]
        granularity: Option<String>,
    },
    /// Write a link's QR code to a file (or standard output with `-o -`).
    Qr {
        code: String,
        #[arg(long)]
        domain: Option<String>,
        /// svg or png (default: from the file name, else svg).
        #[arg(long)]
        format: Option<String>,
        /// Pixels per module (png).
        #[arg(long)]
        size: Option<u32>,
        /// L, M, Q or H.
        #[arg(long)]
        ecc: Option<String>,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Every change of a link's target.
    History {
        code: String,
        #[arg(long)]
        domain: Option<String>,
    },
}

/// Fields shared by create and update.
#[derive(Args)]
struct LinkFields {
    /// The short domain (default: the default domain).
    #[arg(long)]
    domain: Option<String>,
    #[arg(long)]
    title: Option<String>,
    /// A tag; repeat for more.
    #[arg(long = "tag", id = "tags")]
    tags: Vec<String>,
    /// RFC 3339 time after which the link answers 410.
    #[arg(long)]
    expires_at: Option<String>,
    /// Seconds from now after which the link answers 410.
    #[arg(long, conflicts_with = "expires_at")]
    ttl_seconds: Option<u64>,
    /// Clicks after which the link answers 410.
    #[arg(long)]
    max_clicks: Option<u64>,
    /// 301, 302, 307 or 308.
    #[arg(long)]
    redirect: Option<u16>,
    /// Pass the request's query on to the target.
    #[arg(long)]
    forward_query: Option<bool>,
}

impl LinkFields {
    fn into_body(self, body: &mut Map<String, Value>) {
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(name.to_owned(), value);
            }
        };
        put("title", self.title.map(Value::from));
        put("expires_at", self.expires_at.map(Value::from));
        put("ttl_seconds", self.ttl_seconds.map(Value::from));
        put("max_clicks", self.max_clicks.map(Value::from));
        put("redirect", self.redirect.map(Value::from));
        put("forward_query", self.forward_query.map(Value::from));
        put("tags", (!self.tags.is_empty()).then(|| json!(self.tags)));
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List the keys (never their tokens).
    List,
    /// Create a key and print its token, shown only this once.
    Create {
        name: String,
        /// user or admin (default: user, or the user's role with --user).
        #[arg(long)]
        role: Option<String>,
        /// The id of the user the key belongs to and acts as.
        #[arg(long)]
        user: Option<String>,
        /// Whose links a user key manages (default: its name).
        #[arg(long)]
        owner: Option<String>,
        /// A short domain the key may use; repeat for more (default: all).
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Delete a key: its token stops working at once.
    Delete { id: String },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// List the accounts.
    List,
    /// Make an account and print its invitation, a one-time token to hand
    /// over; its holder sets a password with it.
    Create {
        email: String,
        /// member or admin.
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Show one account.
    Get { id: String },
    /// Change an account's role, or disable or enable it.
    Update {
        id: String,
        #[arg(long)]
        role: Option<String>,
        /// Disable: no sign-in; sessions end and keys stop working.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
    /// Delete an account; its links stay, owned by its email.
    Delete { id: String },
    /// Print a one-time token that sets a new password.
    Reset { id: String },
    /// End every session of an account.
    SignOut { id: String },
}

#[derive(Subcommand)]
enum WebhooksCommand {
    List,
    /// Subscribe URL to events and print the signing secret, shown only
    /// this once.
    Create {
        url: String,
        /// link.created, link.updated, link.deleted, link.flagged or
        /// link.clicks; repeat for more.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// Admins: only this owner's links.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one, with where its deliveries stand.
    Get {
        id: String,
    },
    /// The last delivery attempts, newest first.
    Deliveries {
        id: String,
    },
    /// Turn one back on after it was disabled for failing.
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
enum DomainsCommand {
    List,
    /// Add a short domain.
    Create {
        name: String,
        /// Links created without a domain go here.
        #[arg(long)]
        default: bool,
        /// Serve it over HTTPS.
        #[arg(long)]
        https: bool,
        /// Order its certificate over ACME.
        #[arg(long)]
        acme: bool,
    },
    /// Remove a short domain that has no links.
    Delete {
        name: String,
    },
}

/// What `login` keeps.
#[derive(Serialize, Deserialize, Default)]
struct Saved {
    url: Option<String>,
    token: Option<String>,
}

fn config_path(cli: &Cli) -> Result<PathBuf> {
    if let Some(path) = &cli.config {
        return Ok(path.clone());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --config"))?,
        )
        .join(".config"),
    };
    Ok(base.join("shortline").join("cli.json"))
}

fn load_saved(cli: &Cli) -> Result<Saved> {
    let path = config_path(cli)?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a saved login; log in again", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `saved` readable by its owner only, replacing the file whole.
fn store_saved(cli: &Cli, saved: &Saved) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let path = config_path(cli)?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let temporary = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    // The mode above is masked by the umask; this is not.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(&serde_json::to_vec_pretty(saved)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Reads a token from standard input, without echo on a terminal.
fn read_token() -> Result<String> {
    let stdin = std::io::stdin();
    let mut token = String::new();
    if stdin.is_terminal() {
        eprint!("API token: ");
        let _echo = EchoOff::new();
        stdin.read_line(&mut token)?;
        eprintln!();
    } else {
        stdin.lock().read_to_string(&mut token)?;
    }
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("no token given: pass --token, set SHORTLINE_TOKEN or type it when asked");
    }
    Ok(token)
}

/// Terminal echo off until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid pointer to a termios.
        if unsafe { libc::tcgetattr(0, &raw mut saved) } != 0 {
            return Self(None);
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw const quiet) };
        Self(Some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores what tcgetattr read.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

/// A refusal from the API, as its problem document says it.
#[derive(Debug)]
struct Refused {
    status: u16,
    title: String,
    detail: String,
    field: Option<String>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.title, self.status)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if let Some(field) = &self.field {
            write!(f, " [field: {field}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

struct Api {
    url: String,
    token: String,
    agent: ureq::Agent,
}

/// An answer's body.
enum Answer {
    Json(Value),
    Bytes(Vec<u8>),
    Empty,
}

impl Api {
    fn new(url: String, token: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build()
            .new_agent();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer> {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(body),
            ("PATCH", Some(body)) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .send_json(body),
            _ => unreachable!("every call passes a body where its method takes one"),
        };
        let mut response = sent.map_err(|e| anyhow!("cannot reach {}: {e}", self.url))?;
        let status = response.status().as_u16();
        let json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| anyhow!("cannot read the answer from {}: {e}", self.url))?;
        if !(200..300).contains(&status) {
            let problem: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let text = |name: &str| problem.get(name).and_then(Value::as_str).map(str::to_owned);
            return Err(Refused {
                status,
                title: text("title").unwrap_or_else(|| format!("HTTP {status}")),
                detail: text("detail")
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned()),
                field: text("field"),
            }
            .into());
        }
        Ok(if bytes.is_empty() {
            Answer::Empty
        } else if json {
            Answer::Json(serde_json::from_slice(&bytes).context("the answer is not JSON")?)
        } else {
            Answer::Bytes(bytes)
        })
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        match self.call(method, path, body)? {
            Answer::Json(value) => Ok(value),
            _ => bail!("{method} {path} did not answer JSON"),
        }
    }
}

/// `?name=value&...` of the pairs that have a value.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            out.append_pair(name, value);
        }
    }
    let encoded = out.finish();
    if encoded.is_empty() {
        encoded
    } else {
        format!("?{encoded}")
    }
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

const WEBHOOK_FIELDS: [&str; 10] = [
    "id",
    "url",
    "events",
    "owner",
    "enabled",
    "disabled_reason",
    "pending",
    "delivered",
    "failing_since",
    "last_error",
];

fn webhooks(api: &Api, command: WebhooksCommand, print: Printer<'_>) -> Result<()> {
    let path = |id: &str, rest: &str| format!("/api/v1/webhooks/{}{rest}", segment(id));
    let enabled = |id: &str, on: bool| -> Result<()> {
        let hook = api.json("PATCH", &path(id, ""), Some(&json!({"enabled": on})))?;
        print(&hook, &|h| fields(h, &WEBHOOK_FIELDS).to_string());
        Ok(())
    };
    match command {
        WebhooksCommand::List => {
            let list = api.json("GET", "/api/v1/webhooks", None)?;
            print(&list, &|list| {
                let items = list.as_array().cloned().unwrap_or_default();
                let names = ["id", "url", "events", "enabled", "pending", "last_error"];
                table(
                    &["id", "url", "events", "enabled", "pending", "last error"],
                    rows_of(&items, &names),
                )
                .to_string()
            });
        }
        WebhooksCommand::Create { url, events, owner } => {
            let mut body = json!({"url": url, "events": events});
            if let Some(owner) = owner {
                body["owner"] = json!(owner);
            }
            let hook = api.json("POST", "/api/v1/webhooks", Some(&body))?;
            print(&hook, &|h| {
                format!(
                    "{}\nThe signing secret is shown only this once:\n{}",
                    fields(h, &WEBHOOK_FIELDS),
                    text(&h["secret"])
                )
            });
        }
        WebhooksCommand::Get { id } => {
            let hook = api.json("GET", &path(&id, ""), None)?;
            print(&hook, &|h| fields(h, &WEBHOOK_FIELDS).to_string());
        }
        WebhooksCommand::Deliveries { id } => {
            let log = api.json("GET", &path(&id, "/deliveries"), None)?;
            print(&log, &|log| {
                let items = log["attempts"].as_array().cloned().unwrap_or_default();
                let names = [
                    "at",
                    "event_type",
                    "attempt",
                    "status",
                    "duration_ms",
                    "error",
                ];
                table(
                    &["at", "event", "attempt", "status", "ms", "error"],
                    rows_of(&items, &names),
                )
                .to_string()
            });
        }
        WebhooksCommand::Enable { id } => enabled(&id, true)?,
        WebhooksCommand::Disable { id } => enabled(&id, false)?,
        WebhooksCommand::Delete { id } => {
            api.call("DELETE", &path(&id, ""), None)?;
            eprintln!("webhook {id} deleted");
        }
    }
    Ok(())
}

const USER_FIELDS: [&str; 8] = [
    "id",
    "email",
    "role",
    "disabled",
    "password_set",
    "locked_until",
    "last_login_at",
    "created_at",
];

fn users(api: &Api, command: UsersCommand, print: Printer<'_>) -> Result<()> {
    let path = |id: &str, rest: &str| format!("/api/v1/users/{}{rest}", segment(id));
    match command {
        UsersCommand::List => {
            let list = api.json("GET", "/api/v1/users", None)?;
            print(&list, &|list| {
                let items = list.as_array().cloned().unwrap_or_default();
                let names = ["id", "email", "role", "disabled", "last_login_at"];
                table(
                    &["id", "email", "role", "disabled", "last sign-in"],
                    rows_of(&items, &names),
                )
                .to_string()
            });
        }
        UsersCommand::Create { email, role } => {
            let body = json!({"email": email, "role": role});
            let made = api.json("POST", "/api/v1/users", Some(&body))?;
            print(&made, &|made| {
                format!(
                    "{}\nHand over this invitation, valid until {}; it sets the password once:\n{}",
                    fields(&made["user"], &USER_FIELDS),
                    text(&made["invitation"]["expires_at"]),
                    text(&made["invitation"]["token"])
                )
            });
        }
        UsersCommand::Get { id } => {
            let user = api.json("GET", &path(&id, ""), None)?;
            print(&user, &|u| fields(u, &USER_FIELDS).to_string());
        }
        UsersCommand::Update {
            id,
            role,
            disable,
            enable,
        } => {
            let mut body = json!({});
            if let Some(role) = role {
                body["role"] = json!(role);
            }
            if disable || enable {
                body["disabled"] = json!(disable);
            }
            let user = api.json("PATCH", &path(&id, ""), Some(&body))?;
            print(&user, &|u| fields(u, &USER_FIELDS).to_string());
        }
        UsersCommand::Delete { id } => {
            api.call("DELETE", &path(&id, ""), None)?;
            eprintln!("user {id} deleted");
        }
        UsersCommand::Reset { id } => {
            let token = api.json("POST", &path(&id, "/reset"), Some(&json!({})))?;
            print(&token, &|t| {
                format!(
                    "Hand over this reset, valid until {}; it sets a new password once:\n{}",
                    text(&t["expires_at"]),
                    text(&t["token"])
                )
            });
        }
        UsersCommand::SignOut { id } => {
            api.call("DELETE", &path(&id, "/sessions"), None)?;
            eprintln!("every session of user {id} ended");
        }
    }
    Ok(())
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    table
}

/// A value's fields, one per line.
fn fields(value: &Value, names: &[&str]) -> Table {
    table(
        &["field", "value"],
        names
            .iter()
            .filter(|name| value.get(**name).is_some_and(|v| !v.is_null()))
            .map(|name| vec![(*name).to_owned(), text(&value[*name])]),
    )
}

const LINK_FIELDS: &[&str] = &[
    "short_url",
    "url",
    "code",
    "domain",
    "owner",
    "status",
    "redirect",
    "title",
    "tags",
    "clicks",
    "max_clicks",
    "expires_at",
    "created_at",
    "target_changed_at",
    "target_locked",
    "flag_reason",
];

/// The named fields of each item, as table rows.
fn rows_of(items: &[Value], names: &[&str]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|item| names.iter().map(|name| text(&item[*name])).collect())
        .collect()
}

const LINK_COLUMNS: &[&str] = &[
    "code", "domain", "url", "status", "clicks", "tags", "created",
];

fn run(cli: Cli) -> Result<()> {
    let json_out = cli.json;
    let print = |value: &Value, human: &dyn Fn(&Value) -> String| {
        if json_out {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{}", human(value));
        }
    };
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "shortline",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Logout => {
            let path = config_path(&cli)?;
            match std::fs::remove_file(&path) {
                Ok(()) => eprintln!("logged out: {} removed", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("not logged in"),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
            return Ok(());
        }
        Command::Login => {
            let saved = load_saved(&cli)?;
            let url = cli
                .server
                .clone()
                .or(saved.url)
                .unwrap_or_else(|| DEFAULT_URL.to_owned());
            let token = match &cli.token {
                Some(token) => token.clone(),
                None => read_token()?,
            };
            let api = Api::new(url.clone(), token.clone());
            // Any key may list its own links: a check of the token alone.
            api.json("GET", "/api/v1/links?limit=1", None)
                .context("the token was not accepted")?;
            let path = store_saved(
                &cli,
                &Saved {
                    url: Some(url.clone()),
                    token: Some(token),
                },
            )?;
            eprintln!("logged in to {url}; token kept in {}", path.display());
            return Ok(());
        }
        _ => {}
    }
    let saved = load_saved(&cli)?;
    let url = cli
        .server
        .clone()
        .or(saved.url)
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let token = cli.token.clone().or(saved.token).ok_or_else(|| {
        anyhow!("not logged in: run `shortline login`, or pass --token or SHORTLINE_TOKEN")
    })?;
    let api = Api::new(url, token);
    match cli.command {
        Command::Login | Command::Logout | Command::Completions { .. } => unreachable!(),
        Command::Links(command) => links(&api, command, json_out, &print),
        Command::Keys(KeysCommand::List) => {
            let keys = api.json("GET", "/api/v1/keys", None)?;
            print(&keys, &|keys| {
                let items = keys.as_array().cloned().unwrap_or_default();
                let names = ["id", "name", "role", "owner", "domains", "created_at"];
                table(
                    &["id", "name", "role", "owner", "domains", "created"],
                    rows_of(&items, &names),
                )
                .to_string()
            });
            Ok(())
        }
        Command::Keys(KeysCommand::Create {
            name,
            role,
            user,
            owner,
            domains,
        }) => {
            let mut body = json!({"name": name});
            match (user, role) {
                (Some(user), role) => {
                    body["user"] = json!(user);
                    if let Some(role) = role {
                        body["role"] = json!(role);
                    }
                }
                (None, role) => body["role"] = json!(role.as_deref().unwrap_or("user")),
            }
            if let Some(owner) = owner {
                body["owner"] = json!(owner);
            }
            if !domains.is_empty() {
                body["domains"] = json!(domains);
            }
            let key = api.json("POST", "/api/v1/keys", Some(&body))?;
            print(&key, &|key| {
                format!(
                    "{}\nThe token is shown only this once:\n{}",
                    fields(key, &["id", "name", "role", "owner", "domains"]),
                    text(&key["token"])
                )
            });
            Ok(())
        }
        Command::Keys(KeysCommand::Delete { id }) => {
            api.call("DELETE", &format!("/api/v1/keys/{}", segment(&id)), None)?;
            eprintln!("key {id} deleted");
            Ok(())
        }
        Command::Users(command) => users(&api, command, &print),
        Command::Webhooks(command) => webhooks(&api, command, &print),
        Command::Domains(DomainsCommand::List) => {
            let list = api.json("GET", "/api/v1/domains", None)?;
            print(&list, &|list| {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let names = ["display_name", "default", "base_url", "https", "acme"];
                table(
                    &["name", "default", "base url", "https", "acme"],
                    rows_of(&items, &names),
                )
                .to_string()
            });
            Ok(())
        }
        Command::Domains(DomainsCommand::Create {
            name,
            default,
            https,
            acme,
        }) => {
            let body = json!({"name": name, "default": default, "https": https, "acme": acme});
            let domain = api.json("POST", "/api/v1/domains", Some(&body))?;
            print(&domain, &|d| {
                fields(
                    d,
                    &[
                        "name",
                        "display_name",
                        "default",
                        "base_url",
                        "https",
                        "acme",
                    ],
                )
                .to_string()
            });
            Ok(())
        }
        Command::Domains(DomainsCommand::Delete { name }) => {
            api.call(
                "DELETE",
                &format!("/api/v1/domains/{}", segment(&name)),
                None,
            )?;
            eprintln!("domain {name} deleted");
            Ok(())
        }
    }
}

/// Prints an answer: its JSON with `--json`, else what the function makes
/// of it for people.
type Printer<'a> = &'a dyn Fn(&Value, &dyn Fn(&Value) -> String);

fn links(api: &Api, command: LinksCommand, json_out: bool, print: Printer<'_>) -> Result<()> {
    let link_path = |code: &str, rest: &str, domain: Option<String>| {
        format!(
            "/api/v1/links/{}{rest}{}",
            segment(code),
            query(&[("domain", domain)])
        )
    };
    match command {
        LinksCommand::Create {
            url,
            fields: link_fields,
            alias,
        } => {
            let mut body = Map::new();
            body.insert("url".to_owned(), json!(url));
            if let Some(alias) = alias {
                body.insert("alias".to_owned(), json!(alias));
            }
            if let Some(domain) = &link_fields.domain {
                body.insert("domain".to_owned(), json!(domain));
            }
            link_fields.into_body(&mut body);
            let link = api.json("POST", "/api/v1/links", Some(&Value::Object(body)))?;
            // The short URL alone, so `$(shortline links create ...)` is it.
            print(&link, &|link| text(&link["short_url"]));
        }
        LinksCommand::List {
            tag,
            owner,
            limit,
            all,
        } => {
            let mut items = Vec::new();
            let mut cursor = None;
            loop {
                let page = api.json(
                    "GET",
                    &format!(
                        "/api/v1/links{}",
                        query(&[
                            ("tag", tag.clone()),
                            ("owner", owner.clone()),
                            ("limit", Some(limit.to_string())),
                            ("cursor", cursor.take()),
                        ])
                    ),
                    None,
                )?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if !all || cursor.is_none() {
                    break;
                }
            }
            if json_out {
                let mut out = json!({"items": items});
                if let Some(cursor) = cursor {
                    out["next_cursor"] = json!(cursor);
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let names = [
                    "code",
                    "domain",
                    "url",
                    "status",
                    "clicks",
                    "tags",
                    "created_at",
                ];
                println!("{}", table(LINK_COLUMNS, rows_of(&items, &names)));
                if let Some(cursor) = cursor {
                    eprintln!("more links follow: --all lists every page (next cursor {cursor})");
                }
            }
        }
        LinksCommand::Get { code, domain } => {
            let link = api.json("GET", &link_path(&code, "", domain), None)?;
            print(&link, &|link| fields(link, LINK_FIELDS).to_string());
        }
        LinksCommand::Update {
            code,
            target,
            fields: link_fields,
            status,
            clear_tags,
        } => {
            let domain = link_fields.domain.clone();
            let mut body = Map::new();
            if let Some(target) = target {
                body.insert("url".to_owned(), json!(target));
            }
            if let Some(status) = status {
                body.insert("status".to_owned(), json!(status));
            }
            if clear_tags {
                body.insert("tags".to_owned(), json!([]));
            }
            link_fields.into_body(&mut body);
            if body.is_empty() {
                bail!("nothing to change: give at least one field (see --help)");
            }
            let link = api.json(
                "PATCH",
                &link_path(&code, "", domain),
                Some(&Value::Object(body)),
            )?;
            print(&link, &|link| fields(link, LINK_FIELDS).to_string());
        }
        LinksCommand::Delete { code, domain } => {
            api.call("DELETE", &link_path(&code, "", domain), None)?;
            eprintln!("link {code} deleted");
        }
        LinksCommand::Stats {
            code,
            domain,
            from,
            to,
            granularity,
        } => {
            let path = format!(
                "/api/v1/links/{}/stats{}",
                segment(&code),
                query(&[
                    ("domain", domain),
                    ("from", from),
                    ("to", to),
                    ("granularity", granularity),
                ])
            );
            let stats = api.json("GET", &path, None)?;
            print(&stats, &human_stats);
        }
        LinksCommand::Qr {
            code,
            domain,
            format,
            size,
            ecc,
            output,
        } => {
            let format = format.or_else(|| {
                output
                    .extension()
                    .and_then(|e| e.to_str())
                    .filter(|e| ["svg", "png"].contains(e))
                    .map(str::to_owned)
            });
            let path = format!(
                "/api/v1/links/{}/qr{}",
                segment(&code),
                query(&[
                    ("domain", domain),
                    ("format", format),
                    ("size", size.map(|s| s.to_string())),
                    ("ecc", ecc),
                ])
            );
            let Answer::Bytes(image) = api.call("GET", &path, None)? else {
                bail!("the QR code came back without an image");
            };
            if output.as_os_str() == "-" {
                std::io::stdout().write_all(&image)?;
            } else {
                std::fs::write(&output, &image)
                    .with_context(|| format!("cannot write {}", output.display()))?;
                eprintln!("QR code written to {}", output.display());
            }
        }
        LinksCommand::History { code, domain } => {
            let mut changes = Vec::new();
            let mut first = None;
            let mut after = None;
            loop {
                let page = api.json(
                    "GET",
                    &format!(
                        "/api/v1/links/{}/history{}",
                        segment(&code),
                        query(&[
                            ("domain", domain.clone()),
                            ("limit", Some("1000".to_owned())),
                            ("after", after.take()),
                        ])
                    ),
                    None,
                )?;
                changes.extend(page["changes"].as_array().cloned().unwrap_or_default());
                after = page["next_after"].as_u64().map(|n| n.to_string());
                first.get_or_insert(page);
                if after.is_none() {
                    break;
                }
            }
            let mut history = first.unwrap_or_default();
            history["changes"] = Value::Array(changes);
            history["next_after"] = Value::Null;
            print(&history, &|h| {
                let changes = h["changes"].as_array().cloned().unwrap_or_default();
                let rows = rows_of(&changes, &["n", "at", "from", "to", "by"]);
                format!(
                    "{}\n{}",
                    fields(
                        h,
                        &[
                            "short_url",
                            "url",
                            "created_at",
                            "target_changed_at",
                            "target_locked"
                        ]
                    ),
                    table(&["#", "when", "from", "to", "by"], rows)
                )
            });
        }
    }
    Ok(())
}

/// A link's stats for people: totals, then each breakdown.
fn human_stats(stats: &Value) -> String {
    let mut out = fields(
        stats,
        &[
            "total_clicks",
            "human_clicks",
            "bot_clicks",
            "preview_clicks",
            "head_requests",
        ],
    )
    .to_string();
    for breakdown in [
        "referrers",
        "countries",
        "browsers",
        "os",
        "devices",
        "routes",
    ] {
        let Some(items) = stats[breakdown].as_array().filter(|a| !a.is_empty()) else {
            continue;
        };
        let rows = rows_of(items, &["value", "clicks"]);
        out.push_str(&format!("\n{}", table(&[breakdown, "clicks"], rows)));
    }
    if let Some(series) = stats["series"].as_array().filter(|a| !a.is_empty()) {
        let rows = rows_of(series, &["t", "total", "human", "bot", "preview", "head"]);
        out.push_str(&format!(
            "\n{}",
            table(&["from", "total", "human", "bot", "preview", "head"], rows)
        ));
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
