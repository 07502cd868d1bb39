//! A stand-in Kubernetes API server on the HTTP test server, enough for the real `kubectl` to run
//! `version`, `auth can-i`, and `get` and `annotate` of Flux objects: discovery (`/api`, `/apis` and
//! each group version, the legacy way), a store of objects by path, JSON merge patches, and
//! `SelfSubjectAccessReview` (every verb allowed except `delete`).
//!
//! Flux is simulated over a real bare repository: a `Kustomization` whose
//! `reconcile.fluxcd.io/requestedAt` annotation changes is reconciled after a set number of reads
//! (`status.lastHandledReconcileAt` set to the request, `lastAppliedRevision` to `main@sha1:<tip>`
//! of the repository at that moment, `Ready` condition `True`, or `False` when the tree holds a
//! marker text).
//!
//! [`Kube::kubeconfig`] writes a kubeconfig naming the server (plain HTTP on 127.0.0.1, over which
//! kubectl sends no credentials, so the stand-in asks for none).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::forge::{branch_tip, holds};
use super::http::{HttpServer, Recorded, Reply, lock};

const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// (group, version, plural, kind, singular, namespaced)
const RESOURCES: &[(&str, &str, &str, &str, &str, bool)] = &[
    ("", "v1", "namespaces", "Namespace", "namespace", false),
    ("", "v1", "pods", "Pod", "pod", true),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        "deployment",
        true,
    ),
    (
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "kustomizations",
        "Kustomization",
        "kustomization",
        true,
    ),
    (
        "source.toolkit.fluxcd.io",
        "v1",
        "gitrepositories",
        "GitRepository",
        "gitrepository",
        true,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        "",
        false,
    ),
];

struct State {
    bare: PathBuf,
    not_ready_when: Option<String>,
    reads_to_reconcile: u32,
    /// Objects by API path (`/apis/<group>/<version>/namespaces/<ns>/<plural>/<name>`).
    objects: HashMap<String, Value>,
    /// Kustomizations being reconciled: path → (request, reads left).
    reconciling: HashMap<String, (String, u32)>,
}

/// A Kubernetes API stand-in (see the module's header).
pub struct Kube {
    pub server: HttpServer,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn status(code: u16, reason: &str, message: &str) -> Reply {
    Reply::new(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// RFC 7386: `patch` merged into `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn api_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

impl Kube {
    /// The server, with a Flux `Kustomization` `name` and its `GitRepository` of the same name in
    /// `flux-system`, reconciled from `bare`'s `main`.
    pub fn start(bare: &Path, name: &str, not_ready_when: Option<&str>) -> Kube {
        let mut objects = HashMap::new();
        let rev = branch_tip(bare, "main").unwrap_or_default();
        for (group, plural, kind) in [
            (
                "kustomize.toolkit.fluxcd.io",
                "kustomizations",
                "Kustomization",
            ),
            (
                "source.toolkit.fluxcd.io",
                "gitrepositories",
                "GitRepository",
            ),
        ] {
            objects.insert(
                format!("/apis/{group}/v1/namespaces/flux-system/{plural}/{name}"),
                json!({
                    "apiVersion": format!("{group}/v1"), "kind": kind,
                    "metadata": {"name": name, "namespace": "flux-system", "annotations": {}},
                    "status": {
                        "lastAppliedRevision": format!("main@sha1:{rev}"),
                        "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded"}],
                    },
                }),
            );
        }
        let state = Arc::new(Mutex::new(State {
            bare: bare.to_owned(),
            not_ready_when: not_ready_when.map(str::to_owned),
            reads_to_reconcile: 2,
            objects,
            reconciling: HashMap::new(),
        }));
        let server = HttpServer::with({
            let state = Arc::clone(&state);
            move |req| Some(serve(&mut lock(&state), req))
        });
        Kube { server, state }
    }

    /// A kubeconfig for this server at `path` (context `standin`, namespace `default`).
    pub fn kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster: {{server: \"{}\"}}\ncontexts:\n- name: standin\n  context: {{cluster: standin, user: bot, namespace: default}}\ncurrent-context: standin\nusers:\n- name: bot\n  user: {{}}\n",
            self.server.url("").trim_end_matches('/')
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// The object at an API path.
    pub fn object(&self, path: &str) -> Option<Value> {
        lock(&self.state).objects.get(path).cloned()
    }
}

fn serve(s: &mut State, req: &Recorded) -> Reply {
    let path = req.path.split('?').next().unwrap_or_default().to_owned();
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["version"]) => Reply::new(
            200,
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-standin", "platform": "linux/amd64"}),
        ),
        ("GET", ["api"]) => Reply::new(
            200,
            json!({"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        ("GET", ["apis"]) => {
            let mut groups: Vec<&str> = RESOURCES
                .iter()
                .map(|r| r.0)
                .filter(|g| !g.is_empty())
                .collect();
            groups.dedup();
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|g| {
                    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            Reply::new(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ("GET", ["api", version]) | ("GET", ["apis", _, version])
            if RESOURCES.iter().any(|r| api_path(r.0, r.1) == path) =>
        {
            let list: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| api_path(r.0, r.1) == path)
                .map(|r| {
                    json!({"name": r.2, "singularName": r.4, "namespaced": r.5, "kind": r.3,
                           "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
                })
                .collect();
            let gv = if seg.len() == 2 {
                (*version).to_owned()
            } else {
                format!("{}/{version}", seg[1])
            };
            Reply::new(
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
            )
        }
        (
            "POST",
            [
                "apis",
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
            ],
        ) => {
            // kubectl sends the review as protobuf: a `delete` anywhere in it is the verb
            let delete = req.body.windows(6).any(|w| w == b"delete");
            Reply::new(
                201,
                json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                       "status": {"allowed": !delete}}),
            )
        }
        ("GET", _) => {
            reconcile_step(s, &path);
            match s.objects.get(&path) {
                Some(o) => Reply::new(200, o.clone()),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} not found", seg.last().unwrap_or(&"")),
                ),
            }
        }
        ("PATCH", _) => {
            let patch: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let Some(obj) = s.objects.get_mut(&path) else {
                return status(404, "NotFound", "not found");
            };
            let before = obj["metadata"]["annotations"][REQUESTED_AT].clone();
            merge_patch(obj, &patch);
            let after = obj["metadata"]["annotations"][REQUESTED_AT].clone();
            let reply = Reply::new(200, obj.clone());
            if after != before && obj["kind"] == "Kustomization" {
                let reads = s.reads_to_reconcile;
                s.reconciling.insert(
                    path.clone(),
                    (after.as_str().unwrap_or_default().to_owned(), reads),
                );
            }
            reply
        }
        _ => status(405, "MethodNotAllowed", "the stand-in does not do that"),
    }
}

/// One read of a Kustomization being reconciled: after the set number, Flux has handled it.
fn reconcile_step(s: &mut State, path: &str) {
    let Some((request, left)) = s.reconciling.remove(path) else {
        return;
    };
    if left > 0 {
        s.reconciling.insert(path.to_owned(), (request, left - 1));
        if let Some(o) = s.objects.get_mut(path) {
            o["status"]["conditions"] =
                json!([{"type": "Ready", "status": "Unknown", "reason": "Progressing"}]);
        }
        return;
    }
    let rev = branch_tip(&s.bare, "main").unwrap_or_default();
    let ready = !s
        .not_ready_when
        .as_deref()
        .is_some_and(|t| holds(&s.bare, &rev, t));
    if let Some(o) = s.objects.get_mut(path) {
        o["status"]["lastHandledReconcileAt"] = request.into();
        o["status"]["lastAppliedRevision"] = format!("main@sha1:{rev}").into();
        o["status"]["conditions"] = json!([{
            "type": "Ready",
            "status": if ready { "True" } else { "False" },
            "reason": if ready { "ReconciliationSucceeded" } else { "HealthCheckFailed" },
        }]);
    }
}
