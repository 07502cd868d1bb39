//! What an action may use of the engine that runs it, and nothing more: the configuration, the
//! redactor, session state, the store, the connection pools, and a way to run a runbook one level
//! deeper. The executor implements [`Host`]; actions never see the executor, the plan or the catalog.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::ActionError;
use super::state::Session;
use crate::ctx::Config;
use crate::exec::CancelToken;
use crate::record::Redactor;
use crate::record::evidence::Status;
use crate::store::{Store, StoreError};

/// The long-lived connections actions share: one SSH session per target, HTTP agents per egress policy,
/// idle PostgreSQL clients per connection.
#[derive(Debug, Default)]
pub struct Pools {
    pub ssh: super::ssh::session::Pool,
    pub http: super::http::Agents,
    pub psql: super::psql::conn::Pool,
}

/// Which runbook a nested run runs.
#[derive(Debug, Clone, Copy)]
pub enum Nested<'a> {
    /// A runbook of the catalog, by name.
    Name(&'a str),
    /// A runbook given whole in the call (a JSON object).
    Inline(&'a Value),
}

/// How a nested run ended.
#[derive(Debug, Clone)]
pub struct NestedOutcome {
    pub run_id: String,
    pub runbook: String,
    pub status: Status,
    pub outputs: Value,
    /// Why it did not succeed.
    pub error: Option<String>,
}

/// What actions get from the engine that runs them.
pub trait Host: Send + Sync + std::fmt::Debug {
    fn config(&self) -> &Config;
    fn redactor(&self) -> &Arc<Redactor>;
    /// In-memory state of this process (`scope: session`).
    fn session(&self) -> &Session;
    /// Persistent state, the run index and jobs (opened on first use).
    fn store(&self) -> Result<&Store, StoreError>;
    fn pools(&self) -> &Pools;
    /// Finds, checks and runs a runbook at `depth` (one more than the calling step's). Unknown
    /// runbooks are `not_found`; runbooks or inputs that do not check are `invalid_args`. `grant` is
    /// the approval of the run the calling step is part of: it covers the nested run too.
    fn run_nested(
        &self,
        runbook: Nested<'_>,
        input: &Map<String, Value>,
        cancel: &CancelToken,
        depth: usize,
        grant: Option<&crate::approval::Grant>,
    ) -> Result<NestedOutcome, ActionError>;
    /// Finds and checks a runbook as `run_nested` would, and renders its plan for these inputs without
    /// running anything (`runbook.run` with `dry_run`).
    fn plan_nested(
        &self,
        runbook: Nested<'_>,
        input: &Map<String, Value>,
    ) -> Result<Value, ActionError>;
}
