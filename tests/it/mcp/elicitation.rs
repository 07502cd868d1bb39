//! Approvals asked of the person in the MCP client (elicitation): only with the policy's
//! `elicitation: true` and a client that declared it; a yes runs exactly the plan asked about, once,
//! and is audited with the note; a no, another answer, or a job leaves the refusal.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, ElicitationCapability, FormElicitationCapability,
    Implementation,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::{ClientHandler, ErrorData as McpError, RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::project::Project;

/// A scripted answer: what the person does and what they fill in.
type Answer = (ElicitationAction, Option<Value>);

/// A client that declares form elicitation and answers each request with the next scripted answer
/// (declining when none is left), keeping the messages it was shown.
#[derive(Clone, Default)]
struct Person {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    shown: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Person {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        let v = serde_json::to_value(&request).expect("json");
        self.shown
            .lock()
            .expect("lock")
            .push(v["message"].as_str().unwrap_or_default().to_owned());
        assert_eq!(v["requestedSchema"]["required"], json!(["approve"]), "{v}");
        let (action, content) = self
            .answers
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or((ElicitationAction::Decline, None));
        let mut r = ElicitResult::new(action);
        r.content = content;
        Ok(r)
    }

    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        let mut e = ElicitationCapability::new();
        e.form = Some(FormElicitationCapability::new());
        caps.elicitation = Some(e);
        ClientConfig::new(caps, Implementation::new("test-client", "1.0"))
    }
}

struct Session {
    client: RunningService<RoleClient, Person>,
    _child: tokio::process::Child,
}

async fn start(profiles: &Path, person: &Person) -> Session {
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("infra"));
    cmd.env_clear()
        .env("MCP_PROFILES_DIR", profiles)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(profiles)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn infra");
    let (stdout, stdin) = (
        child.stdout.take().expect("stdout"),
        child.stdin.take().expect("stdin"),
    );
    let client = person
        .clone()
        .serve((stdout, stdin))
        .await
        .expect("initialize");
    Session {
        client,
        _child: child,
    }
}

async fn call(s: &Session, tool: &str, args: Value) -> (CallToolResult, Value) {
    let r = s
        .client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(args.as_object().cloned().unwrap_or_default()),
        )
        .await
        .expect("tools/call");
    let b = r.structured_content.clone().expect("structuredContent");
    (r, b)
}

/// A project whose `wipe` runbook sets a key in a step declared destructive (needs an approval).
fn project(policy: &str) -> Project {
    Project::new().file("policy.yaml", policy).runbook(
        "wipe",
        "inputs:\n  v: {type: string}\nsteps:\n  - id: s\n    tool: state\n    effects: destructive\n    args: {action: set, key: wiped, value: \"{{ input.v }}\"}\n",
    )
}

fn run(v: &str) -> Value {
    json!({"action": "run", "name": "wipe", "input": {"v": v}})
}

fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .expect("audit")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

async fn wiped(s: &Session) -> Value {
    let (_, b) = call(s, "state", json!({"action": "get", "key": "wiped"})).await;
    b["result"]["value"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_approves_in_the_client_once_and_a_no_leaves_the_refusal() {
    let p = project("elicitation: true\n");
    let person = Person::default();
    person.answers.lock().expect("lock").extend([
        (
            ElicitationAction::Accept,
            Some(json!({"approve": true, "note": "ticket 42"})),
        ),
        (ElicitationAction::Decline, None),
        (ElicitationAction::Accept, Some(json!({"approve": false}))),
    ]);
    let s = start(p.path(), &person).await;

    // asked, approved: the plan runs, with the approval named on its start
    let (r, b) = call(&s, "runbook", run("one")).await;
    assert_ne!(r.is_error, Some(true), "{b}");
    assert_eq!(wiped(&s).await, "one", "{b}");
    let shown = person.shown.lock().expect("lock").clone();
    assert_eq!(shown.len(), 1, "{shown:?}");
    for part in [
        "state.set (destructive)",
        "\"one\"",
        "default.destructive",
        "Digest: ",
    ] {
        assert!(shown[0].contains(part), "{part} in {}", shown[0]);
    }
    let records = audit(p.path());
    let approved: Vec<&Value> = records.iter().filter(|r| r["kind"] == "approved").collect();
    assert_eq!(approved.len(), 1, "{records:?}");
    let a = &approved[0]["approval"];
    assert_eq!(a["via"], "elicitation", "{a}");
    assert_eq!(a["note"], "ticket 42", "{a}");
    assert!(
        a["approver"].as_str().expect("who").contains("test-client"),
        "{a}"
    );
    let digest = a["digest"].as_str().expect("digest");
    assert!(shown[0].contains(digest), "{}", shown[0]);
    let started = records
        .iter()
        .find(|r| r["kind"] == "run_started" && r["approval"]["id"] == a["id"])
        .expect("the run names its approval");
    assert_eq!(started["plan_digest"], digest, "{started}");

    // the approval was used: the same call is asked again, and a no leaves it refused
    let (r, b) = call(&s, "runbook", run("two")).await;
    assert_eq!(r.is_error, Some(true), "{b}");
    assert_eq!(b["error"]["kind"], "approval_required", "{b}");
    assert_eq!(b["result"]["approval"]["elicitation"], "declined", "{b}");
    // accepted without saying yes is not an approval either
    let (_, b) = call(&s, "runbook", run("three")).await;
    assert_eq!(b["error"]["kind"], "approval_required", "{b}");
    assert_eq!(
        b["result"]["approval"]["elicitation"], "not_approved",
        "{b}"
    );
    assert_eq!(wiped(&s).await, "one");
    assert_eq!(person.shown.lock().expect("lock").len(), 3);
    // a job is never asked: no one waits for it
    let mut job = run("four");
    job["async"] = true.into();
    let (_, b) = call(&s, "runbook", job).await;
    let id = b["result"]["job_id"].as_str().expect("job id").to_owned();
    let (_, b) = call(
        &s,
        "jobs",
        json!({"action": "wait", "job_id": id, "timeout_ms": 20000}),
    )
    .await;
    assert!(b.to_string().contains("approval_required"), "{b}");
    assert_eq!(person.shown.lock().expect("lock").len(), 3);
    assert_eq!(wiped(&s).await, "one");
    let records = audit(p.path());
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "approved").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_policys_opt_in_the_client_is_never_asked() {
    let p = project("effects: {destructive: approve}\n");
    let person = Person::default();
    person
        .answers
        .lock()
        .expect("lock")
        .push_back((ElicitationAction::Accept, Some(json!({"approve": true}))));
    let s = start(p.path(), &person).await;
    let (r, b) = call(&s, "runbook", run("x")).await;
    assert_eq!(r.is_error, Some(true), "{b}");
    assert_eq!(b["error"]["kind"], "approval_required", "{b}");
    assert!(b["result"]["approval"].get("elicitation").is_none(), "{b}");
    assert!(person.shown.lock().expect("lock").is_empty());
    assert_eq!(wiped(&s).await, Value::Null);
    assert!(!audit(p.path()).iter().any(|r| r["kind"] == "approved"));
}
