//! `context`: what the project is. `get`: the git repository (root, branch, clean) around `path` and the
//! project markers under its root (kustomize, helm, k8s, flux, argocd, languages), found by an explicit
//! stack of directories (4 levels, 20,000 entries, hidden directories, `target` and `node_modules`
//! skipped). `targets`: the project's targets as results may show them, never a credential.

use std::path::{Path, PathBuf};

use engine::run::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::mcp::reply::Reply;
use crate::mcp::schema::ToolParams;

/// What `context` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// `get`: where to look (the working directory by default).
    pub path: Option<String>,
}

/// What `context` does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Get,
    Targets,
}

impl ToolParams for Params {
    const TOOL: &'static str = "context";
}

/// Runs one `context` action.
pub fn call(engine: &Engine, p: &Params) -> Reply {
    match p.action {
        Action::Get => project(engine, Path::new(p.path.as_deref().unwrap_or("."))),
        Action::Targets => targets(engine),
    }
}

/// The project's targets as results may show them.
fn targets(engine: &Engine) -> Reply {
    let t = engine::targets::Targets::load(&engine.config().profiles_dir);
    if !t.diagnostics.is_empty() {
        let mut r = Reply::diagnostics(&t.diagnostics, "");
        r.body["error"]["hint"] =
            "fix the targets file (`targets.json` or `targets.yaml` in the profiles directory)"
                .into();
        return r;
    }
    let list = t.public();
    Reply::ok(format!("{} targets", list.len()), json!({"targets": list}))
}

/// What kind of project `path` is in: git, Kubernetes manifests, Flux or Argo CD markers, languages.
fn project(engine: &Engine, path: &Path) -> Reply {
    let repo = engine::git::status(path)
        .ok()
        .map(|s| json!({"root": s["root"], "branch": s["branch"], "clean": s["clean"]}));
    let root = repo
        .as_ref()
        .and_then(|r| r["root"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| path.to_path_buf());
    let mut markers = Vec::new();
    let mut stack = vec![(root.clone(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > 20_000 {
                break;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if p.is_dir() {
                if depth < 4 && !name.starts_with('.') && name != "target" && name != "node_modules"
                {
                    if name == "flux-system" {
                        markers.push("flux");
                    }
                    stack.push((p, depth + 1));
                }
                continue;
            }
            match name.as_str() {
                "kustomization.yaml" | "kustomization.yml" => markers.push("kustomize"),
                "Chart.yaml" => markers.push("helm"),
                "gotk-components.yaml" => markers.push("flux"),
                "Cargo.toml" => markers.push("rust"),
                "package.json" => markers.push("node"),
                "go.mod" => markers.push("go"),
                "pyproject.toml" | "requirements.txt" => markers.push("python"),
                "Dockerfile" => markers.push("docker"),
                _ if name.ends_with(".yaml") && depth < 3 => {
                    if let Ok(text) = std::fs::read_to_string(&p) {
                        if text.contains("kind: Application") && text.contains("argoproj.io") {
                            markers.push("argocd");
                        } else if text.contains("apiVersion:") && text.contains("kind:") {
                            markers.push("k8s");
                        }
                    }
                }
                _ => {}
            }
        }
    }
    markers.sort_unstable();
    markers.dedup();
    Reply::ok(
        format!(
            "{} ({})",
            root.display(),
            if markers.is_empty() {
                "no markers".to_owned()
            } else {
                markers.join(", ")
            }
        ),
        json!({"path": root, "repo": repo, "markers": markers, "profiles_dir": engine.config().profiles_dir, "unsafe_local": engine.config().unsafe_local}),
    )
}
