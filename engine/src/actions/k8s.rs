//! `k8s`: Kubernetes through one known program, `kubectl`, run with a checked argv (never a shell), so
//! it needs no opt-in; any other program is `local`'s.
//!
//! `render` needs no cluster: a kustomize overlay (`kubectl kustomize <path>`), a Helm chart (`helm
//! template`, when `helm` is installed; a clear error naming it when not) or a directory of plain
//! manifests (its `*.yaml`/`*.yml`/`*.json` files, sorted), into an artifact `rendered.yaml` with a
//! summary: objects by kind, namespaces, container images, and the SHA-256 of the rendered bytes. With
//! `policy` (`require_digest_pinning`, `disallow_latest`, `allowed_registries`) every container of the
//! rendered objects is checked and each violation is located (file for plain manifests, object
//! `kind/namespace/name`, container); any violation fails the call (`check_failed`) with all of them.
//! The rendered YAML is split at its `---` lines and each document parsed by `dsl` (the engine parses
//! no YAML itself).
//!
//! The cluster actions need a kubeconfig named explicitly, by the call (`kubeconfig`, `context`) or
//! by a target's `kube` section (a call that names none uses the project's only target with one,
//! when there is exactly one): the host's `~/.kube/config` is never used silently (`KUBECONFIG` is
//! set to the named file for the child, `--context` passed when given). `diff` (exit 1 means
//! differences, not a failure), `apply` (server-side; `dry_run: true` only reads), `rollout_status`
//! (with a deadline), `get` (`-o json`), `describe`, `logs` (bounded `tail`), `images` (the images of
//! the pods), `rollback` (`rollout undo`), `annotate` and `patch`, and the probes `version` (the
//! server's) and `can_i` (`auth can-i <verb> <resource>`: `allowed`). Every value that becomes an argument
//! is checked: none may start with `-` (no option injection), names and kinds match what Kubernetes
//! allows, paths are inside the working directory unless `INFRA_UNSAFE_LOCAL=1`, and a call's own
//! `kubeconfig` must be one a target's `kube` section names (with that target's context, or the one
//! the call names it with) unless `INFRA_UNSAFE_LOCAL=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::{ActionError, ActionSpec, Call, ToolSpec, args_schema, no_modes};
use crate::error::ErrorKind;
use crate::exec::process::{self, Capture, ProcessSpec};
use dsl::Effect;

/// Where a cluster is: a target with a `kube` section, or a kubeconfig and context named by the call.
#[derive(Debug, Default)]
struct Cluster<'a> {
    target: Option<&'a str>,
    kubeconfig: Option<&'a str>,
    context: Option<&'a str>,
    namespace: Option<&'a str>,
}

/// A cluster from a call's fields; an empty string (a runbook input left at its default) is absent.
macro_rules! cluster_of {
    ($a:expr) => {
        Cluster {
            target: $a.target.as_deref().filter(|v| !v.is_empty()),
            kubeconfig: $a.kubeconfig.as_deref().filter(|v| !v.is_empty()),
            context: $a.context.as_deref().filter(|v| !v.is_empty()),
            namespace: $a.namespace.as_deref().filter(|v| !v.is_empty()),
        }
    };
}

/// Checks on the images of rendered containers.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagePolicy {
    /// Every image pinned by `@sha256:` digest.
    pub require_digest_pinning: Option<bool>,
    /// No `:latest` tag, and no image without tag or digest.
    pub disallow_latest: Option<bool>,
    /// Registries images may come from (`docker.io` for an image without one).
    pub allowed_registries: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderArgs {
    /// An overlay directory (kustomization.yaml), a chart (Chart.yaml) or a directory of manifests.
    pub path: String,
    /// `kustomize`, `helm` or `plain` (default: by what `path` holds).
    #[schemars(regex(pattern = "^(kustomize|helm|plain)$"))]
    pub kind: Option<String>,
    /// Helm: the release name (default `release`) and values files.
    pub release: Option<String>,
    pub values: Option<Vec<String>>,
    pub namespace: Option<String>,
    pub policy: Option<ImagePolicy>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestArgs {
    /// An overlay directory (applied with `-k`) or a manifest file or directory (`-f`).
    pub path: String,
    /// `apply` only: a server-side dry run (reads).
    pub dry_run: Option<bool>,
    /// A target with a `kube` section, or a kubeconfig and context named here.
    pub target: Option<String>,
    /// A kubeconfig a target's `kube` section names (any file only with `INFRA_UNSAFE_LOCAL=1`).
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectArgs {
    /// A resource (`deployment/web`, or a kind with `name`).
    pub resource: String,
    pub name: Option<String>,
    /// A label selector (`app=web`).
    pub selector: Option<String>,
    /// `logs`: the container, and how many lines from the end (default 200, at most 5000).
    pub container: Option<String>,
    #[schemars(range(min = 1, max = 5000))]
    pub tail: Option<u32>,
    /// `rollback`: the revision to go back to (default: the previous one).
    pub to_revision: Option<u32>,
    /// `annotate`: key → value; `patch`: a strategic merge patch.
    pub annotations: Option<IndexMap<String, String>>,
    pub patch: Option<Value>,
    /// `rollout_status`: how long to wait (default 120 s).
    pub timeout_ms: Option<u64>,
    /// A target with a `kube` section, or a kubeconfig and context named here.
    pub target: Option<String>,
    /// A kubeconfig a target's `kube` section names (any file only with `INFRA_UNSAFE_LOCAL=1`).
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessArgs {
    /// `can_i`: the verb (`get`, `patch`, `create`, …) and the resource (`deployments`, `pods/log`).
    pub verb: Option<String>,
    pub resource: Option<String>,
    /// A target with a `kube` section, or a kubeconfig and context named here.
    pub target: Option<String>,
    /// A kubeconfig a target's `kube` section names (any file only with `INFRA_UNSAFE_LOCAL=1`).
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesArgs {
    pub selector: Option<String>,
    /// A target with a `kube` section, or a kubeconfig and context named here.
    pub target: Option<String>,
    /// A kubeconfig a target's `kube` section names (any file only with `INFRA_UNSAFE_LOCAL=1`).
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

fn invalid(m: impl Into<String>) -> ActionError {
    ActionError::new(ErrorKind::InvalidArgs, m)
}

/// A value that becomes one argument: not empty, not an option, no control characters.
fn word<'a>(what: &str, v: &'a str) -> Result<&'a str, ActionError> {
    if v.is_empty() || v.starts_with('-') || v.chars().any(char::is_control) {
        return Err(invalid(format!(
            "`{what}` `{v}` is not accepted: it must not be empty, start with `-`, or hold control characters"
        )));
    }
    Ok(v)
}

/// A resource as kubectl names it: `kind`, `kind/name` or `kind.group/name`.
fn resource(v: &str) -> Result<&str, ActionError> {
    let ok = !v.is_empty()
        && v.len() <= 320
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '/' | '_'));
    if ok {
        Ok(v)
    } else {
        Err(invalid(format!(
            "`resource` `{v}` is not a Kubernetes resource (`deployment/web`, `pods`)"
        )))
    }
}

/// A path the call reads: inside the working directory unless `INFRA_UNSAFE_LOCAL=1`.
fn local_path(call: &Call<'_>, p: &str) -> Result<PathBuf, ActionError> {
    word("path", p)?;
    let path = call.host.config().expand_home(p);
    let real = path
        .canonicalize()
        .map_err(|e| ActionError::new(ErrorKind::NotFound, format!("`{p}` cannot be read: {e}")))?;
    if call.host.config().unsafe_local {
        return Ok(real);
    }
    let here = std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .map_err(|e| ActionError::new(ErrorKind::Failed, format!("the working directory: {e}")))?;
    if real.starts_with(&here) {
        Ok(real)
    } else {
        Err(ActionError::new(
            ErrorKind::Refused,
            format!(
                "`{p}` is outside the working directory {}; a path elsewhere needs INFRA_UNSAFE_LOCAL=1",
                here.display()
            ),
        ))
    }
}

/// The child's environment (`KUBECONFIG`) and kubectl's leading flags (`--context`, `--namespace`).
type KubeEnv = (Vec<(String, String)>, Vec<String>);

/// The kubeconfig and context a cluster call uses, and the namespace: never the host's default.
fn kube_env(call: &Call<'_>, c: &Cluster<'_>) -> Result<KubeEnv, ActionError> {
    let mut kubeconfig = c.kubeconfig.map(str::to_owned);
    let mut context = c.context.map(str::to_owned);
    let mut namespace = c.namespace.map(str::to_owned);
    let dir = &call.host.config().profiles_dir;
    // no cluster named at all: the project's only target with a `kube` section, if it has exactly one
    let only = if c.target.is_none() && kubeconfig.is_none() {
        let targets = crate::targets::Targets::load_checked(dir)?;
        let mut kube = targets.targets.iter().filter(|(_, t)| t.kube.is_some());
        match (kube.next(), kube.next()) {
            (Some((name, _)), None) => Some(name.clone()),
            _ => None,
        }
    } else {
        None
    };
    if let Some(name) = c.target.or(only.as_deref()) {
        let targets = crate::targets::Targets::load_checked(dir)?;
        let t = targets.find(name, dir)?;
        let kube = t.kube.as_ref().ok_or_else(|| {
            ActionError::new(
                ErrorKind::InvalidConfig,
                format!("target `{name}` has no `kube` section"),
            )
            .hint("add `kube: {kubeconfig: …, context: …}` to it in targets.yaml")
        })?;
        kubeconfig = kubeconfig.or_else(|| kube.kubeconfig.clone());
        context = context.or_else(|| kube.context.clone());
        namespace = namespace.or_else(|| kube.namespace.clone());
    }
    // the call's own kubeconfig: a file a target gives, used as that target would use it
    if let Some(own) = c.kubeconfig
        && !call.host.config().unsafe_local
    {
        let given = given_kubeconfig(call, own, context.as_deref())?;
        context = context.or(given.context);
        namespace = namespace.or(given.namespace);
    }
    let Some(kc) = kubeconfig else {
        return Err(ActionError::new(
            ErrorKind::InvalidConfig,
            "no kubeconfig is named: infra never uses the host's ~/.kube/config silently",
        )
        .hint("give `kubeconfig` (and `context`), or a `target` with a `kube` section (with one such target in targets.yaml, it is used)"));
    };
    let kc_path = call.host.config().expand_home(word("kubeconfig", &kc)?);
    if !kc_path.is_file() {
        return Err(ActionError::new(
            ErrorKind::InvalidConfig,
            format!("the kubeconfig `{kc}` is not a file"),
        ));
    }
    let mut args = Vec::new();
    if let Some(ctx) = &context {
        args.push(format!("--context={}", word("context", ctx)?));
    }
    if let Some(ns) = &namespace {
        args.push(format!("--namespace={}", word("namespace", ns)?));
    }
    Ok((
        vec![("KUBECONFIG".to_owned(), kc_path.display().to_string())],
        args,
    ))
}

/// The `kube` section of a target that gives the kubeconfig a call names (compared after `~` and
/// symbolic links are resolved), with the call's own `context` if it names one: a call may not use
/// any kubeconfig it finds on the host, or another context of a given one, without
/// `INFRA_UNSAFE_LOCAL=1`. Refused before the file is read.
fn given_kubeconfig(
    call: &Call<'_>,
    own: &str,
    context: Option<&str>,
) -> Result<crate::targets::KubeTarget, ActionError> {
    let config = call.host.config();
    let wanted = config.real_path(own);
    let targets = crate::targets::Targets::load(&config.profiles_dir);
    let found = targets
        .targets
        .values()
        .filter_map(|t| t.kube.as_ref())
        .filter(|k| {
            k.kubeconfig
                .as_deref()
                .is_some_and(|k| config.real_path(k) == wanted)
        })
        .find(|k| context.is_none() || k.context.as_deref() == context);
    found.cloned().ok_or_else(|| {
        ActionError::new(
            ErrorKind::Refused,
            format!(
                "the kubeconfig `{own}`{} is no target's: a call uses only a kubeconfig (and context) a target gives",
                context.map_or_else(String::new, |c| format!(" with context `{c}`"))
            ),
        )
        .hint(
            "pass the `target` whose `kube` section names it, or add it to a target's `kube` \
             section, or start infra with INFRA_UNSAFE_LOCAL=1 to let calls use any host file",
        )
    })
}

/// Runs `program` with `args`; stdout and stderr captured (all of it in artifacts past 1 MiB).
fn run(
    call: &Call<'_>,
    program: &str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ok_exit_codes: Vec<i32>,
    stdin: Option<Vec<u8>>,
) -> Result<Value, ActionError> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()));
    if !found {
        return Err(ActionError::new(
            ErrorKind::NotAvailable,
            format!("`{program}` is not installed (not on PATH)"),
        )
        .hint(match program {
            "helm" => "install Helm (https://helm.sh) to render charts",
            _ => "install kubectl (Debian: `apt-get install kubernetes-client`, or the upstream binary)",
        }));
    }
    let spec = ProcessSpec {
        program: program.to_owned(),
        args: args.clone(),
        env,
        stdin,
        ok_exit_codes,
        ..ProcessSpec::default()
    };
    let cap = Capture {
        dir: call.dir.clone(),
        uri_base: call.uri_base.clone(),
        cap: 1024 * 1024,
        redactor: call.host.redactor().clone(),
    };
    let mut argv = vec![program.to_owned()];
    argv.extend(args);
    let r = process::run(&spec, call.deadline, call.cancel, &cap);
    match r {
        Ok(mut v) => {
            v["argv"] = json!(argv);
            Ok(v)
        }
        Err(mut e) => {
            if let Some(Value::Object(o)) = e.result.as_mut() {
                o.insert("argv".into(), json!(argv));
            }
            let stderr = e.result.as_ref().map(stderr_head).unwrap_or_default();
            if !stderr.is_empty() {
                e.message = format!("{}: {stderr}", e.message);
            }
            if e.kind == ErrorKind::NonzeroExit && program == "kubectl" {
                // kubectl's own words say what went wrong; where to look is the cluster's access
                e = e.hint(KUBE_ACCESS_HINT);
            }
            Err(e)
        }
    }
}

/// Where to look when kubectl could not do what it was asked.
const KUBE_ACCESS_HINT: &str = "check the kubeconfig's server, context and credentials; `infra doctor --connect` probes every kube target";

/// The first 400 characters of a process result's stderr, trimmed.
fn stderr_head(r: &Value) -> String {
    r["stderr"]
        .as_str()
        .unwrap_or("")
        .trim()
        .chars()
        .take(400)
        .collect()
}

fn what_is(dir: &Path) -> &'static str {
    if ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| dir.join(f).is_file())
    {
        "kustomize"
    } else if dir.join("Chart.yaml").is_file() {
        "helm"
    } else {
        "plain"
    }
}

/// The objects of a YAML stream: documents split at `---` lines, each parsed by `dsl`; `file` names
/// where they came from.
fn objects(text: &str, file: &str) -> Result<Vec<(Value, String)>, ActionError> {
    let mut out = Vec::new();
    let mut doc = String::new();
    let flush = |doc: &mut String, out: &mut Vec<(Value, String)>| -> Result<(), ActionError> {
        if doc.trim().is_empty() {
            doc.clear();
            return Ok(());
        }
        let src = dsl::SourceFile::new(file.to_owned(), std::mem::take(doc));
        let node = dsl::parse::parse(&src).map_err(|d| {
            ActionError::new(
                ErrorKind::InvalidArgs,
                format!("{file}: not YAML: {}", d.message),
            )
        })?;
        let v = node.to_json();
        match v {
            Value::Null => {}
            Value::Object(_) if v.get("kind").and_then(Value::as_str) == Some("List") => {
                for item in v["items"].as_array().into_iter().flatten() {
                    out.push((item.clone(), file.to_owned()));
                }
            }
            Value::Object(_) => out.push((v, file.to_owned())),
            _ => {
                return Err(ActionError::new(
                    ErrorKind::InvalidArgs,
                    format!("{file}: a document is not a Kubernetes object"),
                ));
            }
        }
        Ok(())
    };
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            flush(&mut doc, &mut out)?;
        } else {
            doc.push_str(line);
        }
    }
    flush(&mut doc, &mut out)?;
    Ok(out)
}

/// Every container (init ones too) of an object, wherever its pod template is.
fn containers(obj: &Value) -> Vec<&Value> {
    let spec = &obj["spec"];
    let pod = if obj["kind"] == "Pod" {
        spec
    } else if obj["kind"] == "CronJob" {
        &spec["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &spec["template"]["spec"]
    };
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten())
        .collect()
}

/// The registry of an image reference (`docker.io` when it names none).
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Why `image` breaks `p`, if it does.
fn violations(image: &str, p: &ImagePolicy) -> Vec<String> {
    let mut out = Vec::new();
    let pinned = image.contains("@sha256:");
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t);
    if p.require_digest_pinning == Some(true) && !pinned {
        out.push("not pinned by digest (`@sha256:…`)".to_owned());
    }
    if p.disallow_latest == Some(true) && !pinned && matches!(tag, None | Some("latest")) {
        out.push("uses `latest` (no tag, or the `latest` tag)".to_owned());
    }
    if let Some(allowed) = &p.allowed_registries {
        let reg = registry_of(image);
        if !allowed.iter().any(|a| a == reg) {
            out.push(format!("registry `{reg}` is not one of {allowed:?}"));
        }
    }
    out
}

fn render(call: &Call<'_>) -> Result<Value, ActionError> {
    let args: RenderArgs = call.parse()?;
    let dir = local_path(call, &args.path)?;
    let kind = match args.kind.as_deref() {
        Some(k) => k,
        None if dir.is_dir() => what_is(&dir),
        None => "plain",
    };
    let mut files: Vec<(String, String)> = Vec::new();
    let text = match kind {
        "kustomize" => {
            let r = run(
                call,
                "kubectl",
                vec!["kustomize".into(), dir.display().to_string()],
                Vec::new(),
                Vec::new(),
                None,
            )?;
            read_stdout(call, &r)?
        }
        "helm" => {
            let mut a = vec![
                "template".to_owned(),
                word("release", args.release.as_deref().unwrap_or("release"))?.to_owned(),
                dir.display().to_string(),
            ];
            if let Some(ns) = &args.namespace {
                a.push(format!("--namespace={}", word("namespace", ns)?));
            }
            for v in args.values.iter().flatten() {
                a.push(format!("--values={}", local_path(call, v)?.display()));
            }
            let r = run(call, "helm", a, Vec::new(), Vec::new(), None)?;
            read_stdout(call, &r)?
        }
        _ => {
            let mut paths: Vec<PathBuf> = if dir.is_dir() {
                std::fs::read_dir(&dir)
                    .map_err(|e| invalid(format!("`{}`: {e}", args.path)))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_file()
                            && p.extension()
                                .and_then(|x| x.to_str())
                                .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
                    })
                    .collect()
            } else {
                vec![dir.clone()]
            };
            paths.sort();
            let mut all = String::new();
            for p in paths {
                let t = std::fs::read_to_string(&p)
                    .map_err(|e| invalid(format!("`{}`: {e}", p.display())))?;
                let name = p.strip_prefix(&dir).unwrap_or(&p).display().to_string();
                if !all.is_empty() && !all.ends_with('\n') {
                    all.push('\n');
                }
                if !all.is_empty() {
                    all.push_str("---\n");
                }
                all.push_str(&t);
                files.push((name, t));
            }
            all
        }
    };
    // the objects, with the file each came from when there are files
    let mut objs: Vec<(Value, String)> = Vec::new();
    if files.is_empty() {
        objs = objects(&text, "rendered.yaml")?;
    } else {
        for (name, t) in &files {
            objs.extend(objects(t, name)?);
        }
    }
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut namespaces: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    let mut found = Vec::new();
    for (o, file) in &objs {
        let kind = o["kind"].as_str().unwrap_or("?");
        *by_kind.entry(kind.to_owned()).or_default() += 1;
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        if !ns.is_empty() && !namespaces.iter().any(|n| n == ns) {
            namespaces.push(ns.to_owned());
        }
        let id = format!(
            "{kind}/{}{}",
            if ns.is_empty() {
                String::new()
            } else {
                format!("{ns}/")
            },
            o["metadata"]["name"].as_str().unwrap_or("?")
        );
        for c in containers(o) {
            let Some(image) = c["image"].as_str() else {
                continue;
            };
            if !images.iter().any(|i| i == image) {
                images.push(image.to_owned());
            }
            if let Some(p) = &args.policy {
                for why in violations(image, p) {
                    found.push(json!({"file": file, "object": id, "container": c["name"], "image": image, "rule": why}));
                }
            }
        }
    }
    let artifact = crate::record::artifacts::ArtifactWriter::create(
        &call.dir,
        &call.uri_base,
        "rendered.yaml",
        call.host.redactor().clone(),
    )
    .and_then(|mut w| {
        std::io::Write::write_all(&mut w, text.as_bytes())?;
        w.finish()
    })
    .map_err(|e| ActionError::new(ErrorKind::Failed, format!("the rendered artifact: {e}")))?;
    let out = json!({
        "kind": kind, "path": args.path, "objects": objs.len(), "by_kind": by_kind,
        "namespaces": namespaces, "images": images,
        "sha256": dsl::analyze::hex(&sha2::Sha256::digest(text.as_bytes())),
        "uri": artifact.uri, "artifacts": [artifact.to_json()],
        "violations": found, "ok": found.is_empty(),
    });
    if found.is_empty() {
        Ok(out)
    } else {
        Err(ActionError::new(
            ErrorKind::CheckFailed,
            format!(
                "{} image policy violation(s); the first: {} container {} image {}: {}",
                found.len(),
                found[0]["object"].as_str().unwrap_or(""),
                found[0]["container"].as_str().unwrap_or(""),
                found[0]["image"].as_str().unwrap_or(""),
                found[0]["rule"].as_str().unwrap_or("")
            ),
        )
        .with_result(out))
    }
}

/// The whole stdout of a process run (its artifact past the in-memory cap).
fn read_stdout(call: &Call<'_>, r: &Value) -> Result<String, ActionError> {
    if r["stdout_truncated"] != true {
        return Ok(r["stdout"].as_str().unwrap_or("").to_owned());
    }
    std::fs::read_to_string(call.dir.join("stdout")).map_err(|e| {
        ActionError::new(
            ErrorKind::Failed,
            format!("reading the rendered output: {e}"),
        )
    })
}

/// `-k <dir>` for an overlay, `-f <path>` otherwise.
fn manifest_flag(path: &Path) -> Vec<String> {
    if path.is_dir() && what_is(path) == "kustomize" {
        vec!["-k".into(), path.display().to_string()]
    } else {
        vec!["-f".into(), path.display().to_string()]
    }
}

fn cluster_call(call: &Call<'_>, action: &str) -> Result<Value, ActionError> {
    let (cluster, mut a, ok_codes, stdin): (Cluster<'_>, Vec<String>, Vec<i32>, Option<Vec<u8>>);
    let manifest: ManifestArgs;
    let object: ObjectArgs;
    let images: ImagesArgs;
    let access: AccessArgs;
    match action {
        "version" | "can_i" => {
            access = call.parse()?;
            a = match (action, &access.verb, &access.resource) {
                ("version", None, None) => vec!["version".into(), "-o".into(), "json".into()],
                ("version", ..) => return Err(invalid("`version` takes no `verb` or `resource`")),
                (_, Some(verb), Some(res)) => vec![
                    "auth".into(),
                    "can-i".into(),
                    word("verb", verb)?.to_owned(),
                    resource(res)?.to_owned(),
                ],
                _ => return Err(invalid("`can_i` needs `verb` and `resource`")),
            };
            // `auth can-i` answers no with exit 1
            ok_codes = if action == "can_i" {
                vec![0, 1]
            } else {
                Vec::new()
            };
            stdin = None;
            cluster = cluster_of!(access);
        }
        "diff" | "apply" => {
            manifest = call.parse()?;
            let path = local_path(call, &manifest.path)?;
            a = vec![action.to_owned()];
            if action == "apply" {
                a.push("--server-side".into());
                if manifest.dry_run == Some(true) {
                    a.push("--dry-run=server".into());
                }
            }
            a.extend(manifest_flag(&path));
            ok_codes = if action == "diff" {
                vec![0, 1]
            } else {
                Vec::new()
            };
            stdin = None;
            cluster = cluster_of!(manifest);
        }
        "images" => {
            images = call.parse()?;
            a = vec!["get".into(), "pods".into(), "-o".into(), "json".into()];
            if let Some(s) = &images.selector {
                a.push(format!("--selector={}", word("selector", s)?));
            }
            ok_codes = Vec::new();
            stdin = None;
            cluster = cluster_of!(images);
        }
        _ => {
            object = call.parse()?;
            let res = resource(&object.resource)?;
            let mut target = vec![res.to_owned()];
            if let Some(n) = &object.name {
                target.push(word("name", n)?.to_owned());
            }
            stdin = None;
            ok_codes = Vec::new();
            a = match action {
                "get" => {
                    let mut v = vec!["get".to_owned()];
                    v.extend(target);
                    v.extend(["-o".into(), "json".into()]);
                    v
                }
                "describe" => {
                    let mut v = vec!["describe".to_owned()];
                    v.extend(target);
                    v
                }
                "rollout_status" => {
                    let secs = object.timeout_ms.unwrap_or(120_000).div_ceil(1000);
                    let mut v = vec!["rollout".to_owned(), "status".to_owned()];
                    v.extend(target);
                    v.push(format!("--timeout={secs}s"));
                    v
                }
                "logs" => {
                    let mut v = vec!["logs".to_owned()];
                    v.extend(target);
                    if let Some(c) = &object.container {
                        v.push(format!("--container={}", word("container", c)?));
                    }
                    v.push(format!("--tail={}", object.tail.unwrap_or(200).min(5000)));
                    v
                }
                "rollback" => {
                    let mut v = vec!["rollout".to_owned(), "undo".to_owned()];
                    v.extend(target);
                    if let Some(r) = object.to_revision {
                        v.push(format!("--to-revision={r}"));
                    }
                    v
                }
                "annotate" => {
                    let pairs = object
                        .annotations
                        .as_ref()
                        .filter(|m| !m.is_empty())
                        .ok_or_else(|| invalid("`annotate` needs `annotations` (key → value)"))?;
                    let mut v = vec!["annotate".to_owned()];
                    v.extend(target);
                    for (k, val) in pairs {
                        v.push(format!("{}={val}", word("annotation key", k)?));
                    }
                    v.push("--overwrite".into());
                    v
                }
                "patch" => {
                    let p = object
                        .patch
                        .as_ref()
                        .filter(|p| p.is_object())
                        .ok_or_else(|| invalid("`patch` needs `patch`, an object"))?;
                    let mut v = vec!["patch".to_owned()];
                    v.extend(target);
                    v.push("--type=strategic".into());
                    v.push(format!("--patch={p}"));
                    v
                }
                other => return Err(invalid(format!("k8s has no action `{other}`"))),
            };
            if let Some(s) = &object.selector {
                a.push(format!("--selector={}", word("selector", s)?));
            }
            cluster = cluster_of!(object);
        }
    }
    let (env, mut flags) = kube_env(call, &cluster)?;
    flags.append(&mut a);
    let mut r = run(call, "kubectl", flags, env, ok_codes, stdin)?;
    match action {
        "diff" => {
            r["changed"] = (r["exit_code"] == 1).into();
        }
        "can_i" => {
            // "no" is exit 1 with `no` on stdout; any other exit 1 is an error (an unreachable API)
            let answer = r["stdout"].as_str().unwrap_or("").trim().to_owned();
            if r["exit_code"] == 1 && !answer.starts_with("no") {
                return Err(ActionError::new(
                    ErrorKind::NonzeroExit,
                    format!("kubectl auth can-i failed: {}", stderr_head(&r)),
                )
                .hint(KUBE_ACCESS_HINT)
                .with_result(r));
            }
            r["allowed"] = (r["exit_code"] == 0).into();
        }
        "version" => {
            if let Ok(v) = serde_json::from_str::<Value>(r["stdout"].as_str().unwrap_or("")) {
                r["server"] = v["serverVersion"]["gitVersion"].clone();
                r["client"] = v["clientVersion"]["gitVersion"].clone();
            }
        }
        "get" | "images" if r["stdout_truncated"] != true => {
            if let Ok(v) = serde_json::from_str::<Value>(r["stdout"].as_str().unwrap_or("")) {
                if action == "images" {
                    let mut list: Vec<Value> = Vec::new();
                    for pod in v["items"].as_array().into_iter().flatten() {
                        for c in containers(pod) {
                            list.push(json!({"pod": pod["metadata"]["name"], "container": c["name"], "image": c["image"]}));
                        }
                    }
                    r["images"] = Value::Array(list);
                } else {
                    r["object"] = v;
                }
            }
        }
        _ => {}
    }
    Ok(r)
}

/// `apply` without `dry_run` writes; with it, it reads.
fn classify_apply(args: &Map<String, Value>) -> Option<Effect> {
    Some(if args.get("dry_run") == Some(&Value::Bool(true)) {
        Effect::Read
    } else {
        Effect::Write
    })
}

pub(super) fn tool() -> ToolSpec {
    let a = |name: &'static str,
             title: &'static str,
             description: &'static str,
             effect: Effect,
             schema_fn: fn() -> Value,
             classify: Option<super::ClassifyFn>,
             example: fn() -> Value| ActionSpec {
        tool: "k8s",
        name,
        title,
        description,
        effect,
        unsafe_local: false,
        schema_fn,
        modes: no_modes,
        classify,
        secret_args: None,
        example,
    };
    ToolSpec {
        name: "k8s",
        title: "Kubernetes",
        description: "kubectl with a checked argv and an explicit kubeconfig (never ~/.kube/config by default).",
        aliases: &["kubectl"],
        open_world: true,
        actions: vec![
            a(
                "render",
                "Render manifests",
                "Renders a kustomize overlay, Helm chart or manifest directory into an artifact: kinds, namespaces, images, SHA-256; `policy` checks images.",
                Effect::Read,
                || {
                    args_schema::<RenderArgs>(
                        "k8s",
                        "render",
                        "Renders a kustomize overlay, Helm chart or manifest directory into an artifact: kinds, namespaces, images, SHA-256; `policy` checks images.",
                    )
                },
                None,
                || json!({"action": "render", "path": "overlays/dev", "policy": {"disallow_latest": true}}),
            ),
            a(
                "diff",
                "Diff against the cluster",
                "Diffs manifests against the cluster (`changed`: differences found).",
                Effect::Read,
                || {
                    args_schema::<ManifestArgs>(
                        "k8s",
                        "diff",
                        "Diffs manifests against the cluster (`changed`: differences found).",
                    )
                },
                None,
                || json!({"action": "diff", "path": "overlays/dev", "target": "dev-cluster"}),
            ),
            a(
                "apply",
                "Apply manifests",
                "Applies manifests server-side (`dry_run` only reads).",
                Effect::Write,
                || {
                    args_schema::<ManifestArgs>(
                        "k8s",
                        "apply",
                        "Applies manifests server-side (`dry_run` only reads).",
                    )
                },
                Some(classify_apply),
                || json!({"action": "apply", "path": "overlays/dev", "target": "dev-cluster"}),
            ),
            a(
                "rollout_status",
                "Wait for a rollout",
                "Waits for a rollout to finish, up to `timeout_ms`.",
                Effect::Read,
                || {
                    args_schema::<ObjectArgs>(
                        "k8s",
                        "rollout_status",
                        "Waits for a rollout to finish, up to `timeout_ms`.",
                    )
                },
                None,
                || json!({"action": "rollout_status", "resource": "deployment/web", "target": "dev-cluster"}),
            ),
            a(
                "version",
                "Server version",
                "Reaches the API server: its version and kubectl's.",
                Effect::Read,
                || {
                    args_schema::<AccessArgs>(
                        "k8s",
                        "version",
                        "Reaches the API server: its version and kubectl's.",
                    )
                },
                None,
                || json!({"action": "version", "target": "dev-cluster"}),
            ),
            a(
                "can_i",
                "Check a permission",
                "Whether the kubeconfig's user may do `verb` on `resource` (`allowed`).",
                Effect::Read,
                || {
                    args_schema::<AccessArgs>(
                        "k8s",
                        "can_i",
                        "Whether the kubeconfig's user may do `verb` on `resource` (`allowed`).",
                    )
                },
                None,
                || json!({"action": "can_i", "verb": "patch", "resource": "deployments", "target": "dev-cluster"}),
            ),
            a(
                "get",
                "Get objects",
                "Gets objects as JSON.",
                Effect::Read,
                || args_schema::<ObjectArgs>("k8s", "get", "Gets objects as JSON."),
                None,
                || json!({"action": "get", "resource": "deployments", "target": "dev-cluster"}),
            ),
            a(
                "describe",
                "Describe objects",
                "Describes objects.",
                Effect::Read,
                || args_schema::<ObjectArgs>("k8s", "describe", "Describes objects."),
                None,
                || json!({"action": "describe", "resource": "deployment/web", "target": "dev-cluster"}),
            ),
            a(
                "logs",
                "Read logs",
                "Reads the last `tail` lines of a pod's or workload's logs.",
                Effect::Read,
                || {
                    args_schema::<ObjectArgs>(
                        "k8s",
                        "logs",
                        "Reads the last `tail` lines of a pod's or workload's logs.",
                    )
                },
                None,
                || json!({"action": "logs", "resource": "deployment/web", "tail": 100, "target": "dev-cluster"}),
            ),
            a(
                "images",
                "List running images",
                "Lists the images of the pods.",
                Effect::Read,
                || args_schema::<ImagesArgs>("k8s", "images", "Lists the images of the pods."),
                None,
                || json!({"action": "images", "selector": "app=web", "target": "dev-cluster"}),
            ),
            a(
                "rollback",
                "Roll back",
                "Rolls a workload back (`rollout undo`).",
                Effect::Write,
                || {
                    args_schema::<ObjectArgs>(
                        "k8s",
                        "rollback",
                        "Rolls a workload back (`rollout undo`).",
                    )
                },
                None,
                || json!({"action": "rollback", "resource": "deployment/web", "target": "dev-cluster"}),
            ),
            a(
                "annotate",
                "Annotate",
                "Sets annotations on objects.",
                Effect::Write,
                || args_schema::<ObjectArgs>("k8s", "annotate", "Sets annotations on objects."),
                None,
                || json!({"action": "annotate", "resource": "deployment/web", "annotations": {"infra/release": "r42"}, "target": "dev-cluster"}),
            ),
            a(
                "patch",
                "Patch",
                "Patches objects (strategic merge).",
                Effect::Write,
                || args_schema::<ObjectArgs>("k8s", "patch", "Patches objects (strategic merge)."),
                None,
                || json!({"action": "patch", "resource": "deployment/web", "patch": {"spec": {"replicas": 2}}, "target": "dev-cluster"}),
            ),
        ],
    }
}

pub(super) fn invoke(action: &str, call: &Call<'_>) -> Result<Value, ActionError> {
    match action {
        "render" => render(call),
        _ => cluster_call(call, action),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_policies_name_each_rule_broken() {
        let p = ImagePolicy {
            require_digest_pinning: Some(true),
            disallow_latest: Some(true),
            allowed_registries: Some(vec!["ghcr.io".into()]),
        };
        assert_eq!(
            violations("ghcr.io/acme/web@sha256:abc", &p),
            Vec::<String>::new()
        );
        let v = violations("nginx", &p);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[2].contains("docker.io"), "{v:?}");
        let v = violations("registry.local:5000/web:1.2", &p);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[1].contains("registry.local:5000"), "{v:?}");
        let latest = ImagePolicy {
            disallow_latest: Some(true),
            ..ImagePolicy::default()
        };
        assert_eq!(violations("ghcr.io/a/b:latest", &latest).len(), 1);
        assert!(violations("ghcr.io/a/b:1.0", &latest).is_empty());
    }

    #[test]
    fn values_that_would_be_options_are_refused() {
        assert!(word("name", "--kubeconfig=/etc/x").is_err());
        assert!(word("name", "a\nb").is_err());
        assert!(word("name", "web").is_ok());
        assert!(resource("deployment/web").is_ok());
        assert!(resource("-o").is_err());
        assert!(resource("pods;rm").is_err());
    }

    #[test]
    fn a_stream_splits_into_objects_and_lists_open_up() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n  - {kind: Pod, metadata: {name: p}, spec: {containers: [{name: c, image: x}]}}\n";
        let o = objects(text, "f.yaml").expect("objects");
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].0["kind"], "Pod");
        assert_eq!(containers(&o[1].0)[0]["image"], "x");
        super::super::examples_parse(tool(), |action, a| match action {
            "render" => super::super::parse_args::<RenderArgs>(a).map(drop),
            "diff" | "apply" => super::super::parse_args::<ManifestArgs>(a).map(drop),
            "images" => super::super::parse_args::<ImagesArgs>(a).map(drop),
            "version" | "can_i" => super::super::parse_args::<AccessArgs>(a).map(drop),
            _ => super::super::parse_args::<ObjectArgs>(a).map(drop),
        });
    }
}
