//! The built-in `gitops.*` runbooks end to end: a real bare remote and a clone of it in the project,
//! the real `kubectl kustomize` for the plan, and the stand-ins of `support/forge.rs` for the forge
//! (GitHub and GitLab shapes), Argo CD and Prometheus, whose state comes from that same remote: a
//! merge on the forge is a real commit on the remote's `main`, and Argo CD deploys what `main` holds.
//! Each test reads back the remote, the requests the stand-ins received, the run's evidence and the
//! audit log.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::project::Project;
use crate::repo_write::git;
use crate::support::forge::{Argo, Ci, Forge, Prometheus};
use crate::support::kube::Kube;

const TOKEN: &str = "forge-token-Zq8x-not-for-output";
const ARGO_TOKEN: &str = "argo-token-Kp3w-not-for-output";

const OVERLAY: &str = "gitops/deploy/overlays/prod";

fn kustomization(tag: &str) -> String {
    format!(
        "resources:\n  - ../../base\nnamespace: prod\nimages:\n  - name: web\n    newName: ghcr.io/acme/web\n    newTag: \"{tag}\"\n"
    )
}

/// The change of the overlay's image tag from 1.0 to `tag`, as `git diff` writes it.
fn patch(tag: &str) -> String {
    format!(
        "diff --git a/deploy/overlays/prod/kustomization.yaml b/deploy/overlays/prod/kustomization.yaml
--- a/deploy/overlays/prod/kustomization.yaml
+++ b/deploy/overlays/prod/kustomization.yaml
@@ -5,3 +5,3 @@ images:
   - name: web
     newName: ghcr.io/acme/web
-    newTag: \"1.0\"
+    newTag: \"{tag}\"
"
    )
}

/// A GitOps repository: a bare remote whose `main` holds a kustomize base and a `prod` overlay at
/// image tag 1.0, a clone of it at `gitops/` in a project whose targets name the stand-ins.
struct World {
    _remote_dir: tempfile::TempDir,
    bare: PathBuf,
    project: Project,
    forge: Forge,
    argo: Argo,
    prometheus: Prometheus,
    kube: Kube,
}

impl World {
    fn new(ci: Ci) -> World {
        let remote_dir = tempfile::tempdir().expect("tmp");
        let seed = remote_dir.path().join("seed");
        std::fs::create_dir_all(seed.join("deploy/base")).expect("dir");
        std::fs::create_dir_all(seed.join("deploy/overlays/prod")).expect("dir");
        std::fs::write(
            seed.join("deploy/base/deploy.yaml"),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: web\n",
        )
        .expect("write");
        std::fs::write(
            seed.join("deploy/base/kustomization.yaml"),
            "resources:\n  - deploy.yaml\n",
        )
        .expect("write");
        std::fs::write(
            seed.join("deploy/overlays/prod/kustomization.yaml"),
            kustomization("1.0"),
        )
        .expect("write");
        git(&seed, &["init", "-q"]);
        git(&seed, &["add", "."]);
        git(&seed, &["commit", "-q", "-m", "web 1.0"]);
        git(
            remote_dir.path(),
            &["clone", "-q", "--bare", "seed", "remote.git"],
        );
        let bare = remote_dir.path().join("remote.git");

        let forge = Forge::start(&bare, TOKEN, ci);
        let argo = Argo::start(&bare, ARGO_TOKEN, "web", "main", Some("6.6.6-degraded"));
        let prometheus = Prometheus::start(&argo, ARGO_TOKEN, "6.6.6-errors");
        let kube = Kube::start(&bare, "apps", Some("6.6.6-degraded"));
        let kubeconfig = remote_dir.path().join("kubeconfig");
        kube.kubeconfig(&kubeconfig);
        let project = Project::new()
            .targets(&json!({
                "forge": {"http": {"base_url": forge.server.url(""), "bearer_env": "FORGE_TOKEN"}},
                "gitlab": {"http": {"base_url": forge.server.url("/api/v4"), "bearer_env": "FORGE_TOKEN"}},
                "argocd": {"http": {"base_url": argo.server.url(""), "bearer_env": "ARGO_TOKEN"}},
                "prometheus": {"http": {"base_url": prometheus.server.url(""), "bearer_env": "ARGO_TOKEN"}},
                "cluster": {"kube": {"kubeconfig": kubeconfig.display().to_string(), "context": "standin"}},
            }))
            .env("FORGE_TOKEN", TOKEN)
            .env("ARGO_TOKEN", ARGO_TOKEN);
        let url = format!("file://{}", bare.display());
        git(project.path(), &["clone", "-q", &url, "gitops"]);
        let clone = project.path().join("gitops");
        git(&clone, &["config", "user.name", "Release Bot"]);
        git(&clone, &["config", "user.email", "release@example.com"]);
        World {
            _remote_dir: remote_dir,
            bare,
            project,
            forge,
            argo,
            prometheus,
            kube,
        }
    }

    /// `gitops.release` with the common inputs and `extra`; the CLI's JSON outcome.
    fn release(&self, extra: &[(&str, &str)]) -> Value {
        let mut inputs: Vec<(String, String)> = [
            ("repo_path", "gitops"),
            ("branch", "release/web"),
            ("overlay", OVERLAY),
            ("forge_target", "forge"),
            ("repository", "acme/deploy"),
            ("argocd_target", "argocd"),
            ("app", "web"),
            ("prometheus_target", "prometheus"),
            (
                "query",
                "sum(rate(http_errors[5m])) / sum(rate(http_requests[5m]))",
            ),
            ("max_value", "0.05"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            inputs.retain(|(n, _)| n != k);
            inputs.push(((*k).to_owned(), (*v).to_owned()));
        }
        let file = self.project.path().join("release-inputs.json");
        let map: serde_json::Map<String, Value> = inputs
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "max_value" {
                    json!(v.parse::<f64>().expect("number"))
                } else {
                    Value::String(v)
                };
                (k, v)
            })
            .collect();
        std::fs::write(&file, Value::Object(map).to_string()).expect("inputs");
        let out = self
            .project
            .infra()
            .args(["run", "gitops.release", "--json", "--input-file"])
            .arg(&file)
            .output()
            .expect("run");
        let v = crate::stdout_json(&out);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains(TOKEN) && !all.contains(ARGO_TOKEN),
            "a token in the output"
        );
        v
    }

    fn main_tip(&self) -> String {
        git(&self.bare, &["rev-parse", "main"])
    }

    fn main_file(&self) -> String {
        git(
            &self.bare,
            &["show", "main:deploy/overlays/prod/kustomization.yaml"],
        )
    }

    /// The requests the forge received, as `METHOD path` lines.
    fn forge_calls(&self) -> Vec<String> {
        self.forge
            .server
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Nothing of the project (audit log, runs, store) holds a token.
    fn assert_no_token_on_disk(&self) {
        for entry in walk(self.project.path()) {
            let Ok(bytes) = std::fs::read(&entry) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(TOKEN) && !text.contains(ARGO_TOKEN),
                "a token in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// One step of a run's outcome (`infra run --json`), by id.
fn step(v: &Value, id: &str) -> Value {
    v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no step {id} in {v}"))
}

/// The status of each step of a run's outcome (`infra run --json`), by id.
fn statuses(v: &Value) -> Vec<(String, String)> {
    v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_owned(),
                s["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn status_of(v: &Value, id: &str) -> String {
    step(v, id)["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn audit(p: &Project) -> Vec<Value> {
    std::fs::read_to_string(p.path().join("audit.jsonl"))
        .expect("audit")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line"))
        .collect()
}

#[test]
fn a_release_goes_from_patch_to_verified_deploy_through_pr_checks_merge_and_sync() {
    let w = World::new(Ci {
        pending_polls: 2,
        conclusion: "success",
    });
    let before = w.main_tip();
    let out = w.release(&[
        ("patch", &patch("1.1")),
        ("message", "web 1.1"),
        ("body", "Ship web 1.1"),
    ]);
    assert_eq!(out["status"], "succeeded", "{out:#}");
    let merged = out["outputs"]["merged"]
        .as_str()
        .expect("merged sha")
        .to_owned();

    // the remote: the release branch holds the change, main holds it as one squashed commit
    assert_eq!(w.main_tip(), merged);
    assert_eq!(git(&w.bare, &["rev-parse", "main^"]), before);
    assert!(
        w.main_file().contains("newTag: \"1.1\""),
        "{}",
        w.main_file()
    );
    let head = git(&w.bare, &["rev-parse", "release/web"]);
    assert_eq!(
        git(&w.bare, &["log", "-1", "--format=%an <%ae>|%s", &head]),
        "Release Bot <release@example.com>|web 1.1"
    );

    // the forge: one pull request, its checks polled until done, merged at the checked head, then
    // the outcome posted on it
    let prs = w.forge.prs();
    assert_eq!(prs.len(), 1);
    assert_eq!(prs[0]["head"]["ref"], "release/web");
    assert_eq!(prs[0]["head"]["sha"], head.as_str());
    assert_eq!(prs[0]["merged"], true);
    assert_eq!(out["outputs"]["pr"], prs[0]["html_url"]);
    let calls = w.forge_calls();
    let checks = format!("GET /repos/acme/deploy/commits/{head}/check-runs");
    assert_eq!(calls[0], "POST /repos/acme/deploy/pulls");
    assert!(
        calls.iter().filter(|c| **c == checks).count() >= 4,
        "two pending polls, the finished one, the verdict: {calls:?}"
    );
    assert_eq!(
        calls[calls.len() - 2],
        "PUT /repos/acme/deploy/pulls/1/merge"
    );
    assert_eq!(
        calls[calls.len() - 1],
        "POST /repos/acme/deploy/issues/1/comments"
    );
    let reqs = w.forge.server.requests();
    let pr_body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    assert_eq!(
        pr_body,
        json!({"title": "web 1.1", "head": "release/web", "base": "main", "body": "Ship web 1.1"})
    );
    let merge_body: Value = serde_json::from_slice(&reqs[reqs.len() - 2].body).expect("json");
    assert_eq!(merge_body, json!({"sha": head, "merge_method": "squash"}));
    let comments = w.forge.prs()[0]["comments"].clone();
    assert_eq!(comments.as_array().map(Vec::len), Some(1), "{comments}");
    assert!(
        comments[0].as_str().expect("text").contains(": succeeded."),
        "{comments}"
    );

    // Argo CD synced exactly the merge and deployed it; Prometheus was asked once
    assert_eq!(w.argo.syncs(), vec![merged.clone()]);
    assert_eq!(w.argo.deployed().as_deref(), Some(merged.as_str()));
    let queries = w.prometheus.server.requests();
    assert_eq!(queries.len(), 1);
    assert!(
        queries[0].path.starts_with("/api/v1/query?query=sum"),
        "{}",
        queries[0].path
    );

    // the evidence: every step, the nested runs, and the plan's render of the new image
    let ids: Vec<String> = statuses(&out).into_iter().map(|(id, _)| id).collect();
    for id in [
        "propose",
        "checks",
        "checks_passed",
        "merge",
        "sync_argocd",
        "verify",
        "report",
    ] {
        assert!(ids.contains(&id.to_owned()), "{id} in {ids:?}");
        assert_ne!(status_of(&out, id), "failed", "{id}");
    }
    assert_eq!(status_of(&out, "sync_flux"), "skipped");
    let plan = &step(&out, "propose")["result"]["outputs"]["plan"];
    assert_eq!(plan["images"][0], "ghcr.io/acme/web:1.1", "{plan:#}");
    assert_eq!(plan["changes"]["files_changed"], 1);
    assert!(step(&out, "checks")["attempts"].as_u64().expect("attempts") >= 3);

    // the audit log: the release and each nested run started and finished, the forge calls recorded
    let audit = audit(&w.project);
    for rb in [
        "gitops.release",
        "gitops.propose",
        "gitops.plan",
        "gitops.sync.argocd",
        "gitops.verify",
    ] {
        assert!(
            audit
                .iter()
                .any(|r| r["kind"] == "run_finished" && r["runbook"] == rb),
            "{rb} finished in the audit log"
        );
    }
    assert!(audit.iter().all(|r| r["runbook"] != "gitops.rollback"));
    // `runs show` tells the story step by step, pointing at each nested run and its first poll
    let id = out["run_id"].as_str().expect("run id").to_owned();
    let shown = w
        .project
        .infra()
        .args(["runs", "show", &id[..12]])
        .output()
        .expect("show");
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    let propose_run = audit
        .iter()
        .find(|r| r["kind"] == "run_started" && r["runbook"] == "gitops.propose")
        .and_then(|r| r["run_id"].as_str())
        .expect("the propose run")
        .to_owned();
    assert!(
        shown.contains("propose succeeded")
            && shown.contains(&format!("(run {} of gitops.propose)", &propose_run[..8])),
        "{shown}"
    );
    assert!(
        shown.contains("checks attempt 1: `until` not met yet")
            && shown.contains("checks succeeded"),
        "{shown}"
    );
    w.assert_no_token_on_disk();
    let out = w
        .project
        .infra()
        .args(["audit", "verify"])
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_failed_verify_after_the_merge_reverts_it_pushes_and_syncs_the_revert() {
    let w = World::new(Ci {
        pending_polls: 1,
        conclusion: "success",
    });
    let before = w.main_tip();
    let out = w.release(&[("patch", &patch("6.6.6-errors")), ("message", "web 6.6.6")]);
    assert_eq!(out["status"], "failed", "{out:#}");
    assert_eq!(status_of(&out, "verify"), "failed");
    assert_eq!(status_of(&out, "merge-rollback"), "succeeded", "{out:#}");
    let why = out["error"]["message"].as_str().expect("error");
    assert!(
        why.contains("gitops.verify") && why.contains("step `metric` failed"),
        "the error names the check that failed: {why}"
    );

    // the remote: the merge, then its revert on top; the tree is back to 1.0
    let merged = git(&w.bare, &["rev-parse", "main^"]);
    assert_eq!(git(&w.bare, &["rev-parse", "main^^"]), before);
    assert_eq!(
        git(&w.bare, &["log", "-1", "--format=%s", "main"]),
        "Revert \"web 6.6.6 (#1)\""
    );
    assert_eq!(w.main_file(), kustomization("1.0").trim_end());

    // Argo CD synced the merge, then the revert, and runs the revert now
    let tip = w.main_tip();
    assert_eq!(w.argo.syncs(), vec![merged, tip.clone()]);
    assert_eq!(w.argo.deployed(), Some(tip));

    // the verdict that failed is the metric's, and the pull request was told
    let verify = step(&out, "verify");
    assert_eq!(verify["result"]["status"], "failed", "{verify:#}");
    let reqs = w.forge.server.requests();
    let last = reqs.last().expect("a request");
    assert_eq!(last.path, "/repos/acme/deploy/issues/1/comments");
    let comment: Value = serde_json::from_slice(&last.body).expect("json");
    let comment = comment["body"].as_str().expect("body");
    assert!(
        comment.contains("failed at verify") && comment.contains("reverted"),
        "{comment}"
    );
    let audit = audit(&w.project);
    assert!(
        audit
            .iter()
            .any(|r| r["kind"] == "run_finished" && r["runbook"] == "gitops.rollback"),
        "the rollback's run in the audit log"
    );
    w.assert_no_token_on_disk();
}

#[test]
fn a_gitlab_merge_request_with_a_degraded_deploy_reverts_the_merge_commit() {
    let w = World::new(Ci {
        pending_polls: 1,
        conclusion: "success",
    });
    let before = w.main_tip();
    let out = w.release(&[
        ("patch", &patch("6.6.6-degraded")),
        ("message", "web degraded"),
        ("forge", "gitlab"),
        ("forge_target", "gitlab"),
        ("repository", "acme/deploy"),
        ("merge_method", "merge"),
    ]);
    assert_eq!(out["status"], "failed", "{out:#}");
    assert_eq!(status_of(&out, "verify"), "failed");

    // GitLab's paths (the project's path encoded as one segment) and bodies
    let calls = w.forge_calls();
    assert_eq!(
        calls[0],
        "POST /api/v4/projects/acme%2Fdeploy/merge_requests"
    );
    assert!(calls.contains(&"GET /api/v4/projects/acme%2Fdeploy/merge_requests/1".to_owned()));
    assert!(
        calls.contains(&"PUT /api/v4/projects/acme%2Fdeploy/merge_requests/1/merge".to_owned())
    );
    assert_eq!(
        calls.last().map(String::as_str),
        Some("POST /api/v4/projects/acme%2Fdeploy/merge_requests/1/notes")
    );
    let reqs = w.forge.server.requests();
    let mr: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    assert_eq!(mr["source_branch"], "release/web");
    assert_eq!(mr["target_branch"], "main");

    // a real merge commit (two parents) went to main, then its revert against the first parent
    let merge = git(&w.bare, &["rev-parse", "main^"]);
    assert_eq!(
        git(&w.bare, &["rev-list", "--parents", "-n", "1", &merge])
            .split(' ')
            .count(),
        3,
        "a merge commit"
    );
    assert_eq!(git(&w.bare, &["rev-parse", "main^^"]), before);
    assert_eq!(w.main_file(), kustomization("1.0").trim_end());
    assert_eq!(w.argo.syncs().len(), 2);
    assert_eq!(w.argo.deployed(), Some(w.main_tip()));
}

#[test]
fn failed_checks_stop_the_release_before_the_merge() {
    let w = World::new(Ci {
        pending_polls: 1,
        conclusion: "failure",
    });
    let before = w.main_tip();
    let out = w.release(&[("patch", &patch("1.2")), ("message", "web 1.2")]);
    assert_eq!(out["status"], "failed", "{out:#}");
    assert_eq!(status_of(&out, "checks"), "succeeded");
    assert_eq!(status_of(&out, "checks_passed"), "failed");
    assert_eq!(status_of(&out, "merge"), "skipped");
    let err = step(&out, "checks_passed")["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(err.contains("until"), "{err}");
    // nothing merged, nothing synced; the pull request was told where it stopped
    assert_eq!(w.main_tip(), before);
    assert!(w.forge_calls().iter().all(|c| !c.starts_with("PUT ")));
    assert!(w.argo.syncs().is_empty());
    let reqs = w.forge.server.requests();
    let comment: Value = serde_json::from_slice(&reqs.last().expect("req").body).expect("json");
    assert!(
        comment["body"]
            .as_str()
            .expect("body")
            .contains("failed at checks_passed"),
        "{comment}"
    );
}

#[test]
fn an_image_policy_violation_stops_the_proposal_before_anything_is_pushed() {
    let w = World::new(Ci {
        pending_polls: 0,
        conclusion: "success",
    });
    let out = w.release(&[("patch", &patch("latest")), ("message", "web latest")]);
    assert_eq!(out["status"], "failed", "{out:#}");
    assert_eq!(status_of(&out, "propose"), "failed");
    let propose = step(&out, "propose");
    assert!(
        propose.to_string().contains("disallow_latest") || propose.to_string().contains("latest"),
        "{propose:#}"
    );
    // no branch on the remote, no pull request, no comment; the clone is back on main
    assert!(
        Command::new("git")
            .args(["-C"])
            .arg(&w.bare)
            .args(["rev-parse", "--verify", "-q", "refs/heads/release/web"])
            .output()
            .expect("git")
            .stdout
            .is_empty()
    );
    assert!(
        w.forge.server.requests().is_empty(),
        "{:?}",
        w.forge_calls()
    );
    assert_eq!(
        git(
            &w.project.path().join("gitops"),
            &["branch", "--show-current"]
        ),
        "main"
    );
}

#[test]
fn a_flux_release_reconciles_through_the_real_kubectl_and_waits_for_the_merged_revision() {
    let w = World::new(Ci {
        pending_polls: 0,
        conclusion: "success",
    });
    let out = w.release(&[
        ("patch", &patch("1.3")),
        ("message", "web 1.3"),
        ("sync", "flux"),
        ("kube_target", "cluster"),
        ("kustomization", "apps"),
        ("flux_source", "apps"),
        ("prometheus_target", ""),
    ]);
    assert_eq!(out["status"], "succeeded", "{out:#}");
    assert_eq!(status_of(&out, "sync_argocd"), "skipped");
    assert_eq!(status_of(&out, "sync_flux"), "succeeded");
    let merged = out["outputs"]["merged"]
        .as_str()
        .expect("merged")
        .to_owned();
    assert_eq!(w.main_tip(), merged);
    assert!(w.argo.syncs().is_empty());

    // kubectl annotated the source, then the Kustomization, with this sync's run id, and read the
    // Kustomization until Flux had handled that request on the merged commit
    let patches: Vec<(String, Value)> = w
        .kube
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| {
            (
                r.path.split('?').next().unwrap_or_default().to_owned(),
                serde_json::from_slice(&r.body).expect("json patch"),
            )
        })
        .collect();
    let ks = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/apps";
    let src = "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/apps";
    assert_eq!(
        patches.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        vec![src, ks]
    );
    let requested = patches[1].1["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
        .as_str()
        .expect("requestedAt")
        .to_owned();
    assert_eq!(patches[0].1, patches[1].1);
    let object = w.kube.object(ks).expect("kustomization");
    assert_eq!(
        object["status"]["lastHandledReconcileAt"],
        requested.as_str()
    );
    assert_eq!(
        object["status"]["lastAppliedRevision"],
        format!("main@sha1:{merged}")
    );
    let reads = w
        .kube
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == ks)
        .count();
    assert!(reads >= 3, "polled while Flux was reconciling: {reads}");
    // the sync's own run id was the request, so the wait could not be satisfied by an older one
    let audit = audit(&w.project);
    assert!(
        audit
            .iter()
            .any(|r| r["run_id"] == requested.as_str() && r["runbook"] == "gitops.sync.flux"),
        "the requestedAt is the sync run's id"
    );
}

#[test]
fn doctor_connect_reaches_a_kube_target_and_says_what_its_user_may_do() {
    let w = World::new(Ci {
        pending_polls: 0,
        conclusion: "success",
    });
    let out = w
        .project
        .infra()
        .args(["doctor", "--connect", "--json"])
        .output()
        .expect("doctor");
    let v = crate::stdout_json(&out);
    let check = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == "kube cluster")
        .unwrap_or_else(|| panic!("a kube check: {v:#}"))
        .clone();
    assert_eq!(check["ok"], true, "{check}");
    let detail = check["detail"].as_str().expect("detail");
    assert!(
        detail.contains("v1.32.0-standin")
            && detail.contains("get pods: yes")
            && detail.contains("patch deployments: yes"),
        "{detail}"
    );
    let paths: Vec<String> = w
        .kube
        .server
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("/version")), "{paths:?}");
    assert!(
        paths
            .iter()
            .any(|p| p == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
        "{paths:?}"
    );

    // a cluster that cannot be reached fails the check with kubectl's reason
    let closed = w.project.path().join("closed-kubeconfig");
    std::fs::write(
        &closed,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{}\"}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n",
            crate::support::free_port()
        ),
    )
    .expect("kubeconfig");
    std::fs::write(
        w.project.path().join("targets.json"),
        json!({"gone": {"kube": {"kubeconfig": closed.display().to_string()}}}).to_string(),
    )
    .expect("targets");
    let out = w
        .project
        .infra()
        .args(["doctor", "--connect", "--json"])
        .output()
        .expect("doctor");
    assert!(!out.status.success());
    let v = crate::stdout_json(&out);
    let check = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == "kube gone")
        .expect("a kube check")
        .clone();
    assert_eq!(check["ok"], false, "{check}");
    assert!(
        check["detail"]
            .as_str()
            .expect("detail")
            .contains("refused"),
        "{check}"
    );
    assert!(
        check["hint"].as_str().expect("hint").contains("kubeconfig"),
        "{check}"
    );
}

#[test]
fn hostile_names_are_refused_before_anything_is_touched_and_a_wrong_app_fails_at_once() {
    let w = World::new(Ci {
        pending_polls: 0,
        conclusion: "success",
    });
    let clone = w.project.path().join("gitops");
    let head = git(&clone, &["rev-parse", "HEAD"]);
    for (name, value) in [
        ("repository", "acme/../../admin"),
        ("repository", "acme/deploy?x=1"),
        ("branch", "-f"),
        ("app", "web/../../settings"),
    ] {
        let out = w.release(&[("patch", &patch("1.1")), ("message", "m"), (name, value)]);
        // refused as a whole before a step is planned to run, the input named
        assert_eq!(out["status"], "invalid", "{name}={value}: {out:#}");
        let d = &out["diagnostics"][0];
        assert_eq!(d["code"], "invalid-input", "{d}");
        assert!(
            d["message"]
                .as_str()
                .is_some_and(|m| m.contains(name) && m.contains("does not match")),
            "{name}={value}: {d}"
        );
    }
    assert!(w.forge.server.requests().is_empty());
    assert!(w.argo.server.requests().is_empty());
    // each refusal is in the audit log, with the inputs' names and never their values
    let rejected: Vec<Value> = audit(&w.project)
        .into_iter()
        .filter(|r| r["kind"] == "rejected" && r["front_end"] == "cli")
        .collect();
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    assert!(
        rejected
            .iter()
            .all(|r| r["args"]["name"] == "gitops.release")
    );
    assert!(
        !rejected[0]["args"].to_string().contains("acme"),
        "{}",
        rejected[0]
    );
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");

    // an application Argo CD does not know: a 404 at the first poll, not minutes of retries
    let out = w
        .project
        .infra()
        .args([
            "run",
            "gitops.verify",
            "--json",
            "-i",
            "argocd_target=argocd",
            "-i",
            "app=nope",
        ])
        .output()
        .expect("run");
    let v = crate::stdout_json(&out);
    assert_eq!(v["status"], "failed", "{v:#}");
    let health = &v["steps"][0];
    assert_eq!(health["id"], "health");
    assert_eq!(health["attempts"], 1, "{health:#}");
    assert!(health.to_string().contains("404"), "{health:#}");
}

#[test]
fn the_gitops_runbooks_serve_intents_and_sync_follows_the_projects_tool() {
    let p = Project::new()
        .file(
            "clusters/prod/flux-system/gotk-sync.yaml",
            "kind: Kustomization\n",
        )
        .file(
            "argo/app.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: web}\n",
        );
    let explain = |root: &Path, intent: &str, inputs: &[&str]| {
        let mut c = p.infra();
        c.args(["intent", "explain", intent, "--json", "--repo-root"])
            .arg(root);
        for i in inputs {
            c.args(["-i", i]);
        }
        crate::stdout_json(&c.output().expect("explain"))
    };
    // a Flux project syncs through Flux, an Argo CD one through Argo CD
    let flux = p.path().join("clusters");
    let r = explain(&flux, "gitops.sync", &["kustomization=apps"]);
    assert_eq!(r["capability"], "gitops.sync.flux", "{r}");
    let argo = p.path().join("argo");
    let r = explain(&argo, "gitops.sync", &["target=argocd", "app=web"]);
    assert_eq!(r["capability"], "gitops.sync.argocd", "{r}");
    // the release is a write: explained, with `apply` required to run it
    let r = explain(
        &argo,
        "gitops.release",
        &["branch=b", "message=m", "forge_target=f", "repository=a/b"],
    );
    assert_eq!(r["capability"], "gitops.release", "{r}");
    assert_eq!(r["effects"]["requires_apply"], true, "{r}");
    assert_eq!(
        r["steps"][0]["inputs"]["repo_path"],
        argo.display().to_string(),
        "{r}"
    );
}

#[test]
fn a_flux_kustomization_that_is_not_ready_after_the_merge_is_rolled_back_through_flux() {
    let w = World::new(Ci {
        pending_polls: 0,
        conclusion: "success",
    });
    let before = w.main_tip();
    let out = w.release(&[
        ("patch", &patch("6.6.6-degraded")),
        ("message", "web degraded"),
        ("sync", "flux"),
        ("kube_target", "cluster"),
        ("kustomization", "apps"),
        ("prometheus_target", ""),
    ]);
    assert_eq!(out["status"], "failed", "{out:#}");
    assert_eq!(status_of(&out, "sync_flux"), "failed");
    assert_eq!(status_of(&out, "verify"), "skipped");
    assert_eq!(status_of(&out, "merge-rollback"), "succeeded", "{out:#}");
    assert!(
        step(&out, "sync_flux")
            .to_string()
            .contains("step `ready` failed"),
        "{:#}",
        step(&out, "sync_flux")
    );
    // the revert is on main, and Flux reconciled it (a second request) and is Ready on it
    assert_eq!(git(&w.bare, &["rev-parse", "main^^"]), before);
    assert_eq!(w.main_file(), kustomization("1.0").trim_end());
    let ks = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/apps";
    let patches = w
        .kube
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with(ks))
        .count();
    assert_eq!(patches, 2, "the release's sync, then the rollback's");
    let object = w.kube.object(ks).expect("kustomization");
    assert_eq!(
        object["status"]["lastAppliedRevision"],
        format!("main@sha1:{}", w.main_tip())
    );
    assert_eq!(object["status"]["conditions"][0]["status"], "True");
}
