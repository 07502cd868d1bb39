//! Stand-ins for the services a GitOps release talks to, each an [`HttpServer`] with a handler, all
//! backed by one real bare repository:
//!
//! - [`Forge`]: GitHub's REST shapes (`POST /repos/{owner}/{repo}/pulls`, `GET …/pulls/{n}`,
//!   `GET …/commits/{sha}/check-runs`, `PUT …/pulls/{n}/merge`) and GitLab's (`POST
//!   /api/v4/projects/{id}/merge_requests`, `GET …/merge_requests/{iid}` with its `head_pipeline`,
//!   `PUT …/merge_requests/{iid}/merge`). A pull request names branches of the bare repository; its
//!   CI answers pending for a set number of polls, then its conclusion; a merge writes a real commit
//!   (merge or squash) onto the base branch with `git commit-tree` and `git update-ref`, refused
//!   (409) when the head moved or (405) when the checks have not passed.
//! - [`Argo`]: Argo CD's `POST /api/v1/applications/{app}/sync` and `GET /api/v1/applications/{app}`.
//!   A sync deploys the tracked branch's commit as it is in the bare repository at that moment; the
//!   application reads `Progressing` for a set number of polls, then `Healthy`, or `Degraded` when
//!   the deployed tree holds a marker text.
//! - [`Prometheus`]: `GET /api/v1/query`, a vector of one sample: a high error rate while the
//!   deployed commit holds a marker text, a low one otherwise.
//!
//! Every one asks for `Authorization: Bearer <token>` and answers 401 without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::http::{HttpServer, Recorded, Reply, lock};

/// `git` in the bare repository, with a fixed identity and no user or system configuration: its
/// trimmed stdout, or `None` when it fails.
fn git(bare: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Forge")
        .env("GIT_AUTHOR_EMAIL", "forge@example.com")
        .env("GIT_COMMITTER_NAME", "Forge")
        .env("GIT_COMMITTER_EMAIL", "forge@example.com")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(super) fn branch_tip(bare: &Path, branch: &str) -> Option<String> {
    git(
        bare,
        &["rev-parse", "--verify", &format!("refs/heads/{branch}")],
    )
}

/// Whether the tree of `rev` holds `text` in any file.
pub(super) fn holds(bare: &Path, rev: &str, text: &str) -> bool {
    git(bare, &["grep", "-q", "-F", text, rev]).is_some()
}

fn authorized(req: &Recorded, token: &str) -> bool {
    req.header("authorization") == Some(&format!("Bearer {token}"))
}

fn unauthorized() -> Reply {
    Reply::new(401, json!({"message": "Bad credentials"}))
}

fn body(req: &Recorded) -> Value {
    serde_json::from_slice(&req.body).unwrap_or(Value::Null)
}

/// How the CI of every pull request goes.
#[derive(Debug, Clone)]
pub struct Ci {
    /// Polls answered "still running" before the result.
    pub pending_polls: u32,
    /// `success` or `failure`.
    pub conclusion: &'static str,
}

#[derive(Debug, Clone)]
struct Pr {
    number: u64,
    title: String,
    head: String,
    base: String,
    sha: String,
    polls: u32,
    merged: Option<String>,
    comments: Vec<String>,
}

impl Pr {
    fn ci(&self, ci: &Ci) -> Option<&'static str> {
        (self.polls > ci.pending_polls).then_some(ci.conclusion)
    }

    fn github(&self, url: &str) -> Value {
        json!({
            "number": self.number, "title": self.title,
            "state": if self.merged.is_some() { "closed" } else { "open" },
            "merged": self.merged.is_some(), "merge_commit_sha": self.merged,
            "html_url": format!("{url}/pull/{}", self.number),
            "head": {"ref": self.head, "sha": self.sha}, "base": {"ref": self.base},
        })
    }

    fn gitlab(&self, url: &str, ci: &Ci) -> Value {
        let status = match self.ci(ci) {
            None => "running",
            Some("success") => "success",
            Some(_) => "failed",
        };
        json!({
            "iid": self.number, "title": self.title,
            "state": if self.merged.is_some() { "merged" } else { "opened" },
            "source_branch": self.head, "target_branch": self.base, "sha": self.sha,
            "merge_commit_sha": self.merged,
            "web_url": format!("{url}/-/merge_requests/{}", self.number),
            "head_pipeline": {"id": self.number * 100, "status": status},
        })
    }
}

struct ForgeState {
    bare: PathBuf,
    token: String,
    ci: Ci,
    prs: Vec<Pr>,
    url: String,
}

impl ForgeState {
    fn open(&mut self, title: &str, head: &str, base: &str) -> Result<&Pr, Reply> {
        let (Some(sha), Some(_)) = (branch_tip(&self.bare, head), branch_tip(&self.bare, base))
        else {
            return Err(Reply::new(
                422,
                json!({"message": "Validation Failed", "errors": [{"field": "head", "code": "invalid"}]}),
            ));
        };
        let number = self.prs.len() as u64 + 1;
        self.prs.push(Pr {
            number,
            title: title.to_owned(),
            head: head.to_owned(),
            base: base.to_owned(),
            sha,
            polls: 0,
            merged: None,
            comments: Vec::new(),
        });
        Ok(&self.prs[number as usize - 1])
    }

    fn pr(&mut self, n: &str) -> Result<&mut Pr, Reply> {
        n.parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.prs.get_mut(i))
            .ok_or_else(|| Reply::new(404, json!({"message": "Not Found"})))
    }

    /// Merges pull request `n` whose head must still be `sha`: a merge commit, or one squashed
    /// commit, on its base; the new commit's id.
    fn merge(&mut self, n: &str, sha: Option<&str>, squash: bool) -> Result<String, Reply> {
        let ci = self.ci.clone();
        let bare = self.bare.clone();
        let pr = self.pr(n)?;
        if pr.merged.is_some() {
            return Err(Reply::new(
                405,
                json!({"message": "Pull Request is not mergeable: already merged"}),
            ));
        }
        if pr.ci(&ci) != Some("success") {
            return Err(Reply::new(
                405,
                json!({"message": "Required status checks have not passed"}),
            ));
        }
        let head = branch_tip(&bare, &pr.head);
        if head.as_deref() != Some(pr.sha.as_str()) || sha.is_some_and(|s| s != pr.sha) {
            return Err(Reply::new(
                409,
                json!({"message": "Head branch was modified. Review and try the merge again."}),
            ));
        }
        let base = branch_tip(&bare, &pr.base).unwrap_or_default();
        if git(&bare, &["merge-base", "--is-ancestor", &base, &pr.sha]).is_none() {
            return Err(Reply::new(
                405,
                json!({"message": "Pull Request is not mergeable: the base moved"}),
            ));
        }
        let tree = format!("{}^{{tree}}", pr.sha);
        let message = format!("{} (#{})", pr.title, pr.number);
        let new = if squash {
            git(&bare, &["commit-tree", &tree, "-p", &base, "-m", &message])
        } else {
            git(
                &bare,
                &[
                    "commit-tree",
                    &tree,
                    "-p",
                    &base,
                    "-p",
                    &pr.sha,
                    "-m",
                    &message,
                ],
            )
        }
        .ok_or_else(|| Reply::new(500, json!({"message": "commit-tree failed"})))?;
        git(
            &bare,
            &[
                "update-ref",
                &format!("refs/heads/{}", pr.base),
                &new,
                &base,
            ],
        )
        .ok_or_else(|| Reply::new(500, json!({"message": "update-ref failed"})))?;
        pr.merged = Some(new.clone());
        Ok(new)
    }
}

/// A forge with GitHub's and GitLab's REST shapes over a bare repository.
pub struct Forge {
    pub server: HttpServer,
    state: Arc<Mutex<ForgeState>>,
}

impl Forge {
    pub fn start(bare: &Path, token: &str, ci: Ci) -> Forge {
        let state = Arc::new(Mutex::new(ForgeState {
            bare: bare.to_owned(),
            token: token.to_owned(),
            ci,
            prs: Vec::new(),
            url: String::new(),
        }));
        let server = HttpServer::with({
            let state = Arc::clone(&state);
            move |req| Some(forge(&mut lock(&state), req))
        });
        lock(&state).url = server.url("").trim_end_matches('/').to_owned();
        Forge { server, state }
    }

    /// Every pull request as GitHub shows it, with its `comments` (their texts).
    pub fn prs(&self) -> Vec<Value> {
        let s = lock(&self.state);
        s.prs
            .iter()
            .map(|p| {
                let mut v = p.github(&s.url);
                v["comments"] = json!(p.comments);
                v
            })
            .collect()
    }
}

fn forge(s: &mut ForgeState, req: &Recorded) -> Reply {
    if !authorized(req, &s.token) {
        return unauthorized();
    }
    let path = req.path.split('?').next().unwrap_or_default().to_owned();
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let b = body(req);
    let text = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
    let url = s.url.clone();
    let ci = s.ci.clone();
    let answer = match (req.method.as_str(), seg.as_slice()) {
        // GitHub
        ("POST", ["repos", _, _, "pulls"]) => s
            .open(&text("title"), &text("head"), &text("base"))
            .map(|pr| Reply::new(201, pr.github(&url))),
        ("GET", ["repos", _, _, "pulls", n]) => s.pr(n).map(|pr| Reply::new(200, pr.github(&url))),
        ("GET", ["repos", _, _, "commits", sha, "check-runs"]) => {
            match s.prs.iter_mut().rev().find(|p| p.sha == *sha) {
                Some(pr) => {
                    pr.polls += 1;
                    let run = match pr.ci(&ci) {
                        None => json!({"name": "ci", "status": "in_progress", "conclusion": null}),
                        Some(c) => json!({"name": "ci", "status": "completed", "conclusion": c}),
                    };
                    Ok(Reply::new(
                        200,
                        json!({"total_count": 1, "check_runs": [run]}),
                    ))
                }
                None => Ok(Reply::new(200, json!({"total_count": 0, "check_runs": []}))),
            }
        }
        ("POST", ["repos", _, _, "issues", n, "comments"])
        | ("POST", ["api", "v4", "projects", _, "merge_requests", n, "notes"]) => {
            let text = text("body");
            s.pr(n).map(|pr| {
                pr.comments.push(text.clone());
                Reply::new(201, json!({"id": pr.comments.len(), "body": text}))
            })
        }
        ("PUT", ["repos", _, _, "pulls", n, "merge"]) => s
            .merge(n, b["sha"].as_str(), b["merge_method"] == "squash")
            .map(|sha| {
                Reply::new(
                    200,
                    json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}),
                )
            }),
        // GitLab
        ("POST", ["api", "v4", "projects", _, "merge_requests"]) => s
            .open(
                &text("title"),
                &text("source_branch"),
                &text("target_branch"),
            )
            .map(|pr| Reply::new(201, pr.gitlab(&url, &ci))),
        ("GET", ["api", "v4", "projects", _, "merge_requests", n]) => s.pr(n).map(|pr| {
            pr.polls += 1;
            Reply::new(200, pr.gitlab(&url, &ci))
        }),
        ("PUT", ["api", "v4", "projects", _, "merge_requests", n, "merge"]) => {
            let squash = b["squash"] == true;
            s.merge(n, b["sha"].as_str(), squash).and_then(|sha| {
                let mut v = s.pr(n)?.gitlab(&url, &ci);
                v["merge_commit_sha"] = if squash { Value::Null } else { sha.clone().into() };
                v["squash_commit_sha"] = if squash { sha.into() } else { Value::Null };
                Ok(Reply::new(200, v))
            })
        }
        _ => Err(Reply::new(404, json!({"message": "Not Found"}))),
    };
    answer.unwrap_or_else(|r| r)
}

struct ArgoState {
    bare: PathBuf,
    token: String,
    app: String,
    branch: String,
    progressing_polls: u32,
    degraded_when: Option<String>,
    deployed: Option<String>,
    /// The revision of the sync in progress and the polls it has left.
    syncing: Option<(String, u32)>,
    syncs: Vec<String>,
}

impl ArgoState {
    fn app(&self) -> Value {
        let tip = branch_tip(&self.bare, &self.branch);
        let health = match (&self.syncing, &self.deployed) {
            (Some(_), _) => "Progressing",
            (None, Some(rev))
                if self
                    .degraded_when
                    .as_deref()
                    .is_some_and(|t| holds(&self.bare, rev, t)) =>
            {
                "Degraded"
            }
            (None, Some(_)) => "Healthy",
            (None, None) => "Missing",
        };
        let synced = self.syncing.is_none() && self.deployed.is_some() && self.deployed == tip;
        json!({
            "metadata": {"name": self.app, "namespace": "argocd"},
            "spec": {"source": {"targetRevision": self.branch}},
            "status": {
                "sync": {"status": if synced { "Synced" } else { "OutOfSync" }, "revision": self.deployed},
                "health": {"status": health},
                "operationState": {
                    "phase": if self.syncing.is_some() { "Running" } else { "Succeeded" },
                    "syncResult": {"revision": self.deployed},
                },
            },
        })
    }
}

/// Argo CD's application API over the tracked branch of a bare repository.
pub struct Argo {
    pub server: HttpServer,
    state: Arc<Mutex<ArgoState>>,
}

impl Argo {
    /// Application `app` tracks `branch`; it is deployed at the branch's tip as it is now.
    pub fn start(
        bare: &Path,
        token: &str,
        app: &str,
        branch: &str,
        degraded_when: Option<&str>,
    ) -> Argo {
        let state = Arc::new(Mutex::new(ArgoState {
            bare: bare.to_owned(),
            token: token.to_owned(),
            app: app.to_owned(),
            branch: branch.to_owned(),
            progressing_polls: 2,
            degraded_when: degraded_when.map(str::to_owned),
            deployed: branch_tip(bare, branch),
            syncing: None,
            syncs: Vec::new(),
        }));
        let server = HttpServer::with({
            let state = Arc::clone(&state);
            move |req| Some(argo(&mut lock(&state), req))
        });
        Argo { server, state }
    }

    /// The revision deployed now.
    pub fn deployed(&self) -> Option<String> {
        lock(&self.state).deployed.clone()
    }

    /// The revisions synced, in order.
    pub fn syncs(&self) -> Vec<String> {
        lock(&self.state).syncs.clone()
    }
}

fn argo(s: &mut ArgoState, req: &Recorded) -> Reply {
    if !authorized(req, &s.token) {
        return unauthorized();
    }
    let path = req.path.split('?').next().unwrap_or_default().to_owned();
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), seg.as_slice()) {
        (_, ["api", "v1", "applications", app, ..]) if *app != s.app => Reply::new(
            404,
            json!({"message": format!("applications.argoproj.io \"{app}\" not found")}),
        ),
        ("POST", ["api", "v1", "applications", _, "sync"]) => {
            let rev = body(req)["revision"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .or_else(|| branch_tip(&s.bare, &s.branch));
            match rev {
                Some(rev) => {
                    s.syncs.push(rev.clone());
                    s.syncing = Some((rev, s.progressing_polls));
                    Reply::new(200, s.app())
                }
                None => Reply::new(400, json!({"message": "no revision to sync"})),
            }
        }
        ("GET", ["api", "v1", "applications", _]) => {
            if let Some((rev, left)) = s.syncing.take() {
                if left == 0 {
                    s.deployed = Some(rev);
                } else {
                    s.syncing = Some((rev, left - 1));
                }
            }
            Reply::new(200, s.app())
        }
        _ => Reply::new(404, json!({"message": "Not Found"})),
    }
}

/// Prometheus's instant query: an error rate of 0.25 while the deployed commit holds `errors_when`,
/// else 0.001.
pub struct Prometheus {
    pub server: HttpServer,
}

impl Prometheus {
    pub fn start(argo: &Argo, token: &str, errors_when: &str) -> Prometheus {
        let state = Arc::clone(&argo.state);
        let token = token.to_owned();
        let marker = errors_when.to_owned();
        let server = HttpServer::with(move |req| {
            if !authorized(req, &token) {
                return Some(unauthorized());
            }
            if !req.path.starts_with("/api/v1/query?") {
                return Some(Reply::new(
                    404,
                    json!({"status": "error", "error": "not found"}),
                ));
            }
            let s = lock(&state);
            let bad = s
                .deployed
                .as_deref()
                .is_some_and(|r| holds(&s.bare, r, &marker));
            let value = if bad { "0.25" } else { "0.001" };
            Some(Reply::new(
                200,
                json!({"status": "success", "data": {"resultType": "vector",
                    "result": [{"metric": {"job": "web"}, "value": [1_700_000_000.0, value]}]}}),
            ))
        });
        Prometheus { server }
    }
}

macro_rules! debug_by_server {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("server", &self.server)
                    .finish_non_exhaustive()
            }
        }
    )*};
}
debug_by_server!(Forge, Argo, Prometheus);
