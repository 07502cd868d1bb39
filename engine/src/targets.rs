//! Targets: the hosts and services a project acts on, from `<profiles>/targets.json` or `targets.yaml`.
//!
//! The original shape loads as is (`{"prod": {"host", "port", "username", "key_file"}}`). Credentials are
//! only ever referenced (`key_file`, `password_env`, `passphrase_env`, `token_env`), never inlined, and
//! [`Target::public`] is what any result may show.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use dsl::{Code, Diagnostic, SourceFile};

/// How a host key is trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostKeyPolicy {
    /// The key must already be in `known_hosts`.
    #[default]
    Strict,
    /// Trust on first use (recorded in `known_hosts`); a changed key is refused.
    AcceptNew,
}

/// One target.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// SSH host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// SSH port (22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A private key file (`~` is the home directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The environment variable that holds the key's passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_env: Option<String>,
    /// The environment variable that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Use the ssh-agent (`SSH_AUTH_SOCK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<bool>,
    /// The `known_hosts` file to check host keys against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// `strict` (default) or `accept_new`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<HostKeyPolicy>,
    /// A pinned host key fingerprint (`SHA256:…`); when set, only that key is accepted.
    #[schemars(regex(pattern = r"^SHA256:[A-Za-z0-9+/=]+$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Another target to connect through (a bastion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
    /// Labels, to pick several targets at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Connect timeout in milliseconds.
    #[schemars(range(min = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Commands (SSH channels) at once on this target's session: 8 by default; keep it at or below the
    /// server's `MaxSessions` (10 in OpenSSH).
    #[schemars(range(min = 1, max = 64))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The local checkout this target is deployed from: the project context of intents aimed at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_root: Option<String>,
    /// PostgreSQL: `url`, or `host`, `port`, `user`, `database`, `password_env`, `sslmode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgTarget>,
    /// HTTP: `base_url`, `headers`, credentials by environment variable, egress allowances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTarget>,
    /// Kubernetes: the kubeconfig file, context and namespace the `k8s` tool uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeTarget>,
}

/// A target's `kube` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeTarget {
    /// The kubeconfig file (`~` is the home directory).
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

impl Target {
    /// What a result may show: no credential, no credential reference.
    pub fn public(&self, name: &str) -> Value {
        let mut auth = Vec::new();
        if self.key_file.is_some() {
            auth.push("key");
        }
        if self.password_env.is_some() {
            auth.push("password");
        }
        if self.agent == Some(true) {
            auth.push("agent");
        }
        json!({
            "name": name,
            "host": self.host,
            "port": self.host.as_ref().map(|_| self.port.unwrap_or(22)),
            "username": self.username,
            "labels": self.labels,
            "auth": auth,
            "host_key": if self.fingerprint.is_some() { "pinned" } else {
                match self.host_key.unwrap_or_default() { HostKeyPolicy::Strict => "strict", HostKeyPolicy::AcceptNew => "accept_new" }
            },
            "jump": self.jump,
            "postgres": self.postgres.is_some(),
            "http": self.http.is_some(),
            "description": self.description,
            "repo_root": self.repo_root,
        })
    }
}

/// A target's `postgres` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgTarget {
    /// `postgres://user@host:port/db` (keep the password out of it: use `password_env`).
    pub url: Option<String>,
    /// The environment variable that holds the whole URL.
    pub url_env: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub database: Option<String>,
    /// The environment variable that holds the password.
    pub password_env: Option<String>,
    /// `disable`, `prefer` (default) or `require`.
    #[schemars(regex(pattern = "^(disable|prefer|require)$"))]
    pub sslmode: Option<String>,
    /// Every query runs in a read-only transaction and writing statements are refused; the target's
    /// role must be one the server does not let write (checked on each new connection).
    pub read_only: Option<bool>,
    #[schemars(range(min = 1))]
    pub connect_timeout_ms: Option<u64>,
}

/// A target's `http` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTarget {
    /// The URL `path` is joined to.
    pub base_url: Option<String>,
    /// Headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The environment variable holding a bearer token (`token_env` is the same).
    pub bearer_env: Option<String>,
    pub token_env: Option<String>,
    pub basic: Option<Basic>,
    /// Allow link-local and cloud metadata addresses (refused by default).
    pub allow_link_local: Option<bool>,
    /// Refuse loopback addresses.
    pub deny_loopback: Option<bool>,
    /// Refuse private ranges.
    pub deny_private: Option<bool>,
    /// A PEM file of CA certificates trusted for this target's TLS, besides the system's (a private CA).
    pub ca_file: Option<String>,
}

/// Basic authentication, the password from the environment.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Basic {
    pub username: String,
    /// The environment variable that holds the password.
    pub password_env: String,
}

/// Why a target cannot be used: the targets file has errors, or there is no such target. Actions turn
/// it into their own error (`From<TargetError> for ActionError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    /// `InvalidConfig` or `NotFound`.
    pub kind: crate::error::ErrorKind,
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl From<TargetError> for crate::error::ActionError {
    fn from(e: TargetError) -> Self {
        crate::error::ActionError::new(e.kind, e.message).hint(e.hint)
    }
}

/// The JSON Schema of a targets file (`schemas/targets.schema.json`).
pub fn schema() -> Value {
    let mut s = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
        .into_root_schema_for::<IndexMap<String, Target>>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://infra.invalid/schemas/targets.schema.json".into(),
        );
        o.insert("title".into(), "infra targets".into());
        o.insert(
            "description".into(),
            "Target name to target: SSH, PostgreSQL and HTTP endpoints.".into(),
        );
        o.insert(
            "propertyNames".into(),
            json!({"pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}),
        );
    }
    s
}

fn validator() -> &'static (Value, jsonschema::Validator) {
    static V: OnceLock<(Value, jsonschema::Validator)> = OnceLock::new();
    V.get_or_init(|| {
        let s = schema();
        let v = jsonschema::draft202012::new(&s).expect("the targets schema is valid");
        (s, v)
    })
}

/// The targets of a project, and the problems found in its targets file.
#[derive(Debug, Default)]
pub struct Targets {
    pub targets: IndexMap<String, Target>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Targets {
    /// Loads `targets.json` or `targets.yaml` (or `.yml`) from the profiles directory; none is no targets.
    pub fn load(profiles_dir: &Path) -> Targets {
        for name in ["targets.json", "targets.yaml", "targets.yml"] {
            let path = profiles_dir.join(name);
            if path.is_file() {
                return match crate::ctx::read_source(&path) {
                    Ok(file) => Targets::parse(&file),
                    Err(d) => Targets {
                        targets: IndexMap::new(),
                        diagnostics: vec![d],
                    },
                };
            }
        }
        Targets::default()
    }

    /// Checks and reads a targets file; with any error there are no targets (nothing half-loaded).
    pub fn parse(file: &SourceFile) -> Targets {
        let node = match dsl::parse::parse(file) {
            Ok(n) => n,
            Err(d) => {
                return Targets {
                    targets: IndexMap::new(),
                    diagnostics: vec![d],
                };
            }
        };
        let json = node.to_json();
        let (schema, v) = validator();
        let diagnostics =
            dsl::schema::check_value(file, &node, &json, "", v, schema, Code::SchemaViolation);
        if !diagnostics.is_empty() {
            return Targets {
                targets: IndexMap::new(),
                diagnostics,
            };
        }
        let mut targets: IndexMap<String, Target> = match serde_json::from_value(json) {
            Ok(t) => t,
            Err(e) => {
                return Targets {
                    targets: IndexMap::new(),
                    diagnostics: vec![
                        Diagnostic::error(Code::SchemaViolation, e.to_string()).in_file(file),
                    ],
                };
            }
        };
        let mut diagnostics = Vec::new();
        for (name, t) in &targets {
            if let Some(j) = &t.jump
                && !targets.contains_key(j)
            {
                let span = node
                    .pointer(&format!("/{name}/jump"))
                    .map_or(node.span, |(n, _)| n.span);
                diagnostics.push(
                    Diagnostic::error(
                        Code::SchemaViolation,
                        format!("target `{name}` jumps through `{j}`, which is not a target"),
                    )
                    .at(file, span)
                    .help_opt(dsl::diagnostic::suggestion(
                        j,
                        targets.keys().map(String::as_str),
                    )),
                );
            }
        }
        if diagnostics.is_empty() {
            // a chain of jumps must end at a target that connects directly
            for (name, t) in &targets {
                let mut path = vec![name.as_str()];
                let mut next = t.jump.as_deref();
                while let Some(j) = next {
                    if path.contains(&j) {
                        path.push(j);
                        let span = node
                            .pointer(&format!("/{name}/jump"))
                            .map_or(node.span, |(n, _)| n.span);
                        diagnostics.push(
                            Diagnostic::error(
                                Code::SchemaViolation,
                                format!("target `{name}` jumps in a loop: {}", path.join(" → ")),
                            )
                            .at(file, span),
                        );
                        break;
                    }
                    path.push(j);
                    next = targets.get(j).and_then(|t| t.jump.as_deref());
                }
            }
        }
        if !diagnostics.is_empty() {
            targets.clear();
        }
        Targets {
            targets,
            diagnostics,
        }
    }

    /// The targets of a project for an action: an error (located, with how to see every problem) when
    /// the file has any.
    pub fn load_checked(profiles_dir: &Path) -> Result<Targets, TargetError> {
        let t = Targets::load(profiles_dir);
        match t.diagnostics.first() {
            None => Ok(t),
            Some(d) => Err(TargetError {
                kind: crate::error::ErrorKind::InvalidConfig,
                message: format!("the targets file has errors: {}", d.message),
                hint: format!(
                    "fix it{}; `infra validate` shows every error",
                    d.location().map(|l| format!(" at {l}")).unwrap_or_default()
                ),
            }),
        }
    }

    /// The named target, or an error that suggests a near name or lists the known ones.
    pub fn find(&self, name: &str, profiles_dir: &Path) -> Result<&Target, TargetError> {
        self.targets.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.targets.keys().map(String::as_str).collect();
            TargetError {
                kind: crate::error::ErrorKind::NotFound,
                message: format!("no target `{name}`"),
                hint: match dsl::diagnostic::suggestion(name, known.iter().copied()) {
                    Some(s) => s,
                    None if known.is_empty() => format!(
                        "define targets in {}",
                        profiles_dir.join("targets.json").display()
                    ),
                    None => format!("known targets: {}", known.join(", ")),
                },
            }
        })
    }

    /// Names and labels (and nothing secret) of every target.
    pub fn public(&self) -> Vec<Value> {
        self.targets.iter().map(|(n, t)| t.public(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_shape_loads_as_is() {
        let t = Targets::parse(&SourceFile::new(
            "targets.json",
            r#"{ "prod": { "host": "prod.example.com", "port": 22, "username": "deploy", "key_file": "~/.ssh/id_ed25519" } }"#,
        ));
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        let p = t.public();
        assert_eq!(p[0]["name"], "prod");
        assert_eq!(p[0]["auth"], json!(["key"]));
        assert_eq!(p[0]["host_key"], "strict");
        assert!(
            !p[0].to_string().contains("id_ed25519"),
            "no credential reference is shown"
        );
    }

    #[test]
    fn every_key_and_its_errors() {
        let t = Targets::parse(&SourceFile::new(
            "targets.yaml",
            "bastion: {host: b.example.com, username: ops, agent: true, host_key: accept_new}\nweb:\n  host: 10.0.0.5\n  username: deploy\n  password_env: WEB_PASSWORD\n  jump: bastion\n  labels: [web, prod]\n  fingerprint: 'SHA256:abc123+/='\n  connect_timeout_ms: 5000\n  postgres: {url_env: DB_URL}\n  http: {base_url: 'https://web.example.com'}\n",
        ));
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        let p = t.public();
        assert_eq!(p[1]["labels"], json!(["web", "prod"]));
        assert_eq!(p[1]["host_key"], "pinned");
        assert!(!p[1].to_string().contains("WEB_PASSWORD"));

        let bad = Targets::parse(&SourceFile::new(
            "targets.yaml",
            "prod:\n  host: x\n  usernme: deploy\n  jump: nowhere\n",
        ));
        assert!(bad.targets.is_empty(), "nothing half-loaded");
        let d = &bad.diagnostics[0];
        assert_eq!(d.code, Code::UnknownKey);
        assert_eq!(d.location().as_deref(), Some("targets.yaml:3:3"));
        assert_eq!(d.help.as_deref(), Some("did you mean `username`?"));
        let jump = Targets::parse(&SourceFile::new(
            "targets.yaml",
            "prod: {host: x, jump: bastoin}\nbastion: {host: y}\n",
        ));
        assert!(jump.diagnostics[0].message.contains("`bastoin`"));
        let looped = Targets::parse(&SourceFile::new(
            "targets.yaml",
            "a: {host: x, jump: b}\nb: {host: y, jump: a}\nc: {host: z, jump: c}\n",
        ));
        assert!(looped.targets.is_empty());
        assert_eq!(
            looped.diagnostics[0].message,
            "target `a` jumps in a loop: a → b → a"
        );
        assert_eq!(
            looped.diagnostics[2].message,
            "target `c` jumps in a loop: c → c"
        );
        assert_eq!(
            jump.diagnostics[0].help.as_deref(),
            Some("did you mean `bastion`?")
        );
    }
}
