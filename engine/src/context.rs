//! Project context: what kind of project a directory is, as tags with the files that show each one.
//!
//! `detect(dir, limits)` finds the root (the git work tree around `dir`, else `dir`) and walks it with an
//! explicit stack, bounded in depth and entries (hidden directories but `.github`, `target`, `vendor`
//! and `node_modules` skipped), reading only the first 64 KiB of YAML files for their top-level
//! `apiVersion`/`kind` lines (no YAML parsing here). The result is `{root, tags, files: {tag: [paths]}}`
//! and says when the walk stopped early (`truncated`). `get` keeps one result per root and reuses it
//! while every directory walked and every file read has the same modification time and size, so a
//! change in the repository is never answered from the cache; `refresh` walks again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

/// Every tag `detect` can give.
pub const TAGS: &[&str] = &[
    "git",
    "node",
    "python",
    "go",
    "rust",
    "java",
    "dotnet",
    "docker",
    "k8s",
    "helm",
    "kustomize",
    "argocd",
    "flux",
    "terraform",
    "ansible",
    "ci",
    "gitops",
];

/// How far a walk goes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Directory levels below the root.
    pub depth: usize,
    /// Directory entries looked at, in all.
    pub entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: 4,
            entries: 20_000,
        }
    }
}

/// Evidence paths kept per tag.
const MAX_EVIDENCE: usize = 20;
/// Bytes of a YAML file read for its `apiVersion`/`kind` lines.
const MANIFEST_PREFIX: usize = 64 * 1024;

/// What a directory is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Context {
    /// The git work tree's root around the directory asked about, else that directory.
    pub root: PathBuf,
    /// Tags found, sorted.
    pub tags: Vec<String>,
    /// For each tag, the paths (relative to `root`) that show it; at most 20 each.
    pub files: BTreeMap<String, Vec<String>>,
    /// Directory entries looked at.
    pub scanned: usize,
    /// The walk stopped at the depth or entry limit; the tags may be incomplete.
    pub truncated: bool,
    /// Why the walk stopped early, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Answered from the cache (nothing under the root changed since the last walk).
    pub cached: bool,
}

impl Context {
    /// The context as JSON (what `when` matchers and `map` sources read as `context.*`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Whether the context has tag `t`.
    pub fn has(&self, t: &str) -> bool {
        self.tags.iter().any(|x| x == t)
    }
}

/// Why there is no context.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ContextError {
    pub message: String,
    pub hint: String,
}

/// A walked directory or a read file, as it was: the cache is good while all of them still are.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    path: PathBuf,
    mtime: Option<SystemTime>,
    len: u64,
}

fn seen(path: &Path) -> Seen {
    let m = std::fs::metadata(path).ok();
    Seen {
        path: path.to_path_buf(),
        mtime: m.as_ref().and_then(|m| m.modified().ok()),
        len: m.map_or(0, |m| m.len()),
    }
}

type Cache = HashMap<PathBuf, (Context, Vec<Seen>)>;

fn cache() -> &'static Mutex<Cache> {
    static C: OnceLock<Mutex<Cache>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The root `dir` belongs to: the git work tree around it, else `dir` itself.
pub fn root_of(dir: &Path) -> Result<PathBuf, ContextError> {
    if !dir.is_dir() {
        return Err(ContextError {
            message: format!("`{}` is not a directory", dir.display()),
            hint: "give a directory of the project (`repo_root`), or leave it out for the working directory".into(),
        });
    }
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Ok(git2::Repository::discover(&dir)
        .ok()
        .and_then(|r| r.workdir().map(Path::to_path_buf))
        .map(|p| p.canonicalize().unwrap_or(p))
        .unwrap_or(dir))
}

/// The context of `dir`, from the cache when nothing under its root changed since it was walked.
pub fn get(dir: &Path, limits: Limits) -> Result<Context, ContextError> {
    let root = root_of(dir)?;
    {
        let c = cache().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((ctx, marks)) = c.get(&root)
            && marks.iter().all(|m| seen(&m.path) == *m)
        {
            let mut ctx = ctx.clone();
            ctx.cached = true;
            return Ok(ctx);
        }
    }
    refresh(&root, limits)
}

/// The context of `dir`, walked afresh (and cached).
pub fn refresh(dir: &Path, limits: Limits) -> Result<Context, ContextError> {
    let root = root_of(dir)?;
    let (ctx, marks) = walk(&root, limits);
    let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if c.len() > 64 {
        c.clear();
    }
    c.insert(root, (ctx.clone(), marks));
    Ok(ctx)
}

/// The walk itself: tags and evidence under `root`.
fn walk(root: &Path, limits: Limits) -> (Context, Vec<Seen>) {
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut marks = Vec::new();
    let mut add = |tag: &str, rel: &str| {
        let v = files.entry(tag.to_owned()).or_default();
        if v.len() < MAX_EVIDENCE && !v.iter().any(|x| x == rel) {
            v.push(rel.to_owned());
        }
    };
    if root.join(".git").exists() {
        add("git", ".git");
    }
    let mut scanned = 0usize;
    let mut stopped = None;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    'walk: while let Some((dir, depth)) = stack.pop() {
        marks.push(seen(&dir));
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            if scanned >= limits.entries {
                stopped = Some(format!(
                    "stopped after {} entries; give a narrower `repo_root` for a full answer",
                    limits.entries
                ));
                break 'walk;
            }
            scanned += 1;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                match name.as_str() {
                    "flux-system" => add("flux", &rel),
                    "playbooks" | "roles" if depth == 0 => add("ansible", &rel),
                    ".github" => {
                        if let Ok(w) = std::fs::read_dir(path.join("workflows")) {
                            marks.push(seen(&path.join("workflows")));
                            for f in w.flatten() {
                                let n = f.file_name().to_string_lossy().into_owned();
                                if n.ends_with(".yml") || n.ends_with(".yaml") {
                                    add("ci", &format!("{rel}/workflows/{n}"));
                                }
                            }
                        }
                        continue;
                    }
                    _ => {}
                }
                if name.starts_with('.')
                    || matches!(name.as_str(), "target" | "node_modules" | "vendor")
                {
                    continue;
                }
                if depth < limits.depth {
                    stack.push((path, depth + 1));
                } else if stopped.is_none() {
                    stopped = Some(format!(
                        "did not look below {} levels (`{rel}`)",
                        limits.depth
                    ));
                }
                continue;
            }
            for tag in by_name(&name) {
                add(tag, &rel);
            }
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                marks.push(seen(&path));
                for tag in manifest_tags(&path) {
                    add(tag, &rel);
                }
            }
        }
    }
    if files.contains_key("argocd") || files.contains_key("flux") {
        let ev: Vec<String> = ["argocd", "flux"]
            .iter()
            .filter_map(|t| files.get(*t))
            .flatten()
            .take(MAX_EVIDENCE)
            .cloned()
            .collect();
        files.insert("gitops".into(), ev);
    }
    let tags = files.keys().cloned().collect();
    (
        Context {
            root: root.to_path_buf(),
            tags,
            files,
            scanned,
            truncated: stopped.is_some(),
            stopped,
            cached: false,
        },
        marks,
    )
}

/// Tags a file shows by its name alone.
fn by_name(name: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    match name {
        "package.json" => out.push("node"),
        "pyproject.toml" | "requirements.txt" | "setup.py" | "setup.cfg" | "Pipfile" => {
            out.push("python");
        }
        "go.mod" => out.push("go"),
        "Cargo.toml" => out.push("rust"),
        "pom.xml" | "build.gradle" | "build.gradle.kts" => out.push("java"),
        "Dockerfile"
        | "docker-compose.yml"
        | "docker-compose.yaml"
        | "compose.yaml"
        | "compose.yml"
        | "Containerfile" => out.push("docker"),
        "kustomization.yaml" | "kustomization.yml" | "Kustomization" => {
            out.extend(["kustomize", "k8s"]);
        }
        "Chart.yaml" => out.push("helm"),
        "gotk-components.yaml" | "gotk-sync.yaml" => out.push("flux"),
        ".gitlab-ci.yml" => out.push("ci"),
        "ansible.cfg" | "galaxy.yml" => out.push("ansible"),
        _ => {}
    }
    if name.ends_with(".csproj") || name.ends_with(".fsproj") || name.ends_with(".sln") {
        out.push("dotnet");
    }
    if name.ends_with(".tf") || name.ends_with(".tf.json") {
        out.push("terraform");
    }
    if name.starts_with("playbook") && (name.ends_with(".yml") || name.ends_with(".yaml")) {
        out.push("ansible");
    }
    out
}

/// Tags a YAML file shows by its documents' top-level `apiVersion` and `kind` lines.
fn manifest_tags(path: &Path) -> Vec<&'static str> {
    use std::io::Read;
    let mut buf = Vec::new();
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if f.take(MANIFEST_PREFIX as u64)
        .read_to_end(&mut buf)
        .is_err()
    {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut out = Vec::new();
    let (mut api, mut kind) = (None::<String>, None::<String>);
    let mut finish = |api: &mut Option<String>, kind: &mut Option<String>| {
        if let (Some(a), Some(k)) = (api.take(), kind.take()) {
            out.push("k8s");
            match (a.as_str(), k.as_str()) {
                (a, "Application" | "ApplicationSet" | "AppProject")
                    if a.starts_with("argoproj.io/") =>
                {
                    out.push("argocd");
                }
                (a, _) if a.contains("toolkit.fluxcd.io/") => out.push("flux"),
                (a, "Kustomization") if a.starts_with("kustomize.config.k8s.io/") => {
                    out.push("kustomize");
                }
                _ => {}
            }
        }
        *api = None;
        *kind = None;
    };
    for line in text.lines() {
        if line.starts_with("---") {
            finish(&mut api, &mut kind);
        } else if let Some(v) = line.strip_prefix("apiVersion:") {
            api = Some(unquote(v));
        } else if let Some(v) = line.strip_prefix("kind:") {
            kind = Some(unquote(v));
        }
    }
    finish(&mut api, &mut kind);
    out
}

fn unquote(v: &str) -> String {
    let v = v.split(" #").next().unwrap_or("").trim();
    v.trim_matches(|c| c == '"' || c == '\'').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn tags_and_evidence() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path();
        write(r, "package.json", "{}");
        write(r, "deploy/base/kustomization.yaml", "resources: [d.yaml]\n");
        write(
            r,
            "deploy/base/d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\n",
        );
        write(
            r,
            "apps/app.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\n",
        );
        write(r, "charts/api/Chart.yaml", "name: api\n");
        write(
            r,
            "clusters/prod/flux-system/gotk-sync.yaml",
            "---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n",
        );
        write(r, ".github/workflows/ci.yml", "on: push\n");
        write(r, "infra/main.tf", "");
        let c = refresh(r, Limits::default()).expect("context");
        for t in [
            "node",
            "kustomize",
            "k8s",
            "argocd",
            "flux",
            "gitops",
            "helm",
            "ci",
            "terraform",
        ] {
            assert!(c.has(t), "{t}: {:?}", c.tags);
        }
        assert!(!c.has("git"));
        assert_eq!(c.files["argocd"], vec!["apps/app.yaml"]);
        assert!(!c.truncated);
    }

    #[test]
    fn cache_sees_a_change() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path();
        write(r, "a.yaml", "x: 1\n");
        let c = get(r, Limits::default()).expect("context");
        assert!(!c.has("k8s"));
        assert!(get(r, Limits::default()).expect("again").cached);
        // same length, new content: the modification time tells
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(r, "a.yaml", "apiVersion: v1\nkind: Pod\n");
        let c = get(r, Limits::default()).expect("changed");
        assert!(c.has("k8s") && !c.cached, "{c:?}");
        write(r, "sub/go.mod", "module x\n");
        assert!(get(r, Limits::default()).expect("new dir").has("go"));
    }

    #[test]
    fn bounded_and_says_so() {
        let d = tempfile::tempdir().expect("tmp");
        for i in 0..50 {
            write(d.path(), &format!("f{i}.txt"), "");
        }
        write(d.path(), "a/b/c/package.json", "{}");
        let c = refresh(
            d.path(),
            Limits {
                depth: 1,
                entries: 20,
            },
        )
        .expect("context");
        assert!(
            c.truncated && c.stopped.is_some() && c.scanned == 20,
            "{c:?}"
        );
        let e = refresh(&d.path().join("f1.txt"), Limits::default()).expect_err("a file");
        assert!(e.message.contains("not a directory"));
    }
}
