//! The infra engine: compiles checked runbooks (and single calls) into sealed plans, and owns the action
//! registry and the runbook catalog.
//!
//! It never sees YAML text, MCP or clap: it takes what `dsl` checked.

pub mod actions;
pub mod approval;
pub mod plan;

pub use plan::{CompileOptions, Plan, PlanNode, Resolve, compile, compile_call};
pub mod capability;
pub mod catalog;
pub mod profiles;

pub use catalog::{Catalog, CatalogOptions, Origin};
pub mod context;
pub mod ctx;
pub mod error;
pub mod exec;
pub mod git;
pub mod intent;
pub mod policy;
pub mod record;
pub mod report;
pub mod request;
pub mod retention;
pub mod run;
pub mod store;
pub mod targets;
