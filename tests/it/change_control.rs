//! Change control: one plan digest shown by `plan`, recorded by runs (`plan.json`) and approved; the
//! policy (defaults, rules, read-only mode, freeze windows, a file with errors); approvals bound to the
//! digest, single-use and expiring, signed by a person's key, which an agent with `local` cannot make;
//! and each retry attempt's artifacts at their own address.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::ctx::{Config, Vars};
use engine::run::{CancelToken, Engine, RunOptions, RunOutcome};
use serde_json::{Value, json};

use crate::project::Project;
use crate::support::postgres::Postgres;

const PASS: &str = "correct horse battery staple";

/// Makes an approver key with the binary (outside the profiles directory) and a policy listing it,
/// followed by `extra` (YAML). Returns the key file.
pub(crate) fn approver(dir: &Path, keys: &Path, extra: &str) -> PathBuf {
    let key = keys.join("approver.pem");
    let out = crate::infra_in(dir, dir)
        .args(["approvals", "keygen", "--passphrase-stdin", "--out"])
        .arg(&key)
        .write_stdin(format!("{PASS}\n"))
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("the public key")
        .to_owned();
    assert!(public.starts_with("ed25519:"), "{public}");
    std::fs::write(
        dir.join("policy.yaml"),
        format!("approvers:\n  - {{name: alice, key: \"{public}\"}}\n{extra}"),
    )
    .expect("policy");
    key
}

/// `infra approve <digest>` by the person holding `key`.
pub(crate) fn approve(dir: &Path, key: &Path, digest: &str, ttl: &str) -> std::process::Output {
    crate::infra_in(dir, dir)
        .env("INFRA_APPROVER_KEY_FILE", key)
        .args([
            "approve",
            digest,
            "--ttl",
            ttl,
            "--note",
            "checked",
            "--passphrase-stdin",
        ])
        .write_stdin(format!("{PASS}\n"))
        .output()
        .expect("approve")
}

fn run_call(e: &Engine, tool: &str, args: Value) -> RunOutcome {
    let plan = engine::compile_call(tool, &args, &engine::CompileOptions::default())
        .unwrap_or_else(|d| panic!("{args}: {d:?}"));
    e.execute(
        &plan,
        serde_json::Map::new(),
        &RunOptions {
            cancel: CancelToken::new(),
            depth: 0,
            progress: None,
            followed: false,
        },
    )
}

fn refusal(o: &RunOutcome) -> (String, String) {
    let e = o
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("expected a refusal: {:?} {:?}", o.status, o.steps));
    assert_eq!(o.status.as_str(), "refused", "{e:?}");
    assert!(o.steps.is_empty(), "nothing ran: {:?}", o.steps);
    (e.kind.clone(), e.message.clone())
}

fn digest_of(o: &RunOutcome) -> String {
    o.approval.as_ref().expect("approval_required")["digest"]
        .as_str()
        .expect("digest")
        .to_owned()
}

fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line"))
        .collect()
}

fn pg_engine(dir: &Path, pg: &Postgres, unsafe_local: bool) -> Engine {
    let target = json!({"db": {"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user,
        "database": pg.database, "password_env": "PG_TEST_PASSWORD", "sslmode": "disable"}}});
    std::fs::write(dir.join("targets.json"), target.to_string()).expect("targets");
    let mut c = Config::at(dir).with_vars(Vars::from_pairs([(
        "PG_TEST_PASSWORD",
        pg.password.clone(),
    )]));
    c.unsafe_local = unsafe_local;
    Engine::new(c, Arc::new(engine::Catalog::builtin()))
}

fn count(pg: &Postgres) -> String {
    pg.psql("select count(*) from events").trim().to_owned()
}

#[test]
fn delete_without_where_needs_an_approval_of_exactly_its_digest() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    let keys = tempfile::tempdir().expect("keys");
    let key = approver(dir.path(), keys.path(), "");
    let e = pg_engine(dir.path(), &pg, false);
    pg.psql("create table events (id int); insert into events values (1), (2), (3)");
    let delete = json!({"action": "exec", "target": "db", "sql": "delete from events"});

    // refused: approval_required, with the rendered plan, its effects and digest; nothing deleted
    let o = run_call(&e, "psql", delete.clone());
    let (kind, message) = refusal(&o);
    assert_eq!(kind, "approval_required", "{message}");
    let digest = digest_of(&o);
    let a = o.approval.as_ref().expect("approval");
    assert_eq!(a["effects"], "destructive");
    assert_eq!(a["rule"], "default.destructive");
    assert_eq!(a["plan"]["digest"], digest.as_str());
    assert_eq!(a["plan"]["nodes"][0]["args"]["sql"], "delete from events");
    assert_eq!(count(&pg), "3");
    let refused: Vec<Value> = audit(dir.path())
        .into_iter()
        .filter(|r| r["kind"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "the refusal is audited");
    assert_eq!(refused[0]["policy"]["rule"], "default.destructive");
    assert_eq!(refused[0]["plan_digest"], digest.as_str());

    // approved by digest (a prefix is enough), then run
    let out = approve(dir.path(), &key, &digest[..12], "15m");
    assert!(out.status.success(), "{out:?}");
    let o = run_call(&e, "psql", delete.clone());
    assert!(o.ok(), "{:?} {:?}", o.error, o.steps);
    assert_eq!(count(&pg), "0");
    let log = audit(dir.path());
    let approved = log
        .iter()
        .find(|r| r["kind"] == "approved")
        .expect("audited");
    assert_eq!(approved["approval"]["approver"], "alice");
    assert_eq!(approved["approval"]["digest"], digest.as_str());
    assert_eq!(approved["approval"]["note"], "checked");
    let started = log
        .iter()
        .rfind(|r| r["kind"] == "run_started")
        .expect("run_started");
    assert_eq!(started["plan_digest"], digest.as_str());
    assert_eq!(started["approval"]["approver"], "alice");

    // used once: the same plan again is refused
    pg.psql("insert into events values (4)");
    let (kind, message) = refusal(&run_call(&e, "psql", delete.clone()));
    assert_eq!(kind, "approval_required");
    assert!(message.contains("already used"), "{message}");

    // approved again, but the statement changed: another digest, refused, the approval left unused
    let out = approve(dir.path(), &key, &digest, "15m");
    assert!(out.status.success(), "{out:?}");
    let changed = json!({"action": "exec", "target": "db", "sql": "delete from events as e"});
    let o = run_call(&e, "psql", changed);
    assert_eq!(refusal(&o).0, "approval_required");
    assert_ne!(digest_of(&o), digest);
    assert_eq!(count(&pg), "1");
    let o = run_call(&e, "psql", delete);
    assert!(o.ok(), "the unused approval still counts for its own plan");
    assert_eq!(count(&pg), "0");
}

#[test]
fn plan_and_run_share_one_digest_and_the_run_keeps_plan_json() {
    let p = Project::new().file(
        "runbooks.json",
        r#"{"hello.world": {"description": "hi", "steps": [{"tool": "mcp_state", "args": {"action": "set", "key": "hello", "value": "{{ input.message }}"}}]}}"#,
    );
    let out = p
        .infra()
        .args(["plan", "hello.world", "--input", "message=hi", "--json"])
        .output()
        .expect("plan");
    let plan = crate::stdout_json(&out);
    let digest = plan["digest"].as_str().expect("digest").to_owned();
    let out = p
        .infra()
        .args(["run", "hello.world", "--input", "message=hi", "--json"])
        .output()
        .expect("run");
    let run = crate::stdout_json(&out);
    assert_eq!(run["ok"], true, "{run}");
    let dir = std::fs::read_dir(p.path().join("runs/hello.world"))
        .expect("run dir")
        .flatten()
        .next()
        .expect("one run")
        .path();
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).expect("journal");
    let first: Value = serde_json::from_str(journal.lines().next().expect("a line")).expect("json");
    assert_eq!(first["plan_digest"], digest.as_str());
    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.join("plan.json")).expect("plan.json"))
            .expect("json");
    assert_eq!(written["digest"], digest.as_str());
    assert_eq!(engine::plan::digest_of(&written), digest);
}

/// A runbook whose one step writes state, with the effect given.
fn state_runbook(effect: &str) -> String {
    format!(
        "name: change\ninputs:\n  v: {{type: string}}\nsteps:\n  - id: s\n    tool: state\n    effects: {effect}\n    args: {{action: set, key: k, value: \"{{{{ input.v }}}}\"}}\n"
    )
}

fn run_json(p: &Project, v: &str) -> Value {
    let out = p
        .infra()
        .args(["run", "change", "--json", "--input"])
        .arg(format!("v={v}"))
        .output()
        .expect("run");
    crate::stdout_json(&out)
}

#[test]
fn approvals_for_another_digest_expired_revoked_or_reused_do_not_count() {
    let keys = tempfile::tempdir().expect("keys");
    let p = Project::new().runbook("change", &state_runbook("destructive"));
    let key = approver(p.path(), keys.path(), "");
    let first = run_json(&p, "a");
    assert_eq!(first["error"]["kind"], "approval_required", "{first}");
    let da = first["approval"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    // an unknown digest cannot be approved
    let out = approve(p.path(), &key, "00000000", "15m");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // an approval of plan `a` does not run plan `b`
    assert!(approve(p.path(), &key, &da, "15m").status.success());
    let other = run_json(&p, "b");
    assert_eq!(other["error"]["kind"], "approval_required");
    let db = other["approval"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    assert_ne!(da, db);
    // expired
    assert!(approve(p.path(), &key, &db, "1s").status.success());
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let expired = run_json(&p, "b");
    assert!(
        expired["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{expired}"
    );
    // revoked
    let out = approve(p.path(), &key, &db, "15m");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let id = text
        .split("(approval ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("approval id")
        .to_owned();
    let out = p
        .infra()
        .args(["approvals", "revoke", &id[..10]])
        .output()
        .expect("revoke");
    assert!(out.status.success(), "{out:?}");
    let revoked = run_json(&p, "b");
    assert!(
        revoked["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked")),
        "{revoked}"
    );
    // `a` runs once, then its approval is used
    assert_eq!(run_json(&p, "a")["ok"], true);
    let again = run_json(&p, "a");
    assert!(
        again["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already used")),
        "{again}"
    );
    let listed = crate::stdout_json(
        &p.infra()
            .args(["approvals", "list", "--json"])
            .output()
            .expect("list"),
    );
    let states: Vec<&str> = listed["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .filter_map(|a| a["state"].as_str())
        .collect();
    for s in ["used", "expired", "revoked"] {
        assert!(states.contains(&s), "{states:?}");
    }
    // a wrong passphrase approves nothing
    let out = crate::infra_in(p.path(), p.path())
        .env("INFRA_APPROVER_KEY_FILE", &key)
        .args(["approve", &db, "--passphrase-stdin"])
        .write_stdin("not the passphrase\n")
        .output()
        .expect("approve");
    assert!(!out.status.success());
}

#[test]
fn an_agent_with_local_cannot_approve_its_own_plan() {
    let keys = tempfile::tempdir().expect("keys");
    let dir = tempfile::tempdir().expect("tmp");
    let key = approver(dir.path(), keys.path(), "");
    std::fs::write(dir.path().join("runbooks.json"), "{}").expect("runbooks");
    let mut c = Config::at(dir.path());
    c.unsafe_local = true;
    let e = Engine::new(c, Arc::new(engine::Catalog::builtin()));
    // the plan the agent wants: an HTTP DELETE (destructive), refused before it is sent
    let target =
        json!({"action": "request", "method": "DELETE", "url": "http://127.0.0.1:9/victim"});
    let o = run_call(&e, "http", target.clone());
    assert_eq!(refusal(&o).0, "approval_required");
    let digest = digest_of(&o);
    let infra = env!("CARGO_BIN_EXE_infra");
    let sh = |cmd: String| -> Value {
        let r = run_call(&e, "local", json!({"action": "exec", "command": cmd}));
        assert!(r.error.is_none(), "local ran: {:?}", r.error);
        r.steps[0].result.clone().unwrap_or(Value::Null)
    };
    let profiles = dir.path().display().to_string();
    // 1. `infra approve` through `local`: there is no terminal to ask the passphrase on
    let r = sh(format!(
        "MCP_PROFILES_DIR={profiles} INFRA_APPROVER_KEY_FILE={} {infra} approve {digest} 2>&1; echo rc=$?",
        key.display()
    ));
    let text = r["stdout"].as_str().unwrap_or_default();
    assert!(text.contains("terminal") && text.contains("rc=1"), "{r}");
    // 2. with a guessed passphrase on stdin: the key does not open
    let r = sh(format!(
        "echo guess-guess-guess | MCP_PROFILES_DIR={profiles} INFRA_APPROVER_KEY_FILE={} {infra} approve {digest} --passphrase-stdin 2>&1; echo rc=$?",
        key.display()
    ));
    let text = r["stdout"].as_str().unwrap_or_default();
    assert!(text.contains("passphrase") && text.contains("rc=1"), "{r}");
    // 3. its own key: not an approver of the policy
    let r = sh(format!(
        "cd {profiles} && echo agent-passphrase-1 | MCP_PROFILES_DIR={profiles} {infra} approvals keygen --out agent.pem --passphrase-stdin >/dev/null && echo agent-passphrase-1 | MCP_PROFILES_DIR={profiles} INFRA_APPROVER_KEY_FILE=agent.pem {infra} approve {digest} --passphrase-stdin 2>&1; echo rc=$?"
    ));
    let text = r["stdout"].as_str().unwrap_or_default();
    assert!(
        text.contains("not an approver") && text.contains("rc=1"),
        "{r}"
    );
    // 4. rows written into the store's approvals table: one unsigned, one copying alice's name and key
    //    with a made-up signature
    let public = std::fs::read_to_string(dir.path().join("policy.yaml"))
        .expect("policy")
        .split('"')
        .nth(1)
        .expect("key")
        .to_owned();
    let r = sh(format!(
        "python3 -c \"import sqlite3; c = sqlite3.connect('{profiles}/store.sqlite3'); \
         [c.execute('INSERT INTO approvals VALUES (?,?,?,?,?,?,?,?,NULL,NULL,NULL)', (i, '{digest}', 'alice', '{public}', '2020-01-01T00:00:00.000Z', '2999-01-01T00:00:00.000Z', '', s)) for i, s in (('forged1', ''), ('forged2', 'ab' * 64))]; c.commit()\"; echo rc=$?"
    ));
    assert!(
        r["stdout"].as_str().unwrap_or_default().contains("rc=0"),
        "{r}"
    );
    // 5. its own key added to the policy file: the running engine read its policy when it started
    let r = sh(format!(
        "cd {profiles} && P=$(echo agent-passphrase-1 | openssl pkey -in agent.pem -passin stdin -pubout -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \\n') && printf 'approvers:\\n  - {{name: agent, key: \"ed25519:%s\"}}\\n' $P > policy.yaml && echo rc=$?"
    ));
    assert!(
        r["stdout"].as_str().unwrap_or_default().contains("rc=0"),
        "{r}"
    );
    let o = run_call(&e, "http", target.clone());
    let (kind, message) = refusal(&o);
    assert_eq!(kind, "approval_required");
    assert!(message.contains("no valid signature"), "{message}");
    // 6. a real approval, used, then set back to unused in the store: this engine does not use it twice
    let out = approve(dir.path(), &key, &digest, "15m");
    assert!(
        !out.status.success(),
        "the policy now names the agent's key, not alice's"
    );
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!("approvers:\n  - {{name: alice, key: \"{public}\"}}\n"),
    )
    .expect("policy");
    assert!(approve(dir.path(), &key, &digest, "15m").status.success());
    let o = run_call(&e, "http", target.clone());
    assert!(
        o.error
            .as_ref()
            .is_none_or(|x| x.kind != "approval_required"),
        "{:?}",
        o.error
    );
    let r = sh(format!(
        "python3 -c \"import sqlite3; c = sqlite3.connect('{profiles}/store.sqlite3'); c.execute('UPDATE approvals SET used_at = NULL, used_by = NULL'); c.commit()\"; echo rc=$?"
    ));
    assert!(
        r["stdout"].as_str().unwrap_or_default().contains("rc=0"),
        "{r}"
    );
    let (kind, message) = refusal(&run_call(&e, "http", target));
    assert_eq!(kind, "approval_required");
    assert!(
        message.contains("already used by this process"),
        "{message}"
    );
}

#[test]
fn read_only_mode_refuses_every_write_before_it_is_sent() {
    let sshd = crate::support::sshd::Sshd::start();
    let http = crate::support::http::HttpServer::start();
    let pg = Postgres::start();
    pg.psql("create table t (id int)");
    let dir = tempfile::tempdir().expect("tmp");
    let mut targets = json!({"box": crate::ssh::target(&sshd)});
    targets["db"] = json!({"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user,
        "database": pg.database, "password_env": "PG_TEST_PASSWORD", "sslmode": "disable"}});
    std::fs::write(dir.path().join("targets.json"), targets.to_string()).expect("targets");
    let repo = tempfile::tempdir().expect("repo");
    let init = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(repo.path())
        .status()
        .expect("git init");
    assert!(init.success());
    for (how, env_switch) in [("INFRA_READ_ONLY", true), ("read_only", false)] {
        if env_switch {
            let _ = std::fs::remove_file(dir.path().join("policy.yaml"));
        } else {
            std::fs::write(dir.path().join("policy.yaml"), "read_only: true\n").expect("policy");
        }
        let mut c = Config::at(dir.path()).with_vars(Vars::from_pairs([
            ("PG_TEST_PASSWORD", pg.password.clone()),
            ("HOME", dir.path().join("home").display().to_string()),
        ]));
        c.unsafe_local = true;
        c.read_only = env_switch;
        let e = Engine::new(c, Arc::new(engine::Catalog::builtin()));
        let marker = dir.path().join("written");
        let writes = [
            (
                "ssh",
                json!({"action": "exec", "target": "box", "command": format!("touch {}", marker.display())}),
            ),
            (
                "http",
                json!({"action": "request", "method": "POST", "url": http.url("/w")}),
            ),
            (
                "psql",
                json!({"action": "exec", "target": "db", "sql": "insert into t values (1)"}),
            ),
            (
                "local",
                json!({"action": "exec", "command": format!("touch {}", marker.display())}),
            ),
            ("state", json!({"action": "set", "key": "k", "value": 1})),
            (
                "repo",
                json!({"action": "branch", "repo_path": repo.path().display().to_string(), "name": "made"}),
            ),
            (
                "k8s",
                json!({"action": "apply", "path": ".", "kubeconfig": "kubeconfig"}),
            ),
        ];
        for (tool, args) in writes {
            let o = run_call(&e, tool, args);
            let (kind, message) = refusal(&o);
            assert_eq!(kind, "refused", "{tool}: {message}");
            assert!(message.contains(how), "{tool}: {message}");
        }
        assert!(!marker.exists(), "no command ran");
        assert!(
            !repo.path().join(".git/refs/heads/made").exists(),
            "no branch was made"
        );
        assert_eq!(http.hits("/w"), 0, "no request was sent");
        assert_eq!(pg.psql("select count(*) from t").trim(), "0");
        // reads still run
        let reads = [
            ("ssh", json!({"action": "info", "target": "box"})),
            (
                "http",
                json!({"action": "request", "method": "GET", "url": http.url("/echo")}),
            ),
            (
                "psql",
                json!({"action": "query", "target": "db", "sql": "select 1"}),
            ),
            (
                "repo",
                json!({"action": "status", "repo_path": repo.path().display().to_string()}),
            ),
            (
                "local",
                json!({"action": "stat", "path": dir.path().display().to_string()}),
            ),
        ];
        for (tool, args) in reads {
            let o = run_call(&e, tool, args);
            assert!(o.ok(), "{tool}: {:?} {:?}", o.error, o.steps);
        }
        let refused = audit(dir.path())
            .into_iter()
            .filter(|r| r["kind"] == "refused" && r["policy"]["rule"] == how)
            .count();
        assert!(refused >= 5, "{how}: {refused} refusals audited");
    }
}

#[test]
fn freeze_windows_rules_and_a_policy_with_errors() {
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    let p = Project::new()
        .runbook("change", &state_runbook("write"))
        .runbook(
            "look",
            "steps:\n  - id: s\n    tool: state\n    args: {action: get, key: k}\n",
        )
        .file(
            "policy.yaml",
            &format!("freeze:\n  - {{from: '{from}', to: '{to}', reason: release}}\n"),
        );
    let r = run_json(&p, "x");
    assert_eq!(r["error"]["kind"], "refused", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("freeze[0]") && m.contains("release")),
        "{r}"
    );
    let look = run_named(&p, "look");
    assert_eq!(look["ok"], true, "reads run in a freeze: {look}");

    // a rule by tool and effect
    std::fs::write(
        p.path().join("policy.yaml"),
        "rules:\n  - {name: no-state-writes, tool: mcp_state, effect: write, decision: deny}\n",
    )
    .expect("policy");
    let r = run_json(&p, "x");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-state-writes")),
        "{r}"
    );

    // a policy with errors: located, writes refused, reads still run
    std::fs::write(
        p.path().join("policy.yaml"),
        "effects:\n  write: sometimes\n",
    )
    .expect("policy");
    let out = p
        .infra()
        .args(["run", "change", "--json", "--input", "v=x"])
        .output()
        .expect("run");
    let r = crate::stdout_json(&out);
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("policy_invalid"), "{r}");
    assert!(message.contains("policy.yaml:2:"), "located: {message}");
    let look = run_named(&p, "look");
    assert_eq!(look["ok"], true, "{look}");
    let audited = audit(p.path())
        .into_iter()
        .filter(|r| r["kind"] == "refused")
        .map(|r| r["policy"]["rule"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(audited, ["freeze[0]", "no-state-writes", "policy_invalid"]);
}

#[test]
fn each_attempt_keeps_its_own_artifacts() {
    let p = Project::new().unsafe_local().runbook(
        "flaky",
        "steps:\n  - id: s\n    tool: local\n    retry: {attempts: 3, on: [nonzero_exit]}\n    args: {action: exec, command: \"n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo attempt $n >&2; test $n -ge 3\"}\n",
    );
    let r = run_named(&p, "flaky");
    assert_eq!(r["ok"], true, "{r}");
    let dir = std::fs::read_dir(p.path().join("runs/flaky"))
        .expect("runs")
        .flatten()
        .next()
        .expect("a run")
        .path();
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).expect("journal");
    let finished: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|r| r["event"] == "node_finished")
        .collect();
    assert_eq!(finished.len(), 3, "{journal}");
    for (i, f) in finished.iter().enumerate() {
        let attempt = i + 1;
        let rel = if attempt == 1 {
            "s/stderr".to_owned()
        } else {
            format!("s/attempt-{attempt}/stderr")
        };
        let path = dir.join(&rel);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(text, format!("attempt {attempt}\n"));
        assert_eq!(
            f["outputs"]["stderr_sha256"].as_str(),
            Some(crate::sha256_file(&path).as_str()),
            "attempt {attempt}: {f}"
        );
    }
}

#[test]
fn an_approved_run_covers_its_nested_runs_and_deny_rules_hold_inside_them() {
    let keys = tempfile::tempdir().expect("keys");
    let p = Project::new()
        .runbook("change", &state_runbook("destructive"))
        .runbook(
            "outer",
            "name: outer\nsteps:\n  - id: inner\n    tool: runbook\n    args: {action: run, name: change, input: {v: nested}}\n",
        );
    let key = approver(p.path(), keys.path(), "");
    let r = run_named(&p, "outer");
    assert_eq!(r["error"]["kind"], "approval_required", "{r}");
    assert_eq!(
        r["approval"]["effects"], "destructive",
        "the nested effect counts"
    );
    let digest = r["approval"]["digest"].as_str().expect("digest").to_owned();
    assert!(approve(p.path(), &key, &digest, "15m").status.success());
    let r = run_named(&p, "outer");
    assert_eq!(
        r["ok"], true,
        "the nested run is covered by the approval: {r}"
    );
    let got = p.infra().args(["state", "get", "k"]).output().expect("get");
    assert!(String::from_utf8_lossy(&got.stdout).contains("nested"));

    // a deny rule on a tool the outer plan does not show is applied to the nested run itself
    let policy = std::fs::read_to_string(p.path().join("policy.yaml")).expect("policy");
    std::fs::write(
        p.path().join("policy.yaml"),
        format!("{policy}rules:\n  - {{name: no-state, tool: state, decision: deny}}\n"),
    )
    .expect("policy");
    assert!(approve(p.path(), &key, &digest, "15m").status.success());
    let r = run_named(&p, "outer");
    assert_eq!(r["ok"], false, "{r}");
    let refused = audit(p.path())
        .into_iter()
        .filter(|r| r["kind"] == "refused" && r["policy"]["rule"] == "no-state")
        .count();
    assert_eq!(refused, 1, "the nested refusal is audited with its rule");
}

/// Runs `name` with `--json`.
fn run_named(p: &Project, name: &str) -> Value {
    let out = p
        .infra()
        .args(["run", name, "--json"])
        .output()
        .expect("run");
    crate::stdout_json(&out)
}

fn state_of(p: &Project, key: &str) -> String {
    let got = p.infra().args(["state", "get", key]).output().expect("get");
    String::from_utf8_lossy(&got.stdout).into_owned()
}

/// A destructive runbook `change` that sets `key` in the state.
fn child(key: &str) -> String {
    format!(
        "name: change\nsteps:\n  - id: s\n    tool: state\n    effects: destructive\n    args: {{action: set, key: {key}, value: child-ran}}\n"
    )
}

#[test]
fn an_approval_binds_the_text_of_the_runbooks_its_plan_nests() {
    let keys = tempfile::tempdir().expect("keys");
    let p = Project::new().runbook("change", &child("k")).runbook(
        "outer",
        "name: outer\nsteps:\n  - id: inner\n    tool: runbook\n    args: {action: run, name: change}\n",
    );
    let key = approver(p.path(), keys.path(), "");
    let r = run_named(&p, "outer");
    assert_eq!(r["error"]["kind"], "approval_required", "{r}");
    let digest = r["approval"]["digest"].as_str().expect("digest").to_owned();
    let nested = r["approval"]["plan"]["nodes"][0]["nested_digest"].clone();
    assert!(
        nested.as_str().is_some_and(|d| d.len() == 64),
        "the plan to approve names the nested runbook's text: {r}"
    );
    assert!(approve(p.path(), &key, &digest, "15m").status.success());

    // the child is edited after the approval: another plan, which the approval does not cover
    std::fs::write(p.path().join("runbooks/change.yaml"), child("other")).expect("edit");
    let r = run_named(&p, "outer");
    assert_eq!(r["error"]["kind"], "approval_required", "{r}");
    assert_ne!(r["approval"]["digest"], digest.as_str(), "{r}");
    assert_ne!(r["approval"]["plan"]["nodes"][0]["nested_digest"], nested);
    assert!(
        state_of(&p, "other").trim().is_empty(),
        "the edited child did not run"
    );

    // edited back, the approved plan is the one that runs, and its child with it
    std::fs::write(p.path().join("runbooks/change.yaml"), child("k")).expect("edit back");
    let r = run_named(&p, "outer");
    assert_eq!(r["ok"], true, "{r}");
    assert!(state_of(&p, "k").contains("child-ran"));

    // a child named only when it runs is not covered either
    std::fs::write(p.path().join("runbooks/change.yaml"), child("late")).expect("child");
    std::fs::write(
        p.path().join("runbooks/outer.yaml"),
        "name: outer\ninputs:\n  which: {type: string, default: change}\nsteps:\n  - id: inner\n    tool: runbook\n    args: {action: run, name: \"{{ input.which }}\"}\n",
    )
    .expect("outer");
    let r = run_named(&p, "outer");
    let digest = r["approval"]["digest"].as_str().expect("digest").to_owned();
    assert!(approve(p.path(), &key, &digest, "15m").status.success());
    let r = run_named(&p, "outer");
    assert_eq!(r["ok"], false, "{r}");
    assert!(state_of(&p, "late").trim().is_empty(), "{r}");

    // an inline child without templates is in the plan, and covered
    std::fs::write(
        p.path().join("runbooks/outer.yaml"),
        "name: outer\nsteps:\n  - id: inner\n    tool: runbook\n    args:\n      action: run\n      runbook:\n        steps:\n          - {id: s, tool: state, effects: destructive, args: {action: set, key: inline, value: child-ran}}\n",
    )
    .expect("outer");
    let r = run_named(&p, "outer");
    assert_eq!(r["approval"]["effects"], "destructive", "{r}");
    assert!(
        r["approval"]["plan"]["nodes"][0]["nested_digest"].is_string(),
        "{r}"
    );
    let digest = r["approval"]["digest"].as_str().expect("digest").to_owned();
    assert!(approve(p.path(), &key, &digest, "15m").status.success());
    let r = run_named(&p, "outer");
    assert_eq!(r["ok"], true, "{r}");
    assert!(state_of(&p, "inline").contains("child-ran"));
}

#[test]
fn a_nested_runbook_replaced_while_its_approved_parent_runs_is_not_covered() {
    let keys = tempfile::tempdir().expect("keys");
    let p = Project::new().unsafe_local().runbook("change", &child("k"));
    let (started, go) = (p.path().join("started"), p.path().join("go"));
    let p = p.runbook(
        "outer",
        &format!(
            "name: outer\nsteps:\n  - id: wait\n    tool: local\n    args: {{action: exec, command: 'touch {}; while [ ! -f {} ]; do sleep 0.02; done'}}\n  - id: inner\n    tool: runbook\n    args: {{action: run, name: change}}\n",
            started.display(),
            go.display()
        ),
    );
    let key = approver(p.path(), keys.path(), "");
    let r = run_named(&p, "outer");
    assert_eq!(r["error"]["kind"], "approval_required", "{r}");
    let digest = r["approval"]["digest"].as_str().expect("digest").to_owned();
    assert!(approve(p.path(), &key, &digest, "15m").status.success());

    // the child is replaced and the catalog reloaded (as `runbook upsert` ends) once the approved run
    // has started
    let e = Arc::new(p.engine());
    let outer = e.catalog().get("outer").expect("outer").runbook.clone();
    let running = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || {
            e.run_runbook(outer, &serde_json::Map::new(), &CancelToken::new(), 0, None)
                .expect("runs")
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() {
        if running.is_finished() {
            panic!(
                "the run ended early: {:?}",
                running.join().expect("the run")
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(p.path().join("runbooks/change.yaml"), child("raced")).expect("replace");
    e.reload_catalog();
    std::fs::write(&go, "").expect("go");
    let o = running.join().expect("the run");
    assert_eq!(o.approval, None);
    assert_eq!(o.status.as_str(), "failed", "{:?}", o.steps);
    let why = o.steps[1]
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(
        why.contains("approval") && why.contains("changed since"),
        "the nested run says why it is not covered: {why}"
    );
    assert!(
        state_of(&p, "raced").trim().is_empty(),
        "the replaced child did not run"
    );
    assert!(state_of(&p, "k").trim().is_empty(), "nor the approved one");
}

#[test]
fn credentials_in_a_plan_waiting_for_approval_are_masked_and_its_digest_still_checks() {
    let keys = tempfile::tempdir().expect("keys");
    let dir = tempfile::tempdir().expect("tmp");
    let key = approver(dir.path(), keys.path(), "");
    let e = Engine::new(Config::at(dir.path()), Arc::new(engine::Catalog::builtin()));
    let token = "Bearer tok-0123456789-abcdef";
    let call = json!({"action": "request", "method": "DELETE", "url": "http://127.0.0.1:9/x",
                      "headers": {"Authorization": token}});
    let o = run_call(&e, "http", call);
    assert_eq!(refusal(&o).0, "approval_required");
    let shown = o.approval.as_ref().expect("approval").to_string();
    assert!(!shown.contains("tok-0123456789"), "{shown}");
    assert!(
        crate::files_containing(dir.path(), &["tok-0123456789"]).is_empty(),
        "nothing under the profiles directory holds the credential"
    );
    // the stored plan, masked, still has the digest a person approves
    let out = approve(dir.path(), &key, &digest_of(&o), "15m");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn rules_match_a_targets_labels_and_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let targets = json!({
        "prod-1": {"host": "127.0.0.1", "port": 1, "username": "x", "labels": ["prod"]},
        "dev-1": {"host": "127.0.0.1", "port": 1, "username": "x", "labels": ["dev"]},
    });
    std::fs::write(dir.path().join("targets.json"), targets.to_string()).expect("targets");
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - {name: prod-frozen, label: prod, effect: write, decision: deny}\n  - {target: dev-1, action: info, decision: deny}\n",
    )
    .expect("policy");
    let e = Engine::new(Config::at(dir.path()), Arc::new(engine::Catalog::builtin()));
    let exec = |t: &str| json!({"action": "exec", "target": t, "command": "true"});
    let (kind, message) = refusal(&run_call(&e, "ssh", exec("prod-1")));
    assert_eq!(kind, "refused");
    assert!(message.contains("prod-frozen"), "{message}");
    // not refused by policy: it gets as far as connecting (nothing listens on port 1)
    let o = run_call(&e, "ssh", exec("dev-1"));
    assert!(!o.steps.is_empty(), "{:?}", o.error);
    let (_, message) = refusal(&run_call(
        &e,
        "ssh",
        json!({"action": "info", "target": "dev-1"}),
    ));
    assert!(message.contains("rules[1]"), "{message}");
}

#[test]
fn a_target_known_only_when_it_runs_or_taken_by_default_meets_the_targets_rules() {
    let p = Project::new()
        .targets(&json!({
            "prod-1": {"host": "127.0.0.1", "port": 1, "username": "x", "labels": ["prod"]},
            "db": {"postgres": {"host": "127.0.0.1", "port": 1, "user": "u", "database": "d",
                                "password_env": "DB_PASSWORD", "sslmode": "disable"}, "labels": ["prod"]},
        }))
        .file(
            "policy.yaml",
            "rules:\n  - {name: prod-frozen, label: prod, effect: write, decision: deny}\n",
        )
        .file(
            "runbooks/hop.yaml",
            "name: hop\nsteps:\n  - id: where\n    tool: state\n    args: {action: get, key: t}\n  - id: go\n    tool: ssh\n    args: {action: exec, target: '{{ steps.where.value }}', command: 'true'}\n",
        )
        .env("DB_PASSWORD", "pw");
    let e = p.engine();
    // psql with no target goes to the only database target, so its rules hold
    let (_, message) = refusal(&run_call(
        &e,
        "psql",
        json!({"action": "exec", "sql": "update t set x = 1 where id = 1"}),
    ));
    assert!(message.contains("prod-frozen"), "{message}");
    // a target a step learns only when it runs may be any target: the strictest rule holds
    let v = run_named(&p, "hop");
    assert_eq!(v["status"], "refused", "{v}");
    assert!(v.to_string().contains("prod-frozen"), "{v}");
    // a target named in the plan is judged as itself
    let o = run_call(&e, "psql", json!({"action": "query", "sql": "select 1"}));
    assert_ne!(
        o.status.as_str(),
        "refused",
        "a read is not frozen: {:?}",
        o.error
    );
}
