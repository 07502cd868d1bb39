//! The only place that writes to stdout and stderr: human text and JSON.

use std::io::{IsTerminal, Write};

use dsl::Diagnostic;
use dsl::diagnostic::{RenderOptions, render_all};

/// Writes text to stdout (a closed pipe is not an error worth a panic).
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// Writes text to stderr.
pub fn err(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
}

/// Pretty JSON on stdout, with a final newline.
pub fn json(v: &serde_json::Value) {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    out(&s);
}

/// Diagnostics rustc-style on stderr (coloured on a terminal, unless `NO_COLOR` is set).
pub fn diagnostics(diags: &[Diagnostic]) {
    if diags.is_empty() {
        return;
    }
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    err(&render_all(diags, RenderOptions { color }));
}

/// Diagnostics as a JSON array.
pub fn diagnostics_json(diags: &[Diagnostic]) -> serde_json::Value {
    serde_json::Value::Array(diags.iter().map(Diagnostic::to_json).collect())
}
