//! The one place a call's arguments are made canonical, before anything validates them: the original
//! product's action and argument names are rewritten to ours, and the per-call options every tool takes
//! (`output`, `store_as`, `store_scope`) are taken off and checked.
//!
//! [`normalize`] renames an argument only when the chosen action takes the new name and not the old
//! one (`query` is `sql` for `psql query`, but `query` for `http`), so an alias never hides a real
//! argument; an alias given together with its canonical name is refused. Every rewrite is reported, as
//! `{from, to, kind}` (`kind`: `tool`, `action` or `argument`), in the reply's `normalized` field.
//! `timeout_ms` (which every call takes) on a front-end tool that answers at once is dropped and
//! reported as `kind: ignored`.

use engine::actions;
use serde_json::{Map, Value, json};

use super::reply::Reply;
use super::shape::{Output, StoreAs};

/// The original's action names, per canonical tool, with ours.
const ACTION_ALIASES: &[(&str, &[(&str, &str)])] = &[
    (
        "runbook",
        &[
            ("runbook_list", "list"),
            ("runbook_get", "get"),
            ("runbook_run", "run"),
            ("execute", "run"),
            ("runbook_upsert", "upsert"),
            ("runbook_delete", "delete"),
            ("runbook_compile", "validate"),
        ],
    ),
    (
        "repo",
        &[
            ("repo_info", "snapshot"),
            ("git_diff", "diff"),
            ("git_status", "status"),
            ("git_log", "log"),
        ],
    ),
    (
        "local",
        &[
            ("fs_read", "read"),
            ("fs_write", "write"),
            ("fs_list", "list"),
            ("fs_stat", "stat"),
        ],
    ),
    (
        "jobs",
        &[
            ("job_list", "list"),
            ("job_status", "status"),
            ("get", "status"),
            ("job_wait", "wait"),
            ("job_logs_tail", "logs"),
            ("tail_job", "logs"),
            ("tail", "logs"),
            ("job_cancel", "cancel"),
        ],
    ),
    (
        "ssh",
        &[
            ("exec_follow", "exec"),
            ("sftp_upload", "upload"),
            ("deploy_file", "upload"),
            ("sftp_download", "download"),
            ("system_info", "info"),
            ("check_host", "health"),
        ],
    ),
    (
        "psql",
        &[
            ("catalog_tables", "tables"),
            ("catalog_columns", "describe"),
            ("batch", "transaction"),
        ],
    ),
    ("audit", &[("audit_tail", "tail"), ("audit_list", "list")]),
];

/// The original's argument names: `(tools it applies to (empty: all), from, to, seconds → ms)`.
const ARG_ALIASES: &[(&[&str], &str, &str, bool)] = &[
    (&[], "cmd", "command", false),
    (&[], "argv", "args", false),
    (&[], "workdir", "cwd", false),
    (&[], "work_dir", "cwd", false),
    (&[], "timeout", "timeout_ms", false),
    (&[], "timeoutMs", "timeout_ms", false),
    (&[], "timeout_s", "timeout_ms", true),
    (&[], "profile", "profile_name", false),
    (&[], "profileName", "profile_name", false),
    (&[], "q", "query", false),
    (&["runbook"], "tag", "tags", false),
    (&["runbook"], "id", "name", false),
    (&["jobs"], "id", "job_id", false),
    (&["psql"], "query", "sql", false),
    (&["http"], "params", "query", false),
];

/// A call made canonical: its arguments, what was rewritten, and its per-call options.
#[derive(Debug, Default)]
pub struct Normalized {
    pub args: Map<String, Value>,
    pub notes: Vec<Value>,
    pub output: Option<Output>,
    pub store_as: Option<StoreAs>,
}

/// The properties `tool`'s `action` takes: a registry action's schema, or a front-end tool's listed
/// input schema (`front_end`). `None` when the action is unknown (its validation says so later).
fn allowed(tool: &str, action: &str, front_end: Option<&Value>) -> Option<Vec<String>> {
    let props = match front_end {
        Some(schema) => schema.get("properties")?,
        None => actions::find_action(tool, action)?
            .schema()
            .get("properties")?,
    };
    Some(props.as_object()?.keys().cloned().collect())
}

/// The original action name `action` of `tool`, as ours.
pub fn action_alias(tool: &str, action: &str) -> Option<&'static str> {
    ACTION_ALIASES
        .iter()
        .find(|(t, _)| *t == tool)?
        .1
        .iter()
        .find(|(a, _)| *a == action)
        .map(|(_, to)| *to)
}

fn conflict(from: &str, to: &str) -> Reply {
    Reply::error(
        "invalid_args",
        format!("both `{from}` and `{to}` were given, and `{from}` is another name for `{to}`"),
        Some(format!("give only `{to}`")),
        Some(format!("/{from}")),
    )
}

/// Makes `tool`'s arguments canonical (`tool` is already canonical; `front_end` is a front-end tool's
/// listed input schema). A refusal is the reply.
pub fn normalize(
    tool: &str,
    mut args: Map<String, Value>,
    front_end: Option<&Value>,
) -> Result<Normalized, Reply> {
    let mut notes = Vec::new();
    let output = match args.shift_remove("output") {
        None => None,
        Some(v) => Some(Output::parse(&v, "/output")?),
    };
    let scope = args.shift_remove("store_scope");
    let store_as = match args.shift_remove("store_as") {
        None if scope.is_some() => {
            return Err(Reply::error(
                "invalid_args",
                "`store_scope` was given without `store_as`",
                Some("add `store_as: \"<key>\"`, or leave `store_scope` out".into()),
                Some("/store_scope".into()),
            ));
        }
        None => None,
        Some(v) => Some(StoreAs::parse(&v, scope.as_ref())?),
    };
    if let Some(Value::String(given)) = args.get("action")
        && let Some(to) = action_alias(tool, given)
    {
        notes.push(json!({"from": given, "to": to, "kind": "action"}));
        args.insert("action".into(), to.into());
    }
    let action = args
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(mut keys) = allowed(tool, &action, front_end) {
        // `timeout_ms` is taken by every call; a front-end tool that answers at once has no use for it
        let idle_timeout = front_end.is_some() && !keys.iter().any(|k| k == "timeout_ms");
        if idle_timeout {
            keys.push("timeout_ms".into());
        }
        let takes = |k: &str| keys.iter().any(|x| x == k);
        for (tools, from, to, seconds) in ARG_ALIASES {
            if !(tools.is_empty() || tools.contains(&tool))
                || !args.contains_key(*from)
                || takes(from)
                || !takes(to)
            {
                continue;
            }
            if args.contains_key(*to) {
                return Err(conflict(from, to));
            }
            let mut v = args.shift_remove(*from).unwrap_or(Value::Null);
            let mut note = json!({"from": from, "to": to, "kind": "argument"});
            if *seconds && let Some(s) = v.as_f64() {
                v = json!((s * 1000.0).round() as u64);
                note["factor"] = 1000.into();
            }
            if *to == "tags" && v.is_string() {
                v = Value::Array(vec![v]);
            }
            args.insert((*to).into(), v);
            notes.push(note);
        }
        if idle_timeout && args.shift_remove("timeout_ms").is_some() {
            notes.push(json!({"from": "timeout_ms", "to": null, "kind": "ignored",
                "reason": format!("`{tool}` answers without waiting")}));
        }
    }
    Ok(Normalized {
        args,
        notes,
        output,
        store_as,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(tool: &str, args: Value) -> Result<Normalized, Value> {
        let Value::Object(m) = args else {
            panic!("object")
        };
        normalize(tool, m, None).map_err(|r| r.body["error"].clone())
    }

    #[test]
    fn aliases_are_renamed_only_where_the_action_takes_the_new_name() {
        let n = norm(
            "ssh",
            json!({"action": "exec_follow", "target": "t", "cmd": "uptime", "timeout_s": 1.5}),
        )
        .expect("ok");
        assert_eq!(
            Value::Object(n.args),
            json!({"action": "exec", "target": "t", "command": "uptime", "timeout_ms": 1500})
        );
        assert_eq!(n.notes.len(), 3);
        // psql's `query` is `sql`; http's `query` stays, its `params` becomes `query`
        let n = norm("psql", json!({"action": "query", "query": "select 1"})).expect("ok");
        assert_eq!(n.args["sql"], "select 1");
        // the original's `batch` is one transaction of checked statements
        let n = norm(
            "psql",
            json!({"action": "batch", "statements": [{"sql": "select 1"}]}),
        )
        .expect("ok");
        assert_eq!(n.args["action"], "transaction");
        let n = norm(
            "http",
            json!({"action": "request", "url": "u", "params": {"a": "1"}}),
        )
        .expect("ok");
        assert_eq!(n.args["query"], json!({"a": "1"}));
        // a name the action does not take under either spelling is left for validation to report
        let n = norm("state", json!({"action": "get", "key": "k", "cmd": "x"})).expect("ok");
        assert!(n.args.contains_key("cmd") && n.notes.is_empty());
        // a front-end tool that answers at once takes `timeout_ms` (or `timeout_s`) and says it ignored it
        let help = json!({"properties": {"query": {}}});
        let Value::Object(args) = json!({"query": "x", "timeout_s": 2}) else {
            panic!("object")
        };
        let n = normalize("help", args, Some(&help)).expect("ok");
        assert_eq!(Value::Object(n.args), json!({"query": "x"}));
        assert_eq!(n.notes[1]["kind"], "ignored");
    }

    #[test]
    fn an_alias_with_its_canonical_name_is_refused() {
        let e = norm("ssh", json!({"action": "exec", "cmd": "a", "command": "b"})).expect_err("no");
        assert_eq!(
            (e["kind"].as_str(), e["path"].as_str()),
            (Some("invalid_args"), Some("/cmd"))
        );
        let e = norm(
            "state",
            json!({"action": "get", "key": "k", "store_scope": "session"}),
        )
        .expect_err("no");
        assert_eq!(e["path"], "/store_scope");
    }
}
