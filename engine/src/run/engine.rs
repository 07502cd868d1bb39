//! The engine value: one per process, holding the configuration, the catalog, the audit log, the
//! store, the redactor, session state and the connection pools; and the `Host` actions see of it.

use crate::error::ErrorKind;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::*;
use crate::actions::state::Session;
use crate::actions::{ActionError, Host, Nested, NestedOutcome, Pools};
use crate::catalog::Catalog;
use crate::ctx::Config;
use crate::record::evidence::SessionJournal;
use crate::record::{Audit, Journal, Redactor};
use crate::store::{LazyStore, Store, StoreError};

/// One engine per process: configuration, runbooks, the audit log, the store and the redactor.
#[derive(Debug)]
pub struct Engine {
    pub(super) config: Config,
    pub(super) catalog: std::sync::RwLock<Arc<Catalog>>,
    pub(super) audit: Audit,
    pub(super) redactor: Arc<Redactor>,
    pub(super) session: Session,
    pub(super) store: Arc<LazyStore>,
    pub(super) pools: Pools,
    /// What may run: `<profiles>/policy.yaml` and `INFRA_READ_ONLY`, read once, here.
    pub(super) policy: crate::policy::Policy,
    /// Approvals this engine used: never used again, even if the store is set back.
    pub(super) used_approvals: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Approvals a person gave in the MCP client, by digest (`gate.rs`): this process's only.
    pub(super) elicited: std::sync::Mutex<std::collections::HashMap<String, gate::Elicited>>,
    /// This process's journal of single calls, made on the first one.
    calls: std::sync::Mutex<Option<SessionJournal>>,
    /// Whether the profiles directory's `.gitignore` was seen (checked once per engine).
    prepared: std::sync::atomic::AtomicBool,
}

impl Engine {
    pub fn new(config: Config, catalog: Arc<Catalog>) -> Self {
        let store = Arc::new(LazyStore::new(config.store_path()));
        let policy = crate::policy::Policy::load(&config.profiles_dir, config.read_only)
            .canonical_tools(crate::actions::canonical_tool);
        let audit = Audit::new(config.audit_path())
            .with_keeper(store.clone())
            .with_key(config.audit_key.clone())
            .with_rotation(Some(policy.audit_rotate_bytes()));
        let redactor = Arc::new(Redactor::new());
        if let Some(key) = &config.audit_key {
            redactor.add(&key.as_text());
        }
        Engine {
            policy,
            used_approvals: Default::default(),
            elicited: Default::default(),
            config,
            catalog: std::sync::RwLock::new(catalog),
            audit,
            redactor,
            session: Session::default(),
            store,
            pools: Pools::default(),
            calls: std::sync::Mutex::new(None),
            prepared: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A journal for one single call: its place at the end of this process's calls journal
    /// (`runs/.calls/`), which the first call creates.
    pub(super) fn call_journal(&self) -> std::io::Result<Journal> {
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if calls.is_none() {
            let dir = self.config.artifacts_root.join("runs/.calls");
            *calls = Some(SessionJournal::create(&dir)?);
        }
        match calls.as_ref() {
            Some(c) => c.journal(),
            None => Err(std::io::Error::other("no calls journal")),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The policy this engine runs under (read when it was made).
    pub fn policy(&self) -> &crate::policy::Policy {
        &self.policy
    }
    /// The runbooks as of the last load (a snapshot: later reloads do not change it).
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(
            &self
                .catalog
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Saves a checked runbook among the project's runbooks (audited first) and reloads the catalog.
    pub fn save_runbook(
        &self,
        name: &str,
        text: &str,
        front_end: &str,
    ) -> Result<PathBuf, crate::catalog::WriteError> {
        self.refuse_if_read_only("upsert", name, front_end)?;
        let path =
            crate::catalog::save_project_runbook(&self.config, &self.audit, name, text, front_end)?;
        self.reload_catalog();
        Ok(path)
    }

    /// Removes a project runbook's own file (audited first) and reloads the catalog.
    pub fn delete_runbook(
        &self,
        name: &str,
        path: &std::path::Path,
        front_end: &str,
    ) -> Result<(), crate::catalog::WriteError> {
        self.refuse_if_read_only("delete", name, front_end)?;
        crate::catalog::delete_project_runbook(&self.audit, name, path, front_end)?;
        self.reload_catalog();
        Ok(())
    }

    /// In read-only mode, a write to a project runbook is refused (and audited with the rule) before
    /// anything is written.
    fn refuse_if_read_only(
        &self,
        action: &str,
        name: &str,
        front_end: &str,
    ) -> Result<(), crate::catalog::WriteError> {
        if !self.policy.read_only() {
            return Ok(());
        }
        let rule = if self.policy.env_read_only {
            "INFRA_READ_ONLY"
        } else {
            "read_only"
        };
        let message = format!(
            "read-only mode (policy rule `{rule}`) refuses to {action} the project runbook `{name}`; nothing was written"
        );
        let rec = crate::record::AuditRecord {
            tool: Some("runbook".into()),
            action: Some(action.into()),
            runbook: Some(name.into()),
            front_end: Some(front_end.into()),
            effect: Some("write".into()),
            policy: Some(serde_json::json!({"decision": "deny", "rule": rule, "reason": message})),
            error: Some(serde_json::json!({"kind": "refused", "message": message})),
            ..crate::record::AuditRecord::new(crate::record::AuditKind::Refused)
        };
        self.audit
            .record(&rec, true)
            .map_err(crate::catalog::WriteError::Audit)?;
        Err(crate::catalog::WriteError::ReadOnly(message))
    }

    /// Reloads the runbooks from the configured places (after a project runbook was written or removed).
    pub fn reload_catalog(&self) {
        let fresh = Arc::new(Catalog::load(&crate::catalog::CatalogOptions {
            profiles_dir: Some(self.config.profiles_dir.clone()),
            runbooks_path: self.config.runbooks_path.clone(),
        }));
        *self
            .catalog
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }
    pub fn audit(&self) -> &Audit {
        &self.audit
    }
    /// SSH sessions, HTTP agents and PostgreSQL clients, shared by every call and step of this engine.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Creates the profiles directory with a `.gitignore` for what infra writes there (evidence, audit,
    /// store), so a project's `.infra/` shows only its runbooks and configuration to git.
    pub(super) fn prepare_profiles_dir(&self) {
        use std::sync::atomic::Ordering;
        if self.prepared.swap(true, Ordering::Relaxed) {
            return;
        }
        let dir = &self.config.profiles_dir;
        let ignore = dir.join(".gitignore");
        if !ignore.exists() && std::fs::create_dir_all(dir).is_ok() {
            let _ = std::fs::write(
                &ignore,
                "# written by infra: run evidence, the audit log and the store stay out of git
/runs/
/audit.jsonl
/store.sqlite3*
/.infra-cache/
/.gitignore
",
            );
        }
    }

    /// The store, opened on first use.
    pub fn store(&self) -> Result<&Store, StoreError> {
        self.store.get()
    }

    /// Writes what this process holds back: the run index rows of reads it queued, and the audit
    /// head that waits. For an exit that skips destructors (`process::exit` on a signal).
    pub fn flush_records(&self) {
        self.audit.flush_head();
        if let Some(s) = self.store.opened() {
            s.flush();
        }
    }

    /// Checks the audit log: its chain, and its end against the head the store kept (a log cut back,
    /// emptied or deleted is reported). The store is not created when there is none.
    /// With a `checkpoint` (`infra audit checkpoint`), the log must also still hold that record with
    /// that hash.
    pub fn verify_audit(
        &self,
        checkpoint: Option<crate::record::audit::Head>,
    ) -> std::io::Result<crate::record::audit::Verified> {
        use crate::record::audit::Anchor;
        self.audit.flush_head();
        // read while the log is locked for verify's snapshot: a head kept by a record appended
        // after it would look like a cut
        let anchor = || {
            if !self.store.path().exists() {
                return Anchor::NoStore;
            }
            let read = self
                .store()
                .and_then(|s| Ok((s.audit_head()?, s.runs_count()?)));
            match read {
                Ok((head, runs)) => Anchor::Store { head, runs },
                Err(e) => Anchor::Unreadable(e.to_string()),
            }
        };
        self.audit.verify_reading(checkpoint.as_ref(), anchor)
    }

    /// The audit log's head, to keep elsewhere: its last record, once the whole log verifies.
    pub fn audit_checkpoint(&self) -> Result<crate::record::audit::Head, String> {
        let v = self.verify_audit(None).map_err(|e| {
            format!(
                "cannot read the audit log `{}`: {e}",
                self.audit.path().display()
            )
        })?;
        if let Some(p) = v.problem {
            return Err(format!(
                "the audit log does not verify, so it has no head to keep: record {} (line {}): {}",
                p.seq, p.line, p.message
            ));
        }
        v.last
            .ok_or_else(|| "the audit log has no records yet: there is no head to keep".into())
    }
}

impl Host for Engine {
    fn config(&self) -> &Config {
        &self.config
    }
    fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }
    fn session(&self) -> &Session {
        &self.session
    }
    fn store(&self) -> Result<&Store, StoreError> {
        self.store.get()
    }
    fn pools(&self) -> &Pools {
        &self.pools
    }
    fn run_nested(
        &self,
        runbook: Nested<'_>,
        input: &Map<String, Value>,
        cancel: &CancelToken,
        depth: usize,
        grant: Option<&crate::approval::Grant>,
    ) -> Result<NestedOutcome, ActionError> {
        let rb = self.nested_runbook(runbook)?;
        let o = self
            .run_runbook(rb, input, cancel, depth, grant)
            .map_err(|e| ActionError::new(ErrorKind::InvalidArgs, e))?;
        Ok(NestedOutcome {
            run_id: o.run_id,
            runbook: o.runbook,
            status: o.status,
            outputs: o.outputs,
            error: o.error.map(|e| e.message),
        })
    }

    fn plan_nested(
        &self,
        runbook: Nested<'_>,
        input: &Map<String, Value>,
    ) -> Result<Value, ActionError> {
        let rb = self.nested_runbook(runbook)?;
        let rendered = crate::request::prepare(&self.catalog(), &rb, input)
            .and_then(|(plan, inputs)| plan.render(&inputs))
            .map_err(|d| ActionError::new(ErrorKind::InvalidArgs, join(&d)))?;
        Ok(rendered.json)
    }
}
