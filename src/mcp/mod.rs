//! The MCP front end: an rmcp stdio server over the engine. This file is the only one that knows
//! rmcp (pinned `=3.11.0`, `server` and `transport-io` only) and tokio; the other modules list
//! tools and run calls with plain data, so an SDK upgrade touches this file alone. `listing` says
//! which tools there are, `catalogue::call` runs a call (front-end tools in `tools/`, the
//! registry's in `registry`), `reply` is what a call answers, `jobs` what runs in the background,
//! and `wire` what a line of the protocol is.
//!
//! `Server` (one `Arc<Engine>`, its `Jobs` and its `Calls` in flight) implements `ServerHandler`.
//! `list_tools` turns `listing::tools` into rmcp `Tool`s. `call_tool` runs `catalogue::call` on a
//! blocking thread (`spawn_blocking`) with a fresh `CancelToken`, a watcher task that cancels it on
//! `notifications/cancelled`, and, with a progress token, a forwarder that sends each engine
//! `Progress` as `notifications/progress` from an unbounded channel, each send under a 1 s timeout;
//! the `Reply` becomes a `CallToolResult` with a `resource_link` per artifact URI. A call refused for
//! want of an approval, under a policy with `elicitation: true` and from a client that declared form
//! elicitation, asks the person in the client (`ask_approval`, `elicit.rs`) and, on a yes, is made
//! once more (`run_call`). `list_resources`
//! (the newest 100 artifacts), `list_resource_templates` and `read_resource` (the first MiB,
//! redacted) expose artifacts as resources. When a handshake-era client offers `roots`, the first call
//! asks for them (`adopt_roots`) and the first `file://` root becomes the working directory, the engine
//! built again from there. `set_level` (`logging/setLevel`) sets the least severe level the client wants;
//! warnings (the catalog's at once, a named runbook's with its call) then go out as
//! `notifications/message` (`warn`). Both are deprecated by the 2026-07-28 revision and kept for the
//! clients that use them. Prompts are not offered: a runbook is run with `runbook run`, not a prompt. rmcp settles the protocol revision (an `initialize`
//! handshake for 2024-11-05 to 2025-11-25; `server/discover` and per-request `_meta` for
//! 2026-07-28) and answers `ping` and unknown methods itself.
//!
//! `framing` is rmcp's transport: a reader task splits stdin into lines with bounded memory (a line
//! over `MAX_LINE` keeps only its first 64 KiB, to find its id), `wire::classify` decides what each
//! is, and `typed` turns what passes into rmcp's message (answering `-32602` when a served method's
//! params do not fit, where rmcp would answer `-32601`); faults are answered by the framing. One
//! writer task owns stdout and writes whole lines; both queues hold 64 lines, so a client that does
//! not read stalls the reader. `stop_on_signal` cancels every call (`Tracked` in `Calls`) on SIGTERM
//! or SIGINT, gives them up to 1.5 s to record how they ended, and exits with 143. `serve` serves
//! until stdin closes and waits up to 2 s for the writer. Jobs run in worker processes of their own
//! (`jobs`) and outlive the server whatever way it ends. A client that closes at once exits 0; a
//! session that ends otherwise is reported on stderr, status 1.

mod budget;
mod catalogue;
mod elicit;
pub(crate) mod jobs;
mod listing;
mod normalize;
mod registry;
pub(crate) mod reply;
mod schema;
mod shape;
pub(crate) mod tools;
mod wire;
pub(crate) mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use engine::run::{CancelToken, Engine, Progress};
use jobs::Jobs;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage, ClientRequest,
    ContentBlock, Implementation, JsonRpcMessage, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ServerCapabilities, ServerConfig, ServerJsonRpcMessage, Tool, ToolAnnotations,
};
use rmcp::service::{QuitReason, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value};

/// How long a person has to answer an approval asked in the client.
const ELICIT_WAIT: Duration = Duration::from_secs(600);

/// The cancel tokens of the calls in flight, so a terminating signal can stop their processes first.
#[derive(Debug, Default)]
struct Calls {
    next: AtomicU64,
    tokens: Mutex<HashMap<u64, CancelToken>>,
}

impl Calls {
    fn tokens(&self) -> MutexGuard<'_, HashMap<u64, CancelToken>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `token` until the returned guard is dropped, when the call ends.
    fn track(self: &Arc<Self>, token: &CancelToken) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.tokens().insert(id, token.clone());
        Tracked {
            calls: Arc::clone(self),
            id,
        }
    }

    fn cancel_all(&self) {
        self.tokens().values().for_each(CancelToken::cancel);
    }

    fn is_empty(&self) -> bool {
        self.tokens().is_empty()
    }
}

/// A call's entry in [`Calls`], removed when the call ends.
struct Tracked {
    calls: Arc<Calls>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.calls.tokens().remove(&self.id);
    }
}

/// On SIGTERM or SIGINT: cancel every call (their process groups are killed), give them a moment to
/// record how they ended, write what the engine holds back (queued index rows, the waiting audit
/// head: `process::exit` runs no destructor), then exit. Clients that close a session often follow
/// up with SIGTERM. Jobs are their workers' and go on.
async fn stop_on_signal(calls: Arc<Calls>, engine: Arc<Mutex<Arc<Engine>>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    calls.cancel_all();
    let _ = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < until && !calls.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await;
    let engine = engine.lock().map(|e| Arc::clone(&e)).ok();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(e) = engine {
            e.flush_records();
        }
    })
    .await;
    std::process::exit(143);
}

/// The server: one engine shared by concurrent calls (replaced once when the client's first root
/// becomes the working directory), the jobs it runs, the calls in flight, whether the client's roots
/// were asked for, and the least severe log level the client wants (`None`: no `notifications/message`).
#[derive(Debug, Clone)]
pub struct Server {
    engine: Arc<Mutex<Arc<Engine>>>,
    jobs: Arc<Jobs>,
    calls: Arc<Calls>,
    roots_asked: Arc<tokio::sync::Mutex<bool>>,
    log_level: Arc<Mutex<Option<u8>>>,
    /// Makes the engine again from the configuration of the working directory (after the client's
    /// root became it); without it, roots are not adopted.
    rebuild: Option<fn() -> Engine>,
}

/// A `file://` URI as a local path (percent-escapes decoded); `None` for any other scheme.
fn file_uri_path(uri: &str) -> Option<std::path::PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    let path = rest.get(rest.find('/')?..)?;
    use std::os::unix::ffi::OsStringExt;
    Some(std::ffi::OsString::from_vec(engine::ctx::percent_decoded(path)).into())
}

/// A log level's severity, 0 (`debug`) to 7 (`emergency`).
#[expect(
    deprecated,
    reason = "logging is deprecated by the 2026-07-28 revision; older clients use it"
)]
fn severity(level: rmcp::model::LoggingLevel) -> u8 {
    use rmcp::model::LoggingLevel as L;
    match level {
        L::Debug => 0,
        L::Info => 1,
        L::Notice => 2,
        L::Warning => 3,
        L::Error => 4,
        L::Critical => 5,
        L::Alert => 6,
        L::Emergency => 7,
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Server {
    pub fn new(engine: Engine) -> Self {
        Server {
            engine: Arc::new(Mutex::new(Arc::new(engine))),
            jobs: Arc::default(),
            calls: Arc::default(),
            roots_asked: Arc::default(),
            log_level: Arc::default(),
            rebuild: None,
        }
    }

    /// Adopts the client's roots: `rebuild` makes the engine anew in the root it moved to.
    pub fn with_rebuild(mut self, rebuild: fn() -> Engine) -> Self {
        self.rebuild = Some(rebuild);
        self
    }

    /// The engine calls run on now.
    /// Runs one call on a blocking thread with a fresh `CancelToken` that the client's
    /// `notifications/cancelled` cancels and, with a progress token, a forwarder of its progress.
    async fn run_call(
        &self,
        engine: &Arc<Engine>,
        name: String,
        args: Map<String, Value>,
        cx: &RequestContext<RoleServer>,
    ) -> Result<reply::Reply, McpError> {
        let cancel = CancelToken::new();
        let tracked = self.calls.track(&cancel);
        let (engine, jobs) = (Arc::clone(engine), Arc::clone(&self.jobs));
        let token = cancel.clone();
        // per-step progress, when the client sent a progress token; sends never wait on a closed client
        let progress_token = cx.meta.get_progress_token();
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = progress_token.clone().map(|t| {
            let peer = cx.peer.clone();
            tokio::spawn(async move {
                let mut n = 0.0;
                while let Some(message) = prx.recv().await {
                    n += 1.0;
                    let note = ProgressNotificationParam::new(t.clone(), n).with_message(message);
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), peer.notify_progress(note))
                            .await;
                }
            })
        });
        let wants_progress = progress_token.is_some();
        // the engine blocks (processes, git, files): it runs off the async runtime, and a client's
        // `notifications/cancelled` cancels it
        let work = tokio::task::spawn_blocking(move || {
            let send = move |p: &Progress| {
                let _ = ptx.send(match p {
                    Progress::RunStarted { run_id, .. } => format!("run {run_id} started"),
                    Progress::Started { step } => format!("{step} started"),
                    Progress::Finished {
                        step,
                        status,
                        duration_ms,
                        ..
                    } => format!("{step} {status:?} in {duration_ms} ms").to_lowercase(),
                    Progress::Advanced { step, message } => format!("{step}: {message}"),
                });
            };
            let call_cx = catalogue::CallCx {
                cancel: token,
                progress: if wants_progress { Some(&send) } else { None },
                followed: false,
            };
            catalogue::call(&engine, &jobs, &name, args, &call_cx)
        });
        let ct = cx.ct.clone();
        let watcher = tokio::spawn(async move {
            ct.cancelled().await;
            cancel.cancel();
        });
        let reply = work.await;
        watcher.abort();
        drop(tracked);
        if let Some(f) = forward {
            // the sender is gone with the call; the forwarder drains what is left and ends
            let _ = tokio::time::timeout(Duration::from_secs(1), f).await;
        }
        reply.map_err(|e| McpError::internal_error(format!("the call failed: {e}"), None))
    }

    /// Asks the person in the client to approve `ask`'s plan (`elicitation/create`, up to
    /// `ELICIT_WAIT`); when they do, the engine holds the approval (audited) for the call made again.
    /// Otherwise, why not: the word for `result.approval.elicitation`.
    async fn ask_approval(
        &self,
        engine: &Arc<Engine>,
        peer: &rmcp::Peer<RoleServer>,
        ask: &elicit::Ask,
    ) -> Result<(), String> {
        let params: rmcp::model::ElicitRequestParams = serde_json::from_value(serde_json::json!({
            "mode": "form",
            "message": ask.message,
            "requestedSchema": elicit::schema(),
        }))
        .map_err(|e| format!("failed: {e}"))?;
        let answer = match peer
            .create_elicitation_with_timeout(params, Some(ELICIT_WAIT))
            .await
        {
            Ok(a) => a,
            Err(rmcp::ServiceError::Timeout { .. }) => return Err("unanswered".into()),
            Err(e) => return Err(format!("failed: {e}")),
        };
        let action = serde_json::to_value(&answer.action).unwrap_or_default();
        let note = elicit::answer(action.as_str().unwrap_or(""), answer.content.as_ref())
            .map_err(str::to_owned)?;
        let client = peer
            .peer_info()
            .map(|i| i.client_info.name.clone())
            .unwrap_or_else(|| "an MCP client".into());
        let who = format!("a person in {client} (elicitation)");
        let (engine, ask) = (Arc::clone(engine), ask.clone());
        tokio::task::spawn_blocking(move || {
            engine.approve_elicited(&ask.digest, &ask.effects, &who, &note)
        })
        .await
        .map_err(|e| format!("failed: {e}"))?
        .map(|_| ())
        .map_err(|e| format!("failed: {e}"))
    }

    fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Once per session (and again after `notifications/roots/list_changed`): when the client offers
    /// `roots`, its first `file://` root becomes the working directory, so relative paths and the
    /// profiles directory are found there as if the server had been started in it; the engine is built
    /// again from there. A client without roots, or one that does not answer in 5 s, changes nothing;
    /// when the directory cannot be entered, neither does the engine.
    #[expect(
        deprecated,
        reason = "roots are deprecated by the 2026-07-28 revision; older clients use them"
    )]
    async fn adopt_roots(&self, cx: &RequestContext<RoleServer>) {
        let mut asked = self.roots_asked.lock().await;
        if *asked {
            return;
        }
        *asked = true;
        // only a client that did the `initialize` handshake takes requests from the server (the
        // stateless 2026-07-28 revision has none, and deprecates roots)
        if cx.peer.peer_info().is_none() || cx.client_capabilities().and_then(|c| c.roots).is_none()
        {
            return;
        }
        let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(5), cx.peer.list_roots()).await
        else {
            return;
        };
        let Some(dir) = list.roots.iter().find_map(|r| file_uri_path(&r.uri)) else {
            return;
        };
        let Some(rebuild) = self.rebuild else {
            return;
        };
        let rebuilt = tokio::task::spawn_blocking(move || {
            std::env::set_current_dir(&dir).ok().map(|()| rebuild())
        })
        .await;
        if let Ok(Some(engine)) = rebuilt {
            *self.engine.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(engine);
        }
    }

    /// Sends `warnings` as `notifications/message` (level `warning`, logger `infra`) when the client
    /// asked for that level or a lower one with `logging/setLevel`.
    #[expect(
        deprecated,
        reason = "logging is deprecated by the 2026-07-28 revision; older clients use it"
    )]
    async fn warn(&self, peer: &rmcp::Peer<RoleServer>, warnings: Vec<String>) {
        use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
        let wanted = *self
            .log_level
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if wanted.is_none_or(|w| w > severity(LoggingLevel::Warning)) {
            return;
        }
        for w in warnings {
            let note = LoggingMessageNotificationParam::new(LoggingLevel::Warning, w.into())
                .with_logger("infra");
            let _ = tokio::time::timeout(Duration::from_secs(1), peer.notify_logging_message(note))
                .await;
        }
    }

    fn tool_list(&self) -> Vec<Tool> {
        let output = Arc::new(object(reply::output_schema()));
        listing::tools(&self.engine())
            .into_iter()
            .map(|t| {
                Tool::new(t.name, t.description, object(t.input_schema))
                    .with_title(t.title.clone())
                    .with_raw_output_schema(output.clone())
                    // the title once, at the top level (not again in the annotations): the listing's budget
                    .with_annotations(
                        ToolAnnotations::new()
                            .read_only(t.read_only)
                            .destructive(t.destructive)
                            .idempotent(t.idempotent)
                            .open_world(t.open_world),
                    )
            })
            .collect()
    }
}

/// What the server tells a client it is for, from the registry, so it names what this build has.
fn instructions() -> String {
    let tools: Vec<&str> = engine::actions::registry()
        .iter()
        .filter(|t| t.name != "local")
        .map(|t| t.name)
        .collect();
    format!(
        "One audited engine for infrastructure: {}. Every call is compiled into a checked plan, run by \
         one engine and recorded (evidence, audit). Start with `help {{query}}` or `runbook {{action: list}}`; \
         see a runbook's effects with `runbook {{action: plan}}` before running it. Every tool takes \
         `output` (shape the result) and `store_as` (keep it in state); `help {{tool, action}}` gives exact \
         arguments, an example and these options.",
        tools.join(", ")
    )
}

impl ServerHandler for Server {
    #[expect(
        deprecated,
        reason = "logging is deprecated by the 2026-07-28 revision; older clients use it"
    )]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_logging()
                .build(),
        )
        .with_server_info(
            Implementation::new("infra", env!("CARGO_PKG_VERSION")).with_title("infra"),
        )
        .with_instructions(instructions())
    }

    /// The client's level for `notifications/message`; at `warning` or below, the catalog's warnings
    /// (a project runbook overriding a built-in, deprecated syntax) are sent at once.
    #[expect(
        deprecated,
        reason = "logging is deprecated by the 2026-07-28 revision; older clients use it"
    )]
    async fn set_level(
        &self,
        req: rmcp::model::SetLevelRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        *self
            .log_level
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(severity(req.level));
        let engine = self.engine();
        let warnings = tokio::task::spawn_blocking(move || catalogue::catalog_warnings(&engine))
            .await
            .unwrap_or_default();
        let (server, peer) = (self.clone(), cx.peer.clone());
        // after the answer to `logging/setLevel`, not before it
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            server.warn(&peer, warnings).await;
        });
        Ok(())
    }

    async fn on_roots_list_changed(&self, _cx: rmcp::service::NotificationContext<RoleServer>) {
        *self.roots_asked.lock().await = false;
    }

    async fn list_tools(
        &self,
        _req: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tool_list()))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = req.name.to_string();
        let args = req.arguments.unwrap_or_default();
        self.adopt_roots(&cx).await;
        let engine = self.engine();
        // a call that needs an approval may be asked of the person in the client, then made again
        let again = (engine.policy().elicitation()
            && args.get("async").and_then(Value::as_bool) != Some(true)
            && cx
                .peer
                .supported_elicitation_modes()
                .contains(&rmcp::service::ElicitationMode::Form))
        .then(|| (name.clone(), args.clone()));
        let mut reply = self.run_call(&engine, name, args, &cx).await?;
        if let Some((name, args)) = again
            && let Some(ask) = elicit::ask(&reply.body)
        {
            match self.ask_approval(&engine, &cx.peer, &ask).await {
                Ok(()) => reply = self.run_call(&engine, name, args, &cx).await?,
                Err(why) => {
                    if reply.body["result"]["approval"].is_object() {
                        reply.body["result"]["approval"]["elicitation"] = why.into();
                    }
                }
            }
        }
        self.warn(&cx.peer, std::mem::take(&mut reply.warnings))
            .await;
        let mut result = if reply.is_error {
            CallToolResult::structured_error(reply.body)
        } else {
            CallToolResult::structured(reply.body)
        };
        for uri in reply.links {
            let name = uri.rsplit('/').next().unwrap_or("artifact").to_owned();
            result
                .content
                .push(ContentBlock::resource_link(Resource::new(uri, name)));
        }
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _req: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let engine = self.engine();
        let list = tokio::task::spawn_blocking(move || {
            engine.list_artifacts(engine::run::ArtifactFilter::default(), 100)
        })
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))?
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let items = list
            .into_iter()
            .filter_map(|a| {
                let uri = a["uri"].as_str()?.to_owned();
                let name = uri.trim_start_matches("artifact://").to_owned();
                Some(Resource::new(uri, name).with_size(a["bytes"].as_u64().unwrap_or(0)))
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(items))
    }

    async fn list_resource_templates(
        &self,
        _req: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("artifact://runs/{runbook}/{run}", "run").with_description(
                "What a run holds (the `evidence` URI it returned): its status, journal and artifacts, as JSON.",
            ),
            ResourceTemplate::new("artifact://runs/{runbook}/{run}/{+path}", "run file")
                .with_description(
                    "A file of a run: `journal.jsonl` (its records) or a step's output such as `<step>/stdout` (first MiB; use the `artifacts` tool for ranges).",
                ),
        ]))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let engine = self.engine();
        let uri = req.uri.to_string();
        let read = tokio::task::spawn_blocking(move || {
            engine
                .read_artifact(
                    &uri,
                    engine::record::artifacts::From::Offset(0),
                    engine::record::artifacts::MAX_READ,
                )
                .map(|v| (uri, v))
        })
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        match read {
            Ok((uri, v)) => Ok(ReadResourceResult::new(vec![ResourceContents::text(
                v["text"].as_str().unwrap_or_default(),
                uri,
            )])
            .into()),
            Err(e) => Err(McpError::resource_not_found(e.to_string(), None)),
        }
    }
}

/// The longest JSON-RPC line read from stdin; a longer one is answered with an error and skipped.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// The methods this server serves with typed parameters: a call of one whose `params` do not fit is
/// answered `-32602` (rmcp alone would take it for an unknown method and answer `-32601`).
const SERVED: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// Why the `params` of a served method do not fit its type (`None`: they do, or the method is not one).
fn params_fault(method: &str, message: &Value) -> Option<String> {
    use rmcp::model as m;
    use serde::Deserialize;
    let mut probe = Map::new();
    probe.insert("method".into(), method.into());
    if let Some(p) = message.get("params") {
        probe.insert("params".into(), p.clone());
    }
    let probe = Value::Object(probe);
    fn check<'a, T: Deserialize<'a>>(v: &'a Value) -> Option<String> {
        T::deserialize(v).err().map(|e| e.to_string())
    }
    match method {
        "initialize" => check::<m::InitializeRequest>(&probe),
        "ping" => check::<m::PingRequest>(&probe),
        "server/discover" => check::<m::DiscoverRequest>(&probe),
        "tools/list" => check::<m::ListToolsRequest>(&probe),
        "tools/call" => check::<m::CallToolRequest>(&probe),
        "resources/list" => check::<m::ListResourcesRequest>(&probe),
        "resources/templates/list" => check::<m::ListResourceTemplatesRequest>(&probe),
        "resources/read" => check::<m::ReadResourceRequest>(&probe),
        _ => None,
    }
}

/// What becomes of a line `wire::classify` let through: a typed message for rmcp, an answer, or nothing
/// (a notification or response that does not parse is dropped, as the protocol asks).
fn typed(message: Value, id: Option<Value>) -> Result<Option<ClientJsonRpcMessage>, wire::Fault> {
    use serde::Deserialize;
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let served = SERVED.contains(&method.as_str());
    let parsed = ClientJsonRpcMessage::deserialize(&message);
    let Some(id) = id else {
        return Ok(parsed.ok());
    };
    let invalid_params = |why: String| {
        wire::Fault::new(
            wire::INVALID_PARAMS,
            id.clone(),
            format!("invalid params for `{method}`: {why}"),
        )
    };
    match parsed {
        // rmcp falls back to a custom request when a known method's params do not fit
        Ok(JsonRpcMessage::Request(r))
            if served && matches!(r.request, ClientRequest::CustomRequest(_)) =>
        {
            Err(invalid_params(
                params_fault(&method, &message).unwrap_or_else(|| "they do not fit".into()),
            ))
        }
        Ok(m) => Ok(Some(m)),
        Err(e) => match params_fault(&method, &message).filter(|_| served) {
            Some(why) => Err(invalid_params(why)),
            None => Err(wire::Fault::new(
                wire::INVALID_REQUEST,
                id.clone(),
                format!("invalid request: {e}"),
            )),
        },
    }
}

/// rmcp's side of the stdio: typed messages in (from the framing's reader), lines out (to its writer).
struct Stdio {
    incoming: tokio::sync::mpsc::Receiver<ClientJsonRpcMessage>,
    outgoing: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl rmcp::transport::Transport<RoleServer> for Stdio {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.outgoing.clone();
        async move {
            let mut line = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            line.push(b'\n');
            out.send(line)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        self.incoming.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.incoming.close();
        Ok(())
    }
}

/// The stdio between the client and rmcp. The reader thread takes stdin one line at a time with bounded memory
/// (a line over [`MAX_LINE`] keeps only its first [`wire::KEPT_PREFIX`] bytes, to find its id) and
/// classifies it (`wire::classify`, then `typed`): a message goes to rmcp, a fault is answered here, so
/// every line with an id gets exactly one answer. One writer thread owns stdout and writes whole lines,
/// from rmcp and from the reader alike, so they never interleave; the channels are bounded, so a client that
/// does not read its answers stops the reader rather than growing a buffer.
fn framing() -> (Stdio, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, Write};
    let (msg_tx, incoming) = tokio::sync::mpsc::channel::<ClientJsonRpcMessage>(64);
    let (outgoing, mut lines) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let faults = outgoing.clone();
    // plain threads own the two pipes: a blocking read or write there costs no hand-off through the
    // runtime's blocking pool, only the channel's wake-up
    let _reader = std::thread::Builder::new()
        .name("mcp-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            let mut line: Vec<u8> = Vec::new();
            let mut oversized = false;
            loop {
                let buf = match stdin.fill_buf() {
                    Ok([]) | Err(_) => break,
                    Ok(b) => b,
                };
                let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => (&buf[..i], true),
                    None => (buf, false),
                };
                let used = chunk.len() + usize::from(end);
                if oversized {
                    let room = wire::KEPT_PREFIX.saturating_sub(line.len());
                    line.extend_from_slice(&chunk[..room.min(chunk.len())]);
                } else if line.len() + chunk.len() > MAX_LINE {
                    oversized = true;
                    line.truncate(wire::KEPT_PREFIX);
                    line.shrink_to_fit();
                    let room = wire::KEPT_PREFIX.saturating_sub(line.len());
                    line.extend_from_slice(&chunk[..room.min(chunk.len())]);
                } else {
                    line.extend_from_slice(chunk);
                }
                stdin.consume(used);
                if !end {
                    continue;
                }
                let verdict = if oversized {
                    wire::oversized(&line, MAX_LINE)
                } else {
                    wire::classify(&line)
                };
                line.clear();
                oversized = false;
                let answer = match verdict {
                    wire::Verdict::Ignore => None,
                    wire::Verdict::Answer(fault) => Some(fault),
                    wire::Verdict::Pass { message, id } => match typed(message, id) {
                        Ok(Some(m)) => {
                            if msg_tx.blocking_send(m).is_err() {
                                break;
                            }
                            None
                        }
                        Ok(None) => None,
                        Err(fault) => Some(fault),
                    },
                };
                if let Some(fault) = answer
                    && faults.blocking_send(fault.to_line()).is_err()
                {
                    break;
                }
            }
            // stdin closed (a last line without its newline is incomplete and dropped): rmcp sees the
            // end when this thread's senders are gone
        });
    let writer = std::thread::Builder::new()
        .name("mcp-stdout".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            while let Some(first) = lines.blocking_recv() {
                if out.write_all(&first).is_err() {
                    return;
                }
                // write what else is ready, then flush once
                while let Ok(next) = lines.try_recv() {
                    if out.write_all(&next).is_err() {
                        return;
                    }
                }
                if out.flush().is_err() {
                    return;
                }
            }
        })
        .unwrap_or_else(|_| std::thread::spawn(|| ()));
    (Stdio { incoming, outgoing }, writer)
}

/// Serves MCP on stdin/stdout until the client closes stdin. Logs go to stderr; stdout is protocol only.
/// `false` when the server could not start or the session ended otherwise (said on stderr).
pub fn serve(engine: Engine, rebuild: fn() -> Engine) -> bool {
    // one thread for the protocol (reading, rmcp, writing: light work, no hand-offs between workers);
    // the engine's blocking work runs on the blocking pool
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::render::err(&format!("error: cannot start the runtime: {e}\n"));
            return false;
        }
    };
    rt.block_on(async move {
        let server = Server::new(engine).with_rebuild(rebuild);
        tokio::spawn(stop_on_signal(
            Arc::clone(&server.calls),
            Arc::clone(&server.engine),
        ));
        let (transport, writer) = framing();
        let running = match server.serve(transport).await {
            Ok(r) => r,
            // a client that connects and closes at once (a probe) is not an error
            Err(_) => return true,
        };
        let ended = running.waiting().await;
        // everything rmcp wrote reaches stdout before the process ends
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::task::spawn_blocking(move || writer.join()),
        )
        .await;
        match ended {
            Ok(QuitReason::Closed | QuitReason::Cancelled) => true,
            Ok(other) => {
                crate::render::err(&format!("mcp: the session ended: {other:?}\n"));
                false
            }
            Err(e) => {
                crate::render::err(&format!("mcp: {e}\n"));
                false
            }
        }
    })
}

#[cfg(test)]
mod tests;
