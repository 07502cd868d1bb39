//! `k8s` with the real `kubectl`: renders of a kustomize overlay tree (no cluster needed) and of a
//! plain manifest directory, image policy violations located, paths outside the project refused; the
//! cluster actions' argv pinned through a real kubectl run against a kubeconfig whose API server is a
//! closed loopback port (there is no cluster here), a missing kubeconfig and option injection refused.

use serde_json::{Value, json};

use crate::project::Project;

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      initContainers:\n        - {name: init, image: busybox}\n      containers:\n        - name: app\n          image: nginx:latest\n";

fn project() -> Project {
    Project::new()
        .file("deploy/base/deploy.yaml", DEPLOY)
        .file("deploy/base/kustomization.yaml", "resources:\n  - deploy.yaml\n")
        .file(
            "deploy/overlays/dev/kustomization.yaml",
            "bases:\n  - ../../base\nnamespace: dev\nimages:\n  - name: nginx\n    newName: ghcr.io/acme/web\n    newTag: \"1.2\"\n",
        )
        .file(
            "deploy/plain/a.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: prod}\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick, namespace: prod}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: t, image: \"ghcr.io/acme/tick@sha256:0123\"}]\n",
        )
        .file("deploy/plain/b.yml", DEPLOY)
        .file(
            "kubeconfig",
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\ncontexts:\n- name: dev\n  context: {cluster: c, user: u}\ncurrent-context: dev\nusers:\n- name: u\n  user: {token: not-a-real-token}\n",
        )
}

/// One step of `k8s` with `args`, run by the CLI in the project: the step's result or error.
fn step(p: &Project, args: Value) -> Value {
    let rb = json!({"steps": [{"id": "k", "tool": "k8s", "args": args}]});
    std::fs::write(p.path().join("runbooks/k.json"), rb.to_string()).expect("runbook");
    let out = p
        .infra()
        .args(["run", "k", "--json"])
        .output()
        .expect("run");
    crate::stdout_json(&out)["steps"][0].clone()
}

fn kubectl_here() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_kustomize_overlay_and_a_manifest_directory_render_with_their_images_checked() {
    assert!(
        kubectl_here(),
        "kubectl is needed (.ci/run installs kubernetes-client)"
    );
    let p = project();
    std::fs::create_dir_all(p.path().join("runbooks")).expect("dir");
    let s = step(
        &p,
        json!({"action": "render", "path": "deploy/overlays/dev"}),
    );
    let r = &s["result"];
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(r["kind"], "kustomize", "{r}");
    assert_eq!(r["by_kind"], json!({"Deployment": 1}));
    assert_eq!(r["namespaces"], json!(["dev"]));
    assert_eq!(r["images"], json!(["busybox", "ghcr.io/acme/web:1.2"]));
    assert_eq!(r["sha256"].as_str().map(str::len), Some(64));

    // the same overlay under a policy: every violation located, the call fails
    let s = step(
        &p,
        json!({"action": "render", "path": "deploy/overlays/dev",
               "policy": {"disallow_latest": true, "allowed_registries": ["ghcr.io"]}}),
    );
    assert_eq!(s["error"]["kind"], "check_failed", "{s}");
    let v = s["result"]["violations"]
        .as_array()
        .expect("violations")
        .clone();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v.iter()
            .all(|x| x["object"] == "Deployment/dev/web" && x["container"] == "init"),
        "{v:?}"
    );

    // a plain directory: its files in order, each violation names its file
    let s = step(
        &p,
        json!({"action": "render", "path": "deploy/plain", "policy": {"require_digest_pinning": true}}),
    );
    let r = &s["result"];
    assert_eq!(r["kind"], "plain", "{s}");
    assert_eq!(
        r["by_kind"],
        json!({"CronJob": 1, "Deployment": 1, "Service": 1})
    );
    let v = r["violations"].as_array().expect("violations");
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|x| x["file"] == "b.yml"), "{v:?}");

    // outside the project: refused before kubectl runs
    let outside = tempfile::tempdir().expect("tmp");
    let s = step(
        &p,
        json!({"action": "render", "path": outside.path().display().to_string()}),
    );
    assert_eq!(s["error"]["kind"], "refused", "{s}");
}

#[test]
fn cluster_calls_name_their_kubeconfig_and_pass_a_checked_argv() {
    assert!(kubectl_here(), "kubectl is needed");
    let p = project().targets(&json!({"dev": {"kube": {"kubeconfig": "kubeconfig", "context": "dev", "namespace": "web"}}}));
    std::fs::create_dir_all(p.path().join("runbooks")).expect("dir");
    // no kubeconfig named: refused, never the host's
    let s = step(&p, json!({"action": "get", "resource": "pods"}));
    assert_eq!(s["error"]["kind"], "invalid_config", "{s}");
    assert!(
        s["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("never uses the host's ~/.kube/config")),
        "{s}"
    );
    // a value that would be an option is refused before anything runs
    let s = step(
        &p,
        json!({"action": "get", "resource": "pods", "name": "--kubeconfig=/etc/passwd", "target": "dev"}),
    );
    assert_eq!(s["error"]["kind"], "invalid_args", "{s}");
    // the argv each action passes, as the real kubectl ran it (and failed to reach the closed port)
    for (args, argv) in [
        (
            json!({"action": "rollback", "resource": "deployment/web", "to_revision": 3, "target": "dev"}),
            json!([
                "kubectl",
                "--context=dev",
                "--namespace=web",
                "rollout",
                "undo",
                "deployment/web",
                "--to-revision=3"
            ]),
        ),
        (
            json!({"action": "apply", "path": "deploy/overlays/dev", "dry_run": true, "target": "dev"}),
            json!([
                "kubectl",
                "--context=dev",
                "--namespace=web",
                "apply",
                "--server-side",
                "--dry-run=server",
                "-k"
            ]),
        ),
        (
            json!({"action": "logs", "resource": "deployment/web", "container": "app", "tail": 50, "target": "dev"}),
            json!([
                "kubectl",
                "--context=dev",
                "--namespace=web",
                "logs",
                "deployment/web",
                "--container=app",
                "--tail=50"
            ]),
        ),
    ] {
        let s = step(&p, args.clone());
        assert_eq!(s["status"], "failed", "{s}");
        let ran = s["result"]["argv"].as_array().expect("argv").clone();
        let want = argv.as_array().expect("argv");
        assert_eq!(&ran[..want.len()], &want[..], "{args}");
        assert!(
            s["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("127.0.0.1:1")),
            "{s}"
        );
    }
}
