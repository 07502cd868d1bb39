//! The infra runbook language: parse YAML or JSON into a spanned tree, check its shape against the runbook
//! JSON Schema, analyze it into a [`Runbook`], and render templates.
//!
//! This crate does no I/O beyond reading the text it is given, and executes nothing.

pub mod diagnostic;
pub mod source;
pub mod template;

pub use diagnostic::{Code, Diagnostic, Diagnostics, Severity};
pub use source::{LineCol, SourceFile, Span};
