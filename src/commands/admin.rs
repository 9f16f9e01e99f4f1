//! `orstream case`, `orstream camera` and `orstream status`: the admin API of a running
//! ingest (`ingest/openapi.yaml`), from the command line.
//!
//! Every command takes `--admin URL` (`ORSTREAM_ADMIN_URL`, default `http://127.0.0.1:9465`)
//! and `--token-file FILE` (`ORSTREAM_ADMIN_TOKEN_FILE`): a file holding the token alone, or
//! `NAME TOKEN` lines of which `--as NAME` picks one (the first without it). A refusal prints
//! the API's error and exits 2 for a request the API refused as wrong (4xx), 1 otherwise.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use orstream_ingest::admin::Tokens;
use orstream_shell::exit::ExitReason;
use serde_json::{Value, json};

/// Longest a request may take: adding a camera waits for its first frame.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read.
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// Where the admin API is and the token to use.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The admin API of ingest.
    #[arg(
        long = "admin",
        env = "ORSTREAM_ADMIN_URL",
        default_value = "http://127.0.0.1:9465",
        global = true
    )]
    pub url: String,
    /// The file holding the token (the token alone, or `NAME TOKEN` lines); required.
    #[arg(
        long,
        env = "ORSTREAM_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        global = true
    )]
    pub token_file: Option<PathBuf>,
    /// Which token of the file, by name.
    #[arg(long = "as", value_name = "NAME", global = true)]
    pub name: Option<String>,
}

/// A client of the admin API.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the API at `url` (`http://host:port`) using `token`.
    pub fn new(url: &str, token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .new_agent();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            agent,
        }
    }

    /// The client the arguments describe.
    pub fn from_args(args: &AdminArgs) -> Result<Self> {
        let Some(path) = &args.token_file else {
            return Err(anyhow::anyhow!(
                "--token-file (or ORSTREAM_ADMIN_TOKEN_FILE) is needed: the admin API takes no request without a token"
            ))
            .context(ExitReason::Config);
        };
        let tokens = Tokens::read(path)
            .map_err(anyhow::Error::msg)
            .context(ExitReason::Config)?;
        let token = tokens
            .token(args.name.as_deref())
            .with_context(|| {
                format!(
                    "{}: no token named {}",
                    path.display(),
                    args.name.as_deref().unwrap_or("?")
                )
            })
            .context(ExitReason::Config)?;
        Ok(Self::new(&args.url, token))
    }

    /// Sends `method path` with `body`; the answer's JSON, or an error with the API's.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.url);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json");
        let text = body.map(Value::to_string).unwrap_or_default();
        let request = request
            .body(text.into_bytes())
            .with_context(|| format!("building {method} {url}"))
            .context(ExitReason::Config)?;
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("{method} {url}: the admin API does not answer"))?;
        let status = response.status().as_u16();
        let answer = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        let value: Value = serde_json::from_str(&answer)
            .with_context(|| format!("{method} {url}: the answer ({status}) is not JSON"))?;
        if status >= 300 {
            let error = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            let refused = anyhow::anyhow!("{error} ({status})");
            return Err(if (400..500).contains(&status) {
                refused.context(ExitReason::Config)
            } else {
                refused
            });
        }
        Ok(value)
    }

    /// Starts `case_id` in `room`.
    pub fn start_case(&self, room: &str, case_id: &str) -> Result<Value> {
        self.call(
            "POST",
            &format!("/v1/rooms/{room}/case"),
            Some(&json!({ "case_id": case_id })),
        )
    }

    /// Ends the open case of `room`.
    pub fn end_case(&self, room: &str) -> Result<Value> {
        self.call("DELETE", &format!("/v1/rooms/{room}/case"), None)
    }

    /// Adds camera `name` to `room` from `uri`.
    pub fn add_camera(&self, room: &str, name: &str, uri: &str, archive: bool) -> Result<Value> {
        let mode = if archive { "archive" } else { "live" };
        self.call(
            "POST",
            &format!("/v1/rooms/{room}/cameras"),
            Some(&json!({ "name": name, "uri": uri, "mode": mode })),
        )
    }

    /// Removes camera `name` from `room`.
    pub fn remove_camera(&self, room: &str, name: &str) -> Result<Value> {
        self.call("DELETE", &format!("/v1/rooms/{room}/cameras/{name}"), None)
    }

    /// The rooms, their cases and cameras.
    pub fn status(&self) -> Result<Value> {
        self.call("GET", "/v1/status", None)
    }
}

/// `orstream case ...`.
#[derive(Debug, clap::Args)]
pub struct CaseArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    command: CaseCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CaseCommand {
    /// Start a case in a room: its cameras publish from now on.
    Start {
        /// The room.
        #[arg(long)]
        room: String,
        /// The case id (never patient data).
        #[arg(long = "case")]
        case_id: String,
    },
    /// End the room's case: its cameras stop publishing.
    End {
        /// The room.
        #[arg(long)]
        room: String,
    },
}

/// `orstream camera ...`.
#[derive(Debug, clap::Args)]
pub struct CameraArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    command: CameraCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CameraCommand {
    /// Add a camera to a room, once it gives a frame.
    Add {
        /// The room.
        #[arg(long)]
        room: String,
        /// The camera's name in the room.
        #[arg(long)]
        name: String,
        /// rtsp://..., rtsps://..., file:PATH, v4l2:DEVICE or test:.
        #[arg(long)]
        uri: String,
        /// Archive mode: every frame, the camera waits for Kafka.
        #[arg(long)]
        archive: bool,
    },
    /// Remove a camera from its room.
    Remove {
        /// The room.
        #[arg(long)]
        room: String,
        /// The camera's name in the room.
        #[arg(long)]
        name: String,
    },
}

/// `orstream status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn print(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs `orstream case`.
pub fn run_case(args: CaseArgs) -> Result<()> {
    let client = Client::from_args(&args.admin)?;
    let answer = match &args.command {
        CaseCommand::Start { room, case_id } => client.start_case(room, case_id),
        CaseCommand::End { room } => client.end_case(room),
    }?;
    print(&answer)
}

/// Runs `orstream camera`.
pub fn run_camera(args: CameraArgs) -> Result<()> {
    let client = Client::from_args(&args.admin)?;
    let answer = match &args.command {
        CameraCommand::Add {
            room,
            name,
            uri,
            archive,
        } => client.add_camera(room, name, uri, *archive),
        CameraCommand::Remove { room, name } => client.remove_camera(room, name),
    }?;
    print(&answer)
}

/// Runs `orstream status`.
pub fn run_status(args: StatusArgs) -> Result<()> {
    let client = Client::from_args(&args.admin)?;
    let status = client.status()?;
    if args.json {
        return print(&status);
    }
    let Some(rooms) = status.get("rooms").and_then(Value::as_array) else {
        bail!("the status has no rooms");
    };
    println!(
        "{:<12} {:<24} {:<20} {:<8} {:<13} {:>10} {:>10}  last error",
        "room", "case", "camera", "kind", "state", "published", "outside"
    );
    for room in rooms {
        let name = room.get("room").and_then(Value::as_str).unwrap_or("?");
        let case = room
            .pointer("/case/case_id")
            .and_then(Value::as_str)
            .unwrap_or("-");
        let cameras = room
            .get("cameras")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if cameras.is_empty() {
            println!("{name:<12} {case:<24} (no camera)");
        }
        for camera in cameras {
            let text = |key: &str| {
                camera
                    .get(key)
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), ToOwned::to_owned))
                    .unwrap_or_default()
            };
            let error = camera
                .get("last_error")
                .and_then(Value::as_str)
                .unwrap_or("");
            println!(
                "{name:<12} {case:<24} {:<20} {:<8} {:<13} {:>10} {:>10}  {error}",
                text("name"),
                text("source_kind"),
                text("state"),
                text("published"),
                text("outside_case"),
            );
        }
    }
    Ok(())
}
