//! The MCP front end: an rmcp stdio server over the engine. This file is the only one that knows rmcp;
//! `catalogue` builds tools and runs calls with plain data, so an SDK upgrade touches this file alone.

mod catalogue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use engine::run::{CancelToken, Engine, Progress};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{QuitReason, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value};

/// Cancel tokens of the calls in flight, so a terminating signal can stop their processes first.
fn inflight() -> &'static Mutex<HashMap<u64, CancelToken>> {
    static M: OnceLock<Mutex<HashMap<u64, CancelToken>>> = OnceLock::new();
    M.get_or_init(Mutex::default)
}

/// A call's entry in [`inflight`], removed when the call ends.
struct Tracked(u64);

impl Tracked {
    fn new(token: &CancelToken) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = inflight().lock() {
            m.insert(id, token.clone());
        }
        Tracked(id)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(mut m) = inflight().lock() {
            m.remove(&self.0);
        }
    }
}

/// On SIGTERM or SIGINT: cancel every call and job (their process groups are killed), give them a moment to
/// record how they ended, then exit. Clients that close a session often follow up with SIGTERM.
async fn stop_on_signal() {
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
    if let Ok(m) = inflight().lock() {
        m.values().for_each(CancelToken::cancel);
    }
    let _ = tokio::task::spawn_blocking(|| {
        catalogue::cancel_all_jobs(Duration::from_millis(1500));
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < until
            && inflight().lock().map(|m| !m.is_empty()).unwrap_or(false)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await;
    std::process::exit(143);
}

/// The server: one engine shared by concurrent calls.
#[derive(Debug, Clone)]
pub struct Server {
    engine: Arc<Engine>,
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
            engine: Arc::new(engine),
        }
    }

    fn tool_list(&self) -> Vec<Tool> {
        let output = Arc::new(object(catalogue::output_schema()));
        catalogue::tools(&self.engine)
            .into_iter()
            .map(|t| {
                Tool::new(t.name, t.description, object(t.input_schema))
                    .with_title(t.title.clone())
                    .with_raw_output_schema(output.clone())
                    .with_annotations(
                        ToolAnnotations::with_title(t.title)
                            .read_only(t.read_only)
                            .destructive(t.destructive)
                            .idempotent(t.idempotent)
                            .open_world(t.open_world),
                    )
            })
            .collect()
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("infra", env!("CARGO_PKG_VERSION")).with_title("infra"))
            .with_instructions(
                "One audited engine for SSH-free local work so far: runbooks, state, git repositories, artifacts, \
                 audit. Start with `help {query}` or `runbook {action: list}`.",
            )
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
        let cancel = CancelToken::new();
        let tracked = Tracked::new(&cancel);
        let engine = Arc::clone(&self.engine);
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
                });
            };
            let call_cx = catalogue::CallCx {
                cancel: token,
                progress: if wants_progress { Some(&send) } else { None },
            };
            catalogue::call(&engine, &name, args, &call_cx)
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
        let reply =
            reply.map_err(|e| McpError::internal_error(format!("the call failed: {e}"), None))?;
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
        let root = self.engine.config().artifacts_root.clone();
        let list = tokio::task::spawn_blocking(move || engine::record::artifacts::list(&root, 100))
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
            ResourceTemplate::new(
                "artifact://runs/{runbook}/{run}/{step}/{name}",
                "run artifact",
            )
            .with_description(
                "An output of a run step (first MiB; use the `artifacts` tool for ranges).",
            ),
        ]))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let engine = Arc::clone(&self.engine);
        let uri = req.uri.to_string();
        let read = tokio::task::spawn_blocking(move || {
            engine::record::artifacts::read(
                &engine.config().artifacts_root,
                &uri,
                engine::record::artifacts::From::Offset(0),
                engine::record::artifacts::MAX_READ,
                engine.redactor(),
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

/// A JSON-RPC error with a null id (the request's id could not be read), as one line.
fn error_line(code: i64, message: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// Line framing between the real stdio and rmcp. Lines that are not JSON get the `-32700` parse error the
/// JSON-RPC spec asks for, and lines over [`MAX_LINE`] an error too (rmcp would drop both silently); both
/// are skipped with bounded memory. Only the writer task touches stdout, so replies never interleave.
fn framing() -> (
    (tokio::io::DuplexStream, tokio::io::DuplexStream),
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (rmcp_in, mut feed) = tokio::io::duplex(1 << 20);
    let (rmcp_out, drain) = tokio::io::duplex(1 << 20);
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let mut line: Vec<u8> = Vec::new();
        let mut oversized = false;
        loop {
            let buf = match stdin.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(b) => b,
            };
            let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let used = chunk.len();
            if !oversized {
                if line.len() + used > MAX_LINE {
                    oversized = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            stdin.consume(used);
            if !end {
                continue;
            }
            if oversized {
                let _ = err_tx.send(error_line(
                    -32600,
                    "the message is longer than 16 MiB; it was skipped",
                ));
            } else if line.iter().all(u8::is_ascii_whitespace) {
            } else if serde_json::from_slice::<serde::de::IgnoredAny>(&line).is_err() {
                let _ = err_tx.send(error_line(-32700, "parse error: the line is not JSON"));
            } else if feed.write_all(&line).await.is_err() {
                break;
            }
            line.clear();
            oversized = false;
        }
        // stdin closed: rmcp sees the end of its input
        let _ = feed.shutdown().await;
    });
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        let mut replies = tokio::io::BufReader::new(drain);
        let mut line = Vec::new();
        // error lines wait while a reply line is half read, so the two never interleave
        let mut pending: Vec<Vec<u8>> = Vec::new();
        loop {
            tokio::select! {
                n = replies.read_until(b'\n', &mut line) => {
                    match n {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            pending.insert(0, std::mem::take(&mut line));
                        }
                    }
                }
                Some(err) = err_rx.recv() => pending.push(err),
            }
            if !line.is_empty() {
                continue;
            }
            for l in pending.drain(..) {
                if out.write_all(&l).await.is_err() {
                    return;
                }
            }
            if out.flush().await.is_err() {
                return;
            }
        }
    });
    ((rmcp_in, rmcp_out), writer)
}

/// Serves MCP on stdin/stdout until the client closes stdin. Logs go to stderr; stdout is protocol only.
pub fn serve(engine: Engine) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::render::err(&format!("error: cannot start the runtime: {e}\n"));
            return crate::cli::FAILED;
        }
    };
    rt.block_on(async move {
        tokio::spawn(stop_on_signal());
        let (transport, writer) = framing();
        let running = match Server::new(engine).serve(transport).await {
            Ok(r) => r,
            // a client that connects and closes at once (a probe) is not an error
            Err(_) => return crate::cli::OK,
        };
        let ended = running.waiting().await;
        // everything rmcp wrote reaches stdout before the process ends
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        // jobs still running die with the server, processes included
        let _ = tokio::task::spawn_blocking(|| catalogue::cancel_all_jobs(Duration::from_secs(3)))
            .await;
        match ended {
            Ok(QuitReason::Closed | QuitReason::Cancelled) => crate::cli::OK,
            Ok(other) => {
                crate::render::err(&format!("mcp: the session ended: {other:?}\n"));
                crate::cli::FAILED
            }
            Err(e) => {
                crate::render::err(&format!("mcp: {e}\n"));
                crate::cli::FAILED
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::CallToolRequestParams;

    /// The server and an rmcp client in one process, over an in-memory pipe.
    #[tokio::test(flavor = "multi_thread")]
    async fn in_process_list_and_call() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = Engine::new(
            engine::ctx::Config::at(dir.path()),
            Arc::new(engine::Catalog::builtin()),
        );
        let (server_io, client_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let running = Server::new(engine).serve(server_io).await.expect("serve");
            running.waiting().await.expect("wait")
        });
        let client = ().serve(client_io).await.expect("initialize");
        let tools = client.list_all_tools().await.expect("tools/list");
        assert_eq!(tools.first().map(|t| t.name.as_ref()), Some("help"));
        assert!(
            tools.iter().all(|t| t.name != "local"),
            "local needs the opt-in"
        );
        let args = serde_json::json!({"action": "set", "key": "k", "value": [1, 2]});
        let r = client
            .call_tool(
                CallToolRequestParams::new("state")
                    .with_arguments(args.as_object().cloned().unwrap_or_default()),
            )
            .await
            .expect("tools/call");
        assert_eq!(r.is_error, Some(false));
        let body = r.structured_content.expect("structured");
        assert_eq!(body["result"]["value"], serde_json::json!([1, 2]));
        // the same JSON is in the text content
        let text = r
            .content
            .iter()
            .find_map(|c| c.as_text().map(|t| t.text.clone()));
        assert_eq!(
            text.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
            Some(body)
        );
        client.cancel().await.expect("close");
        assert!(matches!(
            server.await.expect("join"),
            QuitReason::Closed | QuitReason::Cancelled
        ));
    }
}
