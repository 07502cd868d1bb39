//! A throwaway project to drive infra in: a profiles directory with runbooks, targets and other files,
//! an environment, then the binary, the engine or an MCP session on it, all seeing the same
//! configuration. The directory goes away with the value.
//!
//! ```ignore
//! let p = Project::new().runbook("greet", "inputs: [who]\nsteps: …").unsafe_local();
//! let out = p.infra().args(["run", "greet", "--input", "who=x"]).output()?;
//! let engine = p.engine();
//! let session = p.mcp().await;
//! ```

use std::path::Path;
use std::sync::Arc;

pub struct Project {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Project {
    pub fn new() -> Self {
        Project {
            dir: tempfile::tempdir().expect("a temporary profiles directory"),
            env: Vec::new(),
        }
    }

    /// The profiles directory (also the working directory of every command).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A project runbook, `runbooks/<name>.yaml`.
    pub fn runbook(self, name: &str, yaml: &str) -> Self {
        self.file(&format!("runbooks/{name}.yaml"), yaml)
    }

    /// The targets file, `targets.json`.
    pub fn targets(self, targets: &serde_json::Value) -> Self {
        self.file("targets.json", &targets.to_string())
    }

    /// Any file under the profiles directory, its directories made as needed.
    pub fn file(self, rel: &str, contents: &str) -> Self {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        self
    }

    /// One environment variable of every command, engine and session.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `INFRA_UNSAFE_LOCAL=1`: local shell and files allowed.
    pub fn unsafe_local(self) -> Self {
        self.env("INFRA_UNSAFE_LOCAL", "1")
    }

    fn var(&self, name: &str) -> Option<String> {
        if name == "MCP_PROFILES_DIR" {
            return Some(self.path().display().to_string());
        }
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The `infra` binary in a clean environment: the profiles directory, this project's variables,
    /// `NO_COLOR`, and `PATH`.
    pub fn infra(&self) -> assert_cmd::Command {
        let mut c = crate::infra_in(self.path(), self.path());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// The same, as a plain `std::process::Command`, for a test that spawns it and acts while it runs.
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("infra"));
        c.env_clear()
            .env("MCP_PROFILES_DIR", self.path())
            .env("NO_COLOR", "1")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.path());
        c
    }

    /// The engine as the binary would build it here: the configuration from this project's
    /// environment, the catalog with the project's runbooks.
    pub fn engine(&self) -> engine::run::Engine {
        let config = engine::ctx::Config::from_env(&|k| self.var(k), self.path());
        let catalog = engine::Catalog::load(&engine::CatalogOptions {
            profiles_dir: Some(config.profiles_dir.clone()),
            runbooks_path: config.runbooks_path.clone(),
        });
        engine::run::Engine::new(config, Arc::new(catalog))
    }

    /// An MCP session with the binary, over its stdio.
    pub async fn mcp(&self) -> crate::mcp::Session {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        crate::mcp::start_with(self.path(), false, &env).await
    }
}
