//! `infra doctor [--connect] [--json]`: can infra work here? The profiles directory, runbooks,
//! targets, store and audit log are checked without touching anything remote; `--connect` also
//! reaches every target (SSH health, a read-only `select version()`, an HTTP check of the base URL
//! accepting a status from 200 to 499, for a `kube` section `kubectl version` and `auth can-i` of
//! `get pods` and `patch deployments`) through the engine, so those calls are audited like any
//! other. Exit 1 when any check fails.

use engine::error::ErrorKind;
use serde_json::{Value, json};

use super::{FAILED, OK, engine};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also connect to every target: SSH health, `select 1` on PostgreSQL, a GET of the HTTP base URL,
    /// the Kubernetes API's version and the user's permissions.
    #[arg(long)]
    connect: bool,
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
}

/// One check and what it found.
#[derive(Debug)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
    hint: Option<String>,
}

impl Check {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            hint: None,
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: Option<String>) -> Self {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            hint,
        }
    }

    fn to_json(&self) -> Value {
        json!({"check": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint})
    }
}

fn profiles(config: &engine::ctx::Config) -> Check {
    let dir = &config.profiles_dir;
    let name = "profiles directory";
    if !dir.exists() {
        return Check::pass(
            name,
            format!("{} (not there yet: the first run makes it)", dir.display()),
        );
    }
    let probe = dir.join(format!(".doctor-{}", engine::ctx::new_id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Check::pass(name, format!("{} (writable)", dir.display()))
        }
        Err(e) => Check::fail(
            name,
            format!("{} is not writable: {e}", dir.display()),
            Some("infra keeps its runs, store and audit log there; fix its permissions or set MCP_PROFILES_DIR".into()),
        ),
    }
}

fn runbooks(e: &engine::run::Engine) -> Check {
    let catalog = e.catalog();
    let n = catalog.entries().len();
    match catalog.diagnostics().first() {
        None => Check::pass("runbooks", format!("{n} found, all load")),
        Some(d) => Check::fail(
            "runbooks",
            format!(
                "{} problem(s); first: {}{}",
                catalog.diagnostics().len(),
                d.location().map(|l| format!("{l}: ")).unwrap_or_default(),
                d.message
            ),
            Some("`infra validate` shows every problem".into()),
        ),
    }
}

/// The capabilities: the built-ins and the project's file, checked against the catalog.
fn capabilities(e: &engine::run::Engine) -> Check {
    let caps = engine::intent::capabilities(e);
    let file = caps
        .file
        .as_ref()
        .map_or_else(|| "no project file".to_owned(), |f| f.display().to_string());
    match caps.diagnostics.iter().find(|d| d.is_error()) {
        None => Check::pass("capabilities", format!("{} ({file})", caps.entries.len())),
        Some(d) => Check::fail(
            "capabilities",
            format!(
                "{} problem(s); first: {}{}",
                caps.diagnostics.iter().filter(|d| d.is_error()).count(),
                d.location().map(|l| format!("{l}: ")).unwrap_or_default(),
                d.message
            ),
            Some(format!("`infra validate {file}` shows every problem")),
        ),
    }
}

fn targets(config: &engine::ctx::Config) -> (Check, engine::targets::Targets) {
    let t = engine::targets::Targets::load(&config.profiles_dir);
    let check = match t.diagnostics.first() {
        Some(d) => Check::fail(
            "targets",
            format!(
                "{}{}",
                d.location().map(|l| format!("{l}: ")).unwrap_or_default(),
                d.message
            ),
            d.help.clone(),
        ),
        None if t.targets.is_empty() => Check::pass(
            "targets",
            format!(
                "none (add {} to reach hosts, databases and APIs)",
                config.profiles_dir.join("targets.json").display()
            ),
        ),
        None => {
            let kinds = |f: fn(&engine::targets::Target) -> bool| -> Vec<&str> {
                t.targets
                    .iter()
                    .filter(|(_, x)| f(x))
                    .map(|(n, _)| n.as_str())
                    .collect()
            };
            let mut parts = Vec::new();
            for (kind, names) in [
                ("ssh", kinds(|x| x.host.is_some())),
                ("postgres", kinds(|x| x.postgres.is_some())),
                ("http", kinds(|x| x.http.is_some())),
            ] {
                if !names.is_empty() {
                    parts.push(format!("{kind}: {}", names.join(", ")));
                }
            }
            Check::pass(
                "targets",
                format!("{} ({})", t.targets.len(), parts.join("; ")),
            )
        }
    };
    (check, t)
}

fn store(e: &engine::run::Engine) -> Check {
    match e.store() {
        Ok(_) => Check::pass("store", e.config().store_path().display().to_string()),
        Err(err) => Check::fail(
            "store",
            format!("{}: {err}", e.config().store_path().display()),
            Some("another program may hold it, or the file is damaged".into()),
        ),
    }
}

fn audit(e: &engine::run::Engine) -> Check {
    match e.verify_audit(None) {
        Ok(v) => match v.problem {
            None => Check::pass("audit log", format!("{} records, chain intact", v.records)),
            Some(p) => Check::fail(
                "audit log",
                format!("record {} (line {}): {}", p.seq, p.line, p.message),
                Some("`infra audit verify` shows it; the log was edited, cut or torn".into()),
            ),
        },
        Err(err) => Check::fail("audit log", err.to_string(), None),
    }
}

fn policy(e: &engine::run::Engine) -> Check {
    let p = e.policy();
    match p.errors.first() {
        Some(d) => Check::fail(
            "policy",
            format!(
                "{}{} (every write is refused until it is fixed)",
                d.location().map(|l| format!("{l}: ")).unwrap_or_default(),
                d.message
            ),
            d.help.clone(),
        ),
        None => Check::pass("policy", p.summary()),
    }
}

fn switches(config: &engine::ctx::Config) -> Check {
    let on = |b: bool| if b { "on" } else { "off" };
    Check::pass(
        "switches",
        format!(
            "INFRA_UNSAFE_LOCAL {}, INFRA_ALLOW_SECRET_EXPORT {}, INFRA_HTTP_DENY_PRIVATE {}, INFRA_HTTP_IDLE_TIMEOUT_MS {}, INFRA_MAX_JOBS {}, INFRA_READ_ONLY {}, INFRA_AUDIT_KEY {}",
            on(config.unsafe_local),
            on(config.allow_secret_export),
            on(config.http_deny_private),
            config.http_idle.as_millis(),
            config.max_jobs,
            on(config.read_only),
            if config.audit_key.is_some() {
                "set"
            } else {
                "not set"
            }
        ),
    )
}

/// One call through the engine (audited, with evidence); what it says, or why it failed.
fn probe(
    e: &engine::run::Engine,
    tool: &str,
    args: Value,
) -> Result<Value, (String, Option<String>)> {
    let plan =
        engine::compile_call(tool, &args, &engine::CompileOptions::default()).map_err(|d| {
            (
                d.first().map(|d| d.message.clone()).unwrap_or_default(),
                None,
            )
        })?;
    let o = e.execute(
        &plan,
        serde_json::Map::new(),
        &engine::run::RunOptions::default(),
    );
    let step = o.steps.into_iter().next();
    match step {
        Some(s) if s.error.is_none() => {
            Ok(e.redactor().redact_value(&s.result.unwrap_or_default()))
        }
        Some(s) => {
            let err = s
                .error
                .unwrap_or_else(|| engine::actions::ActionError::new(ErrorKind::Failed, ""));
            Err((
                e.redactor()
                    .redact(&format!("{}: {}", err.kind, err.message))
                    .into_owned(),
                err.hint,
            ))
        }
        None => Err((o.error.map(|x| x.message).unwrap_or_default(), None)),
    }
}

fn connect(e: &engine::run::Engine, t: &engine::targets::Targets) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, target) in &t.targets {
        if target.host.is_some() {
            out.push(
                match probe(
                    e,
                    "ssh",
                    json!({"action": "health", "target": name, "timeout_ms": 20000}),
                ) {
                    Ok(v) => Check::pass(
                        format!("ssh {name}"),
                        format!(
                            "{} ms, host key {}",
                            v["latency_ms"],
                            v["host_key_fingerprint"].as_str().unwrap_or("?")
                        ),
                    ),
                    Err((m, h)) => Check::fail(format!("ssh {name}"), m, h),
                },
            );
        }
        if target.postgres.is_some() {
            out.push(
                match probe(e, "psql", json!({"action": "query", "target": name, "sql": "select version() as v", "read_only": true, "timeout_ms": 20000})) {
                    Ok(v) => Check::pass(
                        format!("postgres {name}"),
                        v["rows"][0]["v"].as_str().unwrap_or("connected").split(" on ").next().unwrap_or_default().to_owned(),
                    ),
                    Err((m, h)) => Check::fail(format!("postgres {name}"), m, h),
                },
            );
        }
        if target.http.as_ref().is_some_and(|h| h.base_url.is_some()) {
            out.push(
                match probe(e, "http", json!({"action": "check", "target": name, "path": "", "expect_status": (200..500).collect::<Vec<u16>>(), "timeout_ms": 20000})) {
                    Ok(v) => Check::pass(
                        format!("http {name}"),
                        format!("status {} in {} ms", v["status"], v["latency_ms"]),
                    ),
                    Err((m, h)) => Check::fail(format!("http {name}"), m, h),
                },
            );
        }
        if target.kube.is_some() {
            out.push(kube(e, name));
        }
    }
    out
}

/// A kube target: the API server reached (`kubectl version`), and what its user may do of what a
/// release needs (`kubectl auth can-i`).
fn kube(e: &engine::run::Engine, name: &str) -> Check {
    let label = format!("kube {name}");
    let v = match probe(
        e,
        "k8s",
        json!({"action": "version", "target": name, "timeout_ms": 20000}),
    ) {
        Ok(v) => v,
        Err((m, h)) => return Check::fail(label, m, h),
    };
    let mut may = Vec::new();
    for (verb, resource) in [("get", "pods"), ("patch", "deployments")] {
        let answer = match probe(
            e,
            "k8s",
            json!({"action": "can_i", "verb": verb, "resource": resource, "target": name, "timeout_ms": 20000}),
        ) {
            Ok(c) if c["allowed"] == true => "yes".to_owned(),
            Ok(_) => "no".to_owned(),
            Err((m, _)) => format!("unknown ({m})"),
        };
        may.push(format!("{verb} {resource}: {answer}"));
    }
    Check::pass(
        label,
        format!(
            "server {}; {}",
            v["server"].as_str().unwrap_or("?"),
            may.join(", ")
        ),
    )
}

pub fn run(a: Args) -> u8 {
    let e = engine();
    let config = e.config().clone();
    let mut checks = vec![profiles(&config), runbooks(&e), capabilities(&e)];
    let (t_check, targets) = targets(&config);
    checks.push(t_check);
    checks.push(store(&e));
    checks.push(audit(&e));
    checks.push(policy(&e));
    checks.push(switches(&config));
    if a.connect {
        checks.extend(connect(&e, &targets));
    }
    let ok = checks.iter().all(|c| c.ok);
    if a.json {
        render::json(
            &json!({"ok": ok, "checks": checks.iter().map(Check::to_json).collect::<Vec<_>>()}),
        );
    } else {
        let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut text = String::new();
        for c in &checks {
            text.push_str(&format!(
                "{}  {:width$}  {}\n",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            ));
            if let Some(h) = &c.hint
                && !c.ok
            {
                text.push_str(&format!("      {:width$}  hint: {h}\n", ""));
            }
        }
        if !a.connect && !targets.targets.is_empty() {
            text.push_str("\n`infra doctor --connect` also reaches every target.\n");
        }
        render::out(&text);
    }
    if ok { OK } else { FAILED }
}
