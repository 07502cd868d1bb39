//! `audit`: the hash-chained audit log, across its rotated files: `tail` (the last records), `list` (from the first), `verify`
//! (the chain, the log's end against the head kept in the store, and, with `against`, a checkpoint kept
//! elsewhere; one engine function for the CLI, MCP and doctor), `checkpoint` (the head, `<seq>:<hash>`,
//! to keep elsewhere).
//!
//! `tail` and `list` take the original's filters: `tool`, `status` (`ok` and `error` as a record's
//! outcome; any other word its `status` or `kind`, e.g. `failed`, `refused`), `since` (an RFC 3339 UTC
//! time), and page with `limit`, `offset` and `reverse` (newest first). Each answers `total`, the count
//! of records that match.

use engine::record::audit::Head;
use engine::run::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::mcp::reply::Reply;
use crate::mcp::schema::{ToolParams, opt_u64};

/// What `audit` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// `tail`, `list`: at most this many records (20 by default).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
    /// `tail`, `list`: skip this many matching records first (from the end for `tail`).
    #[serde(default, deserialize_with = "opt_u64")]
    pub offset: Option<u64>,
    /// `tail`, `list`: newest first.
    #[serde(default)]
    pub reverse: bool,
    /// `tail`, `list`: only records of this tool.
    pub tool: Option<String>,
    /// `tail`, `list`: `ok`, `error`, or a record's `status` or `kind`.
    pub status: Option<String>,
    /// `tail`, `list`: only records at or after this RFC 3339 UTC time (`2026-01-29T10:00:00Z`).
    pub since: Option<String>,
    /// `verify`: a checkpoint (`<seq>:<hash>`) the log must still hold.
    pub against: Option<String>,
}

/// What `audit` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Tail,
    List,
    Verify,
    Checkpoint,
}

impl ToolParams for Params {
    const TOOL: &'static str = "audit";
}

/// Runs one `audit` action.
pub fn call(engine: &Engine, p: &Params) -> Reply {
    match p.action {
        Action::Tail | Action::List => read(engine, p),
        Action::Checkpoint => match engine.audit_checkpoint() {
            Ok(head) => Reply::ok(
                format!("record {}: {}", head.seq, head.checkpoint()),
                head.to_json(),
            ),
            Err(e) => Reply::error("failed", e, None, None),
        },
        Action::Verify => {
            let checkpoint = match p.against.as_deref().map(Head::parse_checkpoint) {
                None => None,
                Some(Ok(h)) => Some(h),
                Some(Err(e)) => {
                    return Reply::error("invalid_args", e, None, Some("/against".into()));
                }
            };
            verify(engine, checkpoint)
        }
    }
}

/// `Engine::verify_audit`, as the CLI's `audit verify` does, optionally against a checkpoint.
fn verify(engine: &Engine, checkpoint: Option<Head>) -> Reply {
    match engine.verify_audit(checkpoint) {
        Ok(v) => Reply::ok(
            match &v.problem {
                None => format!("{} records, chain intact", v.records),
                Some(p) => format!("the log is broken at record {}", p.seq),
            },
            v.to_json(),
        ),
        Err(e) => Reply::error("failed", e.to_string(), None, None),
    }
}

/// Whether record `r` matches the `status` filter: `ok` and `error` are outcomes; any other word is
/// the record's `status` or `kind`.
fn status_matches(r: &Value, want: &str) -> bool {
    let kind = r["kind"].as_str().unwrap_or("");
    let status = r["status"].as_str();
    let failed = r["ok"] == false
        || matches!(kind, "refused" | "rejected")
        || status.is_some_and(|s| s != "succeeded");
    let succeeded = r["ok"] == true || kind == "call" || status == Some("succeeded");
    match want {
        "ok" | "success" => succeeded,
        "error" | "failure" => failed,
        other => status == Some(other) || kind == other,
    }
}

/// `tail` and `list`: the records that match the filters, paged.
fn read(engine: &Engine, p: &Params) -> Reply {
    use std::io::BufRead;
    let since = match p.since.as_deref() {
        None => None,
        Some(s) if is_utc_time(s) => Some(s.to_owned()),
        Some(s) => {
            return Reply::error(
                "invalid_args",
                format!("`since` is not an RFC 3339 UTC time: `{s}`"),
                Some(
                    "write it as `2026-01-29T10:00:00Z` (UTC, ending in `Z`) or `2026-01-29`"
                        .into(),
                ),
                Some("/since".into()),
            );
        }
    };
    // the rotated files, oldest first, then `audit.jsonl`
    let mut files = Vec::new();
    for path in engine.audit().files() {
        match std::fs::File::open(&path) {
            Ok(f) => files.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Reply::error(
                    "failed",
                    format!("cannot read the audit log `{}`: {e}", path.display()),
                    None,
                    None,
                );
            }
        }
    }
    let mut matching: Vec<Value> = Vec::new();
    for line in files
        .into_iter()
        .flat_map(|f| std::io::BufReader::new(f).split(b'\n'))
    {
        let Ok(line) = line else { break };
        if line.is_empty() {
            continue;
        }
        let r: Value = serde_json::from_slice(&line)
            .unwrap_or_else(|_| json!({"torn": String::from_utf8_lossy(&line)}));
        let tool_ok = p
            .tool
            .as_deref()
            .is_none_or(|t| r["tool"].as_str() == Some(engine::actions::canonical_tool(t)));
        let status_ok = p.status.as_deref().is_none_or(|s| status_matches(&r, s));
        let since_ok = since
            .as_deref()
            .is_none_or(|s| r["ts"].as_str().is_some_and(|ts| ts >= s));
        if tool_ok && status_ok && since_ok {
            matching.push(r);
        }
    }
    let total = matching.len();
    let limit = p.limit.unwrap_or(20) as usize;
    let offset = p.offset.unwrap_or(0) as usize;
    // `tail` counts from the end and `list` from the start; `reverse` shows the newest first
    let from_end = p.action == Action::Tail || p.reverse;
    let page: Vec<Value> = if from_end {
        let end = total.saturating_sub(offset);
        matching.drain(end.saturating_sub(limit)..end).collect()
    } else {
        matching.into_iter().skip(offset).take(limit).collect()
    };
    let page = if p.reverse {
        page.into_iter().rev().collect()
    } else {
        page
    };
    Reply::ok(
        format!("{} of {total} records", page.len()),
        json!({"records": page, "total": total, "offset": offset, "limit": limit}),
    )
}

/// `2026-01-29`, or an RFC 3339 time in UTC (`…Z`), which compare as text with the log's `ts`.
fn is_utc_time(s: &str) -> bool {
    let b = s.as_bytes();
    let date = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    date && (b.len() == 10 || (b.get(10) == Some(&b'T') && s.ends_with('Z')))
}
