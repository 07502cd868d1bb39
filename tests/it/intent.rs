//! Context, capabilities and intents through the binary: real repositories built here (a kustomize
//! overlay tree, a Helm chart, an Argo CD app, a Flux kustomization, a Node project), a project
//! capabilities file that tells them apart, located errors for bad files, and `execute` refused
//! without `--apply`/`--confirm`, with the refusal in the audit log and nothing run.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::project::Project;
use crate::stdout_json;

/// A git repository with these files, committed.
pub(crate) fn repo(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(root).expect("mkdir");
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "init"],
    ] {
        let st = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(root)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    }
    root.canonicalize().expect("canonical")
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\n";

fn kustomize(root: &Path) -> PathBuf {
    repo(
        root,
        &[
            ("base/kustomization.yaml", "resources: [deployment.yaml]\n"),
            ("base/deployment.yaml", DEPLOYMENT),
            (
                "overlays/dev/kustomization.yaml",
                "resources: [../../base]\n",
            ),
            (
                "overlays/prod/kustomization.yaml",
                "resources: [../../base]\n",
            ),
        ],
    )
}

fn helm(root: &Path) -> PathBuf {
    repo(
        root,
        &[
            (
                "charts/api/Chart.yaml",
                "apiVersion: v2\nname: api\nversion: 0.1.0\n",
            ),
            ("charts/api/templates/deployment.yaml", DEPLOYMENT),
        ],
    )
}

fn argocd(root: &Path) -> PathBuf {
    repo(
        root,
        &[(
            "apps/api.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: api, namespace: argocd}\n",
        )],
    )
}

fn flux(root: &Path) -> PathBuf {
    repo(
        root,
        &[(
            "clusters/prod/apps.yaml",
            "---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: flux-system}\n",
        )],
    )
}

fn node(root: &Path) -> PathBuf {
    repo(
        root,
        &[
            ("package.json", "{\"name\": \"web\"}\n"),
            (".github/workflows/ci.yml", "on: push\n"),
        ],
    )
}

/// Capabilities that tell the repositories apart (all read intents over built-in runbooks).
const CAPS: &str = r#"version: 1
capabilities:
  gitops.status.argocd:
    intent: gitops.status
    runbook: repo.snapshot
    inputs: {map: {repo_path: context.root}}
    when: {tags_any: [argocd]}
  gitops.status.flux:
    intent: gitops.status
    runbook: repo.snapshot
    inputs: {map: {repo_path: context.root}}
    when: {tags_any: [flux]}
  k8s.render:
    runbook: repo.snapshot
    inputs: {map: {repo_path: context.root}}
    when: {all_of: [{tags_any: [kustomize]}, {files_any: [overlays]}]}
  helm.inspect:
    runbook: repo.snapshot
    inputs: {map: {repo_path: project.repo_root}, defaults: {limit: 3}}
    when: {tags_all: [helm, k8s]}
  node.inspect:
    runbook: repo.snapshot
    inputs: {map: {repo_path: context.root}}
    when: {files_all: [package.json], not: {tags_any: [k8s]}}
"#;

fn intent(p: &Project, args: &[&str]) -> (i32, Value) {
    let out = p
        .infra()
        .args(["intent"])
        .args(args)
        .arg("--json")
        .output()
        .expect("run");
    (out.status.code().unwrap_or(-1), stdout_json(&out))
}

#[test]
fn context_tags_each_repository() {
    let d = tempfile::tempdir().expect("tmp");
    let p = Project::new();
    for (make, tags, evidence) in [
        (
            kustomize as fn(&Path) -> PathBuf,
            &["git", "kustomize", "k8s"][..],
            ("kustomize", "base/kustomization.yaml"),
        ),
        (
            helm,
            &["git", "helm", "k8s"],
            ("helm", "charts/api/Chart.yaml"),
        ),
        (
            argocd,
            &["git", "argocd", "gitops", "k8s"],
            ("argocd", "apps/api.yaml"),
        ),
        (
            flux,
            &["git", "flux", "gitops", "k8s"],
            ("flux", "clusters/prod/apps.yaml"),
        ),
        (
            node,
            &["git", "node", "ci"],
            ("ci", ".github/workflows/ci.yml"),
        ),
    ] {
        let root = make(&d.path().join(evidence.0));
        // asked from a subdirectory: the root is the repository's
        let out = p
            .infra()
            .args(["context", "--json"])
            .arg(&root)
            .output()
            .expect("run");
        assert!(out.status.success());
        let c = stdout_json(&out);
        assert_eq!(c["root"], json!(root), "{c}");
        let got: Vec<&str> = c["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for t in tags {
            assert!(got.contains(t), "{}: {t} not in {got:?}", evidence.0);
        }
        assert!(
            c["files"][evidence.0]
                .as_array()
                .expect("evidence")
                .contains(&json!(evidence.1)),
            "{c}"
        );
        assert_eq!(c["truncated"], false);
    }
}

#[test]
fn context_is_bounded_and_refuses_a_file() {
    let d = tempfile::tempdir().expect("tmp");
    let big = d.path().join("big");
    std::fs::create_dir_all(big.join("deep")).expect("mkdir");
    for i in 0..20_010 {
        std::fs::write(big.join(format!("f{i:05}")), "").expect("write");
    }
    let p = Project::new();
    let out = p
        .infra()
        .args(["context", "--json"])
        .arg(&big)
        .output()
        .expect("run");
    let c = stdout_json(&out);
    assert_eq!(c["truncated"], true, "{c}");
    assert!(
        c["stopped"]
            .as_str()
            .expect("why")
            .contains("20000 entries"),
        "{c}"
    );
    let out = p
        .infra()
        .args(["context"])
        .arg(big.join("f00001"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
}

#[test]
fn intents_resolve_on_each_repository() {
    let d = tempfile::tempdir().expect("tmp");
    let p = Project::new().file("capabilities.yaml", CAPS);
    let (k, h, a, f, n) = (
        kustomize(&d.path().join("k")),
        helm(&d.path().join("h")),
        argocd(&d.path().join("a")),
        flux(&d.path().join("f")),
        node(&d.path().join("n")),
    );
    for (root, intent_type, cap) in [
        (&a, "gitops.status", "gitops.status.argocd"),
        (&f, "gitops.status", "gitops.status.flux"),
        (&k, "k8s.render", "k8s.render"),
        (&h, "helm.inspect", "helm.inspect"),
        (&n, "node.inspect", "node.inspect"),
    ] {
        let (code, r) = intent(
            &p,
            &[
                "explain",
                intent_type,
                "--repo-root",
                root.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(code, 0, "{r}");
        assert_eq!(r["capability"], cap, "{r}");
        assert_eq!(r["steps"][0]["inputs"]["repo_path"], json!(root), "{r}");
        assert!(r["why"].as_str().expect("why").contains("holds"), "{r}");
    }
    // explicit inputs win over `map`, `defaults` fill in
    let (_, r) = intent(
        &p,
        &[
            "explain",
            "helm.inspect",
            "--repo-root",
            h.to_str().expect("utf-8"),
            "-i",
            "limit=7",
        ],
    );
    assert_eq!(r["steps"][0]["inputs"]["limit"], 7);
    assert_eq!(r["steps"][0]["sources"]["limit"], "input");
    assert_eq!(
        r["steps"][0]["sources"]["repo_path"],
        "map: project.repo_root"
    );
    // no match: every candidate's failed `when` is named
    let (code, r) = intent(
        &p,
        &[
            "explain",
            "gitops.status",
            "--repo-root",
            n.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, 2);
    assert_eq!(r["error"]["kind"], "no_match", "{r}");
    let m = r["error"]["message"].as_str().expect("message");
    assert!(
        m.contains("gitops.status.argocd")
            && m.contains("gitops.status.flux")
            && m.contains("tags_any"),
        "{m}"
    );
    // a repository with both: ambiguous, never a silent pick
    let both = repo(
        &d.path().join("both"),
        &[
            (
                "a.yaml",
                "apiVersion: argoproj.io/v1alpha1\nkind: Application\n",
            ),
            (
                "b.yaml",
                "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\n",
            ),
        ],
    );
    let (code, r) = intent(
        &p,
        &[
            "explain",
            "gitops.status",
            "--repo-root",
            both.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, 2);
    assert_eq!(r["error"]["kind"], "ambiguous", "{r}");
    assert!(
        r["error"]["hint"]
            .as_str()
            .expect("hint")
            .contains("capability: \"gitops.status.argocd\""),
        "{r}"
    );
    let (code, r) = intent(
        &p,
        &[
            "explain",
            "gitops.status",
            "--capability",
            "gitops.status.flux",
            "--repo-root",
            both.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        (code, r["capability"].as_str()),
        (0, Some("gitops.status.flux")),
        "{r}"
    );
    // an unknown intent: the nearest one
    let (code, r) = intent(&p, &["explain", "gitops.stauts"]);
    assert_eq!((code, r["error"]["kind"].as_str()), (2, Some("not_found")));
    assert!(
        r["error"]["hint"]
            .as_str()
            .expect("hint")
            .contains("gitops.status"),
        "{r}"
    );
    // what applies in the Argo CD repository, with why
    let (_, r) = intent(&p, &["suggest", "--repo-root", a.to_str().expect("utf-8")]);
    let names: Vec<&str> = r["suggestions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"gitops.status.argocd")
            && names.contains(&"repo.snapshot")
            && !names.contains(&"gitops.status.flux"),
        "{names:?}"
    );
}

#[test]
fn the_seed_capabilities_file_loads_verbatim() {
    let p = Project::new().file(
        "capabilities.json",
        "{\n  \"version\": 1,\n  \"capabilities\": {}\n}\n",
    );
    p.infra().args(["validate"]).assert().success();
    let out = p.infra().args(["doctor", "--json"]).output().expect("run");
    let checks = stdout_json(&out);
    let c = checks.as_array().map_or(&checks["checks"], |_| &checks);
    assert!(c.to_string().contains("capabilities"), "{c}");
    let (code, r) = intent(&p, &["list"]);
    assert_eq!(code, 0);
    assert!(
        r["capabilities"]
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["name"] == "repo.snapshot")
    );
}

#[test]
fn bad_capabilities_files_are_located_and_nothing_runs() {
    for (text, code, at) in [
        (
            "version: 1\ncapabilities:\n  a: {runbook: repo.snapshot, whne: {}}\n",
            "unknown-key",
            "capabilities.yaml:3:",
        ),
        (
            "version: 1\ncapabilities:\n  a:\n    runbook: repo.snapshot\n    tags: yes\n",
            "schema-violation",
            "capabilities.yaml:5:",
        ),
        (
            "version: 1\ncapabilities:\n  a:\n    runbook: repo.snapshto\n",
            "unknown-runbook",
            "capabilities.yaml:4:14",
        ),
        (
            "version: 1\ncapabilities:\n  a:\n    runbook: repo.snapshot\n    inputs:\n      map: {repo: context.root}\n",
            "undefined-input",
            "capabilities.yaml:6:13",
        ),
        (
            "version: 1\ncapabilities:\n  a: {runbook: repo.snapshot, depends_on: [b]}\n  b: {runbook: repo.snapshot, depends_on: [a]}\n",
            "dependency-cycle",
            "capabilities.yaml:3:",
        ),
        (
            "version: 1\ncapabilities: [\n",
            "yaml-syntax",
            "capabilities.yaml:",
        ),
    ] {
        let p = Project::new().file("capabilities.yaml", text);
        let out = p.infra().args(["validate"]).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}\n{err}");
        assert!(
            err.contains(&format!("error[{code}]")) && err.contains(at),
            "{text}\n{err}"
        );
        p.infra().args(["doctor"]).assert().code(1);
        let (c, r) = intent(&p, &["execute", "repo.snapshot"]);
        assert_eq!(
            (c, r["error"]["kind"].as_str()),
            (2, Some("invalid_config")),
            "{r}"
        );
        assert!(!p.path().join("runs/intent.repo.snapshot").exists());
    }
}

/// A write intent and an irreversible one over the built-in `hello.world` (it sets state).
pub(crate) const GATED: &str = r#"version: 1
capabilities:
  greet:
    runbook: hello.world
    inputs: {required: [message]}
    effects: {kind: write, requires_apply: true}
  greet.forever:
    runbook: hello.world
    inputs: {defaults: {message: forever}}
    effects: {kind: write, requires_apply: true, irreversible: true}
    depends_on: [greet]
"#;

#[test]
fn execute_is_gated_and_refusals_are_audited() {
    let p = Project::new().file("capabilities.yaml", GATED);
    // missing inputs: all listed, nothing runs
    let (code, r) = intent(&p, &["execute", "greet.forever", "--apply", "--confirm"]);
    assert_eq!(
        (code, r["error"]["kind"].as_str()),
        (2, Some("missing_inputs")),
        "{r}"
    );
    assert_eq!(r["error"]["details"]["missing"], json!(["greet.message"]));
    // a write intent without --apply
    let (code, r) = intent(&p, &["execute", "greet", "-i", "message=hi"]);
    assert_eq!(
        (code, r["error"]["kind"].as_str()),
        (2, Some("refused")),
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .expect("m")
            .contains("--apply"),
        "{r}"
    );
    // an irreversible one with --apply but without --confirm
    let (code, r) = intent(
        &p,
        &["execute", "greet.forever", "-i", "message=hi", "--apply"],
    );
    assert_eq!(
        (code, r["error"]["kind"].as_str()),
        (2, Some("refused")),
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .expect("m")
            .contains("--confirm"),
        "{r}"
    );
    assert!(
        !p.path().join("runs/intent.greet").exists()
            && !p.path().join("runs/intent.greet.forever").exists()
    );
    let out = p
        .infra()
        .args(["state", "get", "hello", "--json"])
        .output()
        .expect("run");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("hi"),
        "state was set"
    );
    let audit = std::fs::read_to_string(p.path().join("audit.jsonl")).expect("audit");
    let refused: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "refused" && r["tool"] == "intent")
        .collect();
    assert_eq!(refused.len(), 2, "{audit}");
    assert!(
        refused[1]["error"]["message"]
            .as_str()
            .expect("m")
            .contains("irreversible")
    );
    assert!(refused[1]["plan_digest"].is_string());
    // with both flags, the policy still has its word: an irreversible intent needs a person's
    // approval by default (change control is tested in `change_control.rs`)
    let both = [
        "execute",
        "greet.forever",
        "-i",
        "message=hi",
        "--apply",
        "--confirm",
    ];
    let (code, r) = intent(&p, &both);
    assert_ne!(code, 0, "{r}");
    assert!(r.to_string().contains("approval_required"), "{r}");
    assert_eq!(r["approval"]["rule"], "default.irreversible", "{r}");
    std::fs::write(
        p.path().join("policy.yaml"),
        "effects: {irreversible: allow}\n",
    )
    .expect("policy");
    // with both flags and a policy that allows it: one run, dependencies first, nested runs per runbook
    let (code, r) = intent(
        &p,
        &[
            "execute",
            "greet.forever",
            "-i",
            "message=hi",
            "--apply",
            "--confirm",
        ],
    );
    assert_eq!(code, 0, "{r}");
    assert!(
        r["evidence"]
            .as_str()
            .expect("uri")
            .starts_with("artifact://runs/intent.greet.forever/"),
        "{r}"
    );
    let (_, plan) = intent(&p, &["compile", "greet.forever", "-i", "message=hi"]);
    let order: Vec<&str> = plan["runbooks"]
        .as_array()
        .expect("runbooks")
        .iter()
        .filter_map(|r| r["capability"].as_str())
        .collect();
    assert_eq!(order, ["greet", "greet.forever"]);
    assert!(
        plan["digest"].is_string() && plan["effects"] == "write",
        "{plan}"
    );
}

#[test]
fn secret_inputs_never_show() {
    let p = Project::new()
        .runbook(
            "login",
            "inputs:\n  token: {type: string, secret: true}\n  user: {type: string}\nsteps:\n  - {id: s, tool: state, args: {action: set, key: who, value: '{{ input.user }}', scope: session}}\n",
        )
        .file("capabilities.yaml", "version: 1\ncapabilities:\n  login: {runbook: login, inputs: {required: [token]}}\n");
    let secret = "s3cr3t-t0ken-value";
    for action in ["explain", "compile", "dry-run"] {
        let out = p
            .infra()
            .args([
                "intent",
                action,
                "login",
                "-i",
                &format!("token={secret}"),
                "-i",
                "user=bob",
                "--json",
            ])
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("bob") && !text.contains(secret),
            "{action}: {text}"
        );
    }
    let out = p
        .infra()
        .args([
            "intent",
            "execute",
            "login",
            "-i",
            &format!("token={secret}"),
            "-i",
            "user=bob",
            "--apply",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        crate::files_containing(p.path(), &[secret]).is_empty(),
        "the secret was written"
    );
}

#[test]
fn a_targets_repo_root_is_the_context_and_state_feeds_map() {
    let d = tempfile::tempdir().expect("tmp");
    let a = argocd(&d.path().join("gitops"));
    let p = Project::new()
        .targets(&json!({"prod": {"host": "prod.example.invalid", "repo_root": a}}))
        .file(
            "capabilities.yaml",
            &format!("{CAPS}  from.state:\n    runbook: repo.snapshot\n    inputs: {{map: {{repo_path: state.checkout}}}}\n"),
        );
    let (code, r) = intent(&p, &["explain", "gitops.status", "--target", "prod"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (r["capability"].as_str(), r["root"].as_str()),
        (Some("gitops.status.argocd"), a.to_str()),
        "{r}"
    );
    p.infra()
        .args(["state", "set", "checkout", "/srv/checkout"])
        .assert()
        .success();
    let (_, r) = intent(&p, &["explain", "from.state"]);
    assert_eq!(r["steps"][0]["inputs"]["repo_path"], "/srv/checkout", "{r}");
    assert_eq!(r["steps"][0]["sources"]["repo_path"], "map: state.checkout");
}
