//! `fix`: a file in the original's syntax, written in ours. Text in, text out; the caller writes it.

use crate::diagnostic::{Code, Diagnostic};
use crate::load::{is_map_form, load};
use crate::parse::{NodeValue, parse};
use crate::source::SourceFile;

use super::{is_json, translate};

/// A file rewritten into the current syntax.
#[derive(Debug)]
pub struct Fixed {
    /// The new text: pretty JSON for a JSON file, YAML for a YAML one.
    pub text: String,
    /// What changed: the `deprecated-syntax` warnings of the old text, each showing its new form.
    pub changes: Vec<Diagnostic>,
}

/// Rewrites a file's original syntax into ours. `Ok(None)`: nothing to rewrite. `Err`: the diagnostics
/// that stop it (a file with errors is never rewritten; neither is a YAML file with comments, which
/// the rewrite would lose).
pub fn fix(file: &SourceFile, stem: Option<&str>) -> Result<Option<Fixed>, Vec<Diagnostic>> {
    let loaded = load(file, stem);
    if loaded.has_errors() {
        return Err(loaded.diagnostics);
    }
    let changes: Vec<Diagnostic> = loaded
        .diagnostics
        .into_iter()
        .filter(|d| d.code == Code::DeprecatedSyntax)
        .collect();
    if changes.is_empty() {
        return Ok(None);
    }
    let json = is_json(file);
    if !json && file.text().contains('#') {
        return Err(vec![
            Diagnostic::error(
                Code::DeprecatedSyntax,
                "this YAML file may hold comments, which rewriting it would lose",
            )
            .in_file(file)
            .help("make the changes the warnings show by hand"),
        ]);
    }
    let mut root = parse(file).map_err(|d| vec![d])?;
    let map_form = matches!(root.value, NodeValue::Map(_)) && is_map_form(&root);
    let _ = translate(file, &mut root, map_form);
    let value = root.to_json();
    let text = if json {
        serde_json::to_string_pretty(&value).map(|t| t + "\n")
    } else {
        serde_saphyr::to_string(&value).map_err(|e| serde_json::Error::io(std::io::Error::other(e)))
    }
    .map_err(|e| {
        vec![
            Diagnostic::error(
                Code::DeprecatedSyntax,
                format!("cannot write the new form: {e}"),
            )
            .in_file(file),
        ]
    })?;
    let again = load(&SourceFile::new(file.name(), text.clone()), stem);
    let left: Vec<Diagnostic> = again
        .diagnostics
        .into_iter()
        .filter(|d| d.is_error() || d.code == Code::DeprecatedSyntax)
        .collect();
    if !left.is_empty() {
        return Err(left);
    }
    Ok(Some(Fixed { text, changes }))
}
