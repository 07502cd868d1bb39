//! The infra runbook language: parse YAML or JSON into a spanned tree, check its shape against the runbook
//! JSON Schema, analyze it into a [`Runbook`], and render templates.
//!
//! This crate does no I/O beyond reading the text it is given, and executes nothing.
//!
//! Data flow: [`load::load`] = [`parse::parse`] (spanned tree) → [`schema::check_runbook`] (JSON Schema,
//! errors mapped to YAML nodes) → [`analyze::analyze`] (ids, needs, inputs, template references).

pub mod analyze;
pub mod diagnostic;
pub mod legacy;
pub mod load;
pub mod parse;
pub mod raw;
pub mod runbook;
pub mod schema;
pub mod shell;
pub mod source;
pub mod template;

pub use diagnostic::{Code, Diagnostic, Diagnostics, Severity};
pub use load::{Loaded, coerce_input, load, load_value, resolve_inputs};
pub use raw::{Effect, Flow, InputType};
pub use runbook::{Input, Phase, Runbook, Step, StepId, TemplateUse};
pub use source::{LineCol, SourceFile, Span};
