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
    // no kubeconfig named and no target with one: refused, never the host's
    let bare = project();
    std::fs::create_dir_all(bare.path().join("runbooks")).expect("dir");
    let s = step(&bare, json!({"action": "get", "resource": "pods"}));
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
    // a kubeconfig of the call's own is one a target gives, with that target's context: any other
    // host file, or another context, is refused before kubectl runs
    std::fs::write(
        p.path().join("other-kubeconfig"),
        "apiVersion: v1\nkind: Config\n",
    )
    .expect("other");
    std::os::unix::fs::symlink(
        p.path().join("kubeconfig"),
        p.path().join("kubeconfig-link"),
    )
    .expect("link");
    std::os::unix::fs::symlink(
        p.path().join("other-kubeconfig"),
        p.path().join("deploy/innocent"),
    )
    .expect("link");
    for (args, why) in [
        (json!({"kubeconfig": "other-kubeconfig"}), "no target's"),
        (json!({"kubeconfig": "deploy/innocent"}), "no target's"),
        (json!({"kubeconfig": "/nonexistent/config"}), "no target's"),
        (
            json!({"kubeconfig": "kubeconfig", "context": "prod"}),
            "with context `prod`",
        ),
        (
            json!({"kubeconfig": "other-kubeconfig", "target": "dev"}),
            "no target's",
        ),
    ] {
        let mut call = json!({"action": "version"});
        for (k, v) in args.as_object().expect("args") {
            call[k] = v.clone();
        }
        let s = step(&p, call);
        assert_eq!(s["error"]["kind"], "refused", "{args}: {s}");
        assert!(
            s["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(why)),
            "{args}: {s}"
        );
        assert!(s["result"]["argv"].is_null(), "kubectl did not run: {s}");
    }
    // with INFRA_UNSAFE_LOCAL=1 any host file is the call's to use
    let open = Project::new();
    std::fs::copy(p.path().join("other-kubeconfig"), open.path().join("kc")).expect("kc");
    std::fs::create_dir_all(open.path().join("runbooks")).expect("dir");
    let open = open.unsafe_local();
    let s = step(&open, json!({"action": "version", "kubeconfig": "kc"}));
    assert_ne!(s["error"]["kind"], "refused", "{s}");

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
            json!({"action": "can_i", "verb": "patch", "resource": "deployments", "target": "dev"}),
            json!([
                "kubectl",
                "--context=dev",
                "--namespace=web",
                "auth",
                "can-i",
                "patch",
                "deployments"
            ]),
        ),
        (
            json!({"action": "version", "target": "dev"}),
            json!([
                "kubectl",
                "--context=dev",
                "--namespace=web",
                "version",
                "-o",
                "json"
            ]),
        ),
        // the target's kubeconfig named by the call (through a link): as the target uses it
        (
            json!({"action": "version", "kubeconfig": "./deploy/../kubeconfig-link"}),
            json!([
                "kubectl",
                "--context=dev",
                "--namespace=web",
                "version",
                "-o",
                "json"
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

#[test]
fn the_built_in_k8s_render_runbook_summarises_an_overlay() {
    assert!(kubectl_here(), "kubectl is needed");
    let p = project();
    let out = p
        .infra()
        .args([
            "run",
            "k8s.render",
            "--json",
            "--input",
            "overlay=deploy/overlays/dev",
        ])
        .output()
        .expect("run");
    let v = crate::stdout_json(&out);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["outputs"]["by_kind"], json!({"Deployment": 1}), "{v}");
    assert_eq!(
        v["outputs"]["images"],
        json!(["busybox", "ghcr.io/acme/web:1.2"])
    );
    // the same with a policy: refused, naming the image
    let out = p
        .infra()
        .args([
            "run",
            "k8s.render",
            "--json",
            "--input",
            "overlay=deploy/overlays/dev",
        ])
        .args(["--input", "require_digest_pinning=true"])
        .output()
        .expect("run");
    let v = crate::stdout_json(&out);
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v.to_string().contains("not pinned by digest"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_originals_k8s_diff_calls_work_as_written() {
    assert!(kubectl_here(), "kubectl is needed");
    // `runbook run k8s.diff` with only an overlay, no opt-in: the project's only kube target is used
    let p = project()
        .targets(&json!({"dev": {"kube": {"kubeconfig": "kubeconfig", "context": "dev"}}}));
    let s = p.mcp().await;
    let r = crate::mcp::call(
        &s,
        "runbook",
        json!({"action": "run", "name": "k8s.diff", "input": {"overlay": "./deploy/overlays/dev"}}),
    )
    .await;
    let b = crate::mcp::body(&r);
    let steps = b["result"]["steps"].as_array().expect("steps").clone();
    assert_eq!(steps[0]["status"], "succeeded", "{b}");
    let text = b.to_string();
    assert!(
        text.contains("127.0.0.1:1"),
        "the target's cluster was asked: {b}"
    );
    crate::mcp::stop(s).await;

    // the seed's `gitops.k8s.diff`, upserted verbatim (it uses `mcp_local`, so it needs the opt-in)
    let p = project().unsafe_local();
    let s = p.mcp().await;
    let seed = json!({
        "description": "Render kustomize overlay and diff against the cluster.",
        "tags": ["gitops", "k8s", "read"],
        "inputs": ["overlay", "kubeconfig"],
        "steps": [
            {"id": "render", "tool": "mcp_local", "args": {"action": "exec", "command": "kubectl",
             "args": ["kustomize", "{{ input.overlay }}"], "env": {"KUBECONFIG": "{{ input.kubeconfig }}"}, "inline": true}},
            {"id": "diff", "tool": "mcp_local", "args": {"action": "exec", "command": "kubectl",
             "args": ["diff", "-f", "-"], "stdin": "{{ steps.render.stdout }}",
             "env": {"KUBECONFIG": "{{ input.kubeconfig }}"}, "inline": true}}
        ]
    });
    let up = crate::mcp::call(
        &s,
        "runbook",
        json!({"action": "upsert", "name": "gitops.k8s.diff", "runbook": seed}),
    )
    .await;
    assert_ne!(up.is_error, Some(true), "{:?}", up.structured_content);
    let kc = p.path().join("kubeconfig").display().to_string();
    let r = crate::mcp::call(
        &s,
        "runbook",
        json!({"action": "run", "name": "gitops.k8s.diff", "input": {"overlay": "./deploy/overlays/dev", "kubeconfig": kc}}),
    )
    .await;
    let b = crate::mcp::body(&r);
    let steps = b["result"]["steps"].as_array().expect("steps").clone();
    assert_eq!(steps[0]["status"], "succeeded", "{b}");
    let ev = crate::mcp::call(
        &s,
        "evidence",
        json!({"action": "get", "run_id": b["run_id"]}),
    )
    .await;
    let ev = crate::mcp::body(&ev).to_string();
    assert!(
        ev.contains("ghcr.io/acme/web:1.2"),
        "the overlay was rendered: {ev}"
    );
    // there is no cluster here: the diff reached kubectl and failed on the closed port
    assert_eq!(steps[1]["status"], "failed", "{b}");
    crate::mcp::stop(s).await;
}

#[test]
fn the_k8s_runbooks_serve_intents_in_a_kustomize_project() {
    let p = project();
    let root = p.path().display().to_string();
    let out = p
        .infra()
        .args(["intent", "explain", "k8s.diff", "--repo-root", &root])
        .args(["-i", "overlay=deploy/overlays/dev", "--json"])
        .output()
        .expect("run");
    let r = crate::stdout_json(&out);
    assert_eq!(r["capability"], "k8s.diff", "{r}");
    assert_eq!(r["steps"][0]["runbook"], "k8s.diff", "{r}");
    assert_eq!(
        r["steps"][0]["inputs"]["overlay"], "deploy/overlays/dev",
        "{r}"
    );
    // a write needs `apply`: explained, not run
    let out = p
        .infra()
        .args(["intent", "explain", "k8s.apply", "--repo-root", &root])
        .args(["-i", "overlay=deploy/overlays/dev", "--json"])
        .output()
        .expect("run");
    let r = crate::stdout_json(&out);
    assert_eq!(r["capability"], "k8s.apply", "{r}");
    assert!(r.to_string().contains("apply"), "{r}");
}
