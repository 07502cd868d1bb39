//! Diagnostics: user-fixable problems as data, rendered like rustc for people and as JSON for tools.

use std::fmt;

use serde::Serialize;

use crate::source::{SourceFile, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// The stable, kebab-case code of a diagnostic. Codes never change meaning once published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    YamlSyntax,
    DuplicateKey,
    InputTooLarge,
    UnknownKey,
    MissingKey,
    SchemaViolation,
    UnknownStep,
    DuplicateStepId,
    DependencyCycle,
    UnknownTool,
    UnknownAction,
    InvalidArgs,
    UndefinedInput,
    UndefinedVariable,
    TemplateSyntax,
    UnsafeInterpolation,
    SqlInterpolation,
    QuotedInterpolation,
    EffectExceedsDeclared,
    UnknownRunbook,
    InvalidInput,
    /// A runbook file named on the command line or in a catalog is not there.
    FileNotFound,
    /// A runbook file is there but cannot be read (permissions, a directory, …).
    FileUnreadable,
    /// The original product's runbook syntax: translated (a warning showing the new form), or, where it
    /// has no equivalent, an error saying what to write instead.
    DeprecatedSyntax,
}

impl Code {
    pub const ALL: &'static [Code] = &[
        Code::YamlSyntax,
        Code::DuplicateKey,
        Code::InputTooLarge,
        Code::UnknownKey,
        Code::MissingKey,
        Code::SchemaViolation,
        Code::UnknownStep,
        Code::DuplicateStepId,
        Code::DependencyCycle,
        Code::UnknownTool,
        Code::UnknownAction,
        Code::InvalidArgs,
        Code::UndefinedInput,
        Code::UndefinedVariable,
        Code::TemplateSyntax,
        Code::UnsafeInterpolation,
        Code::SqlInterpolation,
        Code::QuotedInterpolation,
        Code::EffectExceedsDeclared,
        Code::UnknownRunbook,
        Code::InvalidInput,
        Code::FileNotFound,
        Code::FileUnreadable,
        Code::DeprecatedSyntax,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "yaml-syntax",
            Code::DuplicateKey => "duplicate-key",
            Code::InputTooLarge => "input-too-large",
            Code::UnknownKey => "unknown-key",
            Code::MissingKey => "missing-key",
            Code::SchemaViolation => "schema-violation",
            Code::UnknownStep => "unknown-step",
            Code::DuplicateStepId => "duplicate-step-id",
            Code::DependencyCycle => "dependency-cycle",
            Code::UnknownTool => "unknown-tool",
            Code::UnknownAction => "unknown-action",
            Code::InvalidArgs => "invalid-args",
            Code::UndefinedInput => "undefined-input",
            Code::UndefinedVariable => "undefined-variable",
            Code::TemplateSyntax => "template-syntax",
            Code::UnsafeInterpolation => "unsafe-interpolation",
            Code::SqlInterpolation => "sql-interpolation",
            Code::QuotedInterpolation => "quoted-interpolation",
            Code::EffectExceedsDeclared => "effect-exceeds-declared",
            Code::UnknownRunbook => "unknown-runbook",
            Code::InvalidInput => "invalid-input",
            Code::FileNotFound => "file-not-found",
            Code::FileUnreadable => "file-unreadable",
            Code::DeprecatedSyntax => "deprecated-syntax",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A secondary location with a note.
#[derive(Clone, Debug)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// One problem, located in one source file.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub file: Option<SourceFile>,
    /// The primary location; `None` for problems that belong to no place in a file.
    pub span: Option<Span>,
    /// Text under the primary caret.
    pub label: Option<String>,
    pub labels: Vec<Label>,
    pub help: Option<String>,
    /// The JSON path of the offending value (`/steps/0/args/command`), where it has one.
    pub path: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            file: None,
            span: None,
            label: None,
            labels: Vec::new(),
            help: None,
            path: None,
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at(mut self, file: &SourceFile, span: Span) -> Self {
        self.file = Some(file.clone());
        self.span = Some(span);
        self
    }

    pub fn in_file(mut self, file: &SourceFile) -> Self {
        self.file = Some(file.clone());
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col`, or just the file name, or nothing.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        Some(match self.span {
            Some(span) => format!("{}:{}", file.name(), file.line_col(span.start)),
            None => file.name().to_owned(),
        })
    }

    /// What diagnostics are sorted by: file name (none first), position, severity, code, message.
    /// Borrowed, so sorting allocates nothing per diagnostic.
    fn sort_key(&self) -> (&str, usize, Severity, Code, &str) {
        (
            self.file.as_ref().map_or("", SourceFile::name),
            self.span.map_or(0, |s| s.start),
            self.severity,
            self.code,
            &self.message,
        )
    }

    /// The JSON form used by `--format json` and MCP.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        });
        if let Some(file) = &self.file {
            v["file"] = file.name().into();
            if let Some(span) = self.span {
                let start = file.line_col(span.start);
                let end = file.line_col(span.end);
                v["line"] = start.line.into();
                v["column"] = start.col.into();
                v["end_line"] = end.line.into();
                v["end_column"] = end.col.into();
                v["span"] = serde_json::json!({"start": span.start, "end": span.end});
            }
        }
        if let Some(label) = &self.label {
            v["label"] = label.as_str().into();
        }
        if let Some(help) = &self.help {
            v["help"] = help.as_str().into();
        }
        if let Some(path) = &self.path {
            v["path"] = path.as_str().into();
        }
        if !self.labels.is_empty() {
            let file = self.file.as_ref();
            v["labels"] = self
                .labels
                .iter()
                .map(|l| {
                    let mut o = serde_json::json!({"message": l.message});
                    if let Some(f) = file {
                        let lc = f.line_col(l.span.start);
                        o["line"] = lc.line.into();
                        o["column"] = lc.col.into();
                    }
                    o
                })
                .collect();
        }
        v
    }
}

impl fmt::Display for Diagnostic {
    /// One line: `file:line:col: error[code]: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if let Some(loc) = self.location() {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{sev}[{}]: {}", self.code, self.message)
    }
}

/// A collection of diagnostics, kept sorted by file and position on output.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.items.extend(other);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Sorted by file, position, severity and code; exact duplicates removed.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        // stable, as `sort_by_cached_key` is: equal keys keep the order they were found in
        self.items.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.items.dedup_by(|a, b| {
            a.code == b.code
                && a.span == b.span
                && a.message == b.message
                && a.file_name() == b.file_name()
        });
        self.items
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }
}

impl Diagnostic {
    fn file_name(&self) -> Option<&str> {
        self.file.as_ref().map(SourceFile::name)
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.into_sorted().into_iter()
    }
}

impl FromIterator<Diagnostic> for Diagnostics {
    fn from_iter<I: IntoIterator<Item = Diagnostic>>(iter: I) -> Self {
        Diagnostics {
            items: iter.into_iter().collect(),
        }
    }
}

/// The closest candidate to `name` by edit distance, if it is close enough to be a likely typo; of
/// equally close ones the first in byte order, so the answer never depends on the candidates' order
/// (many come from hash maps).
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        let dist = strsim::levenshtein(name, c);
        let close = score >= 0.8 || dist <= (name.len().max(c.len()) / 3).max(1);
        if close && best.is_none_or(|(s, b)| score > s || (score == s && c < b)) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `help: did you mean `x`?` when a near name exists.
pub fn suggestion<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    did_you_mean(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        let keys = ["steps", "inputs", "name", "description"];
        assert_eq!(did_you_mean("stpes", keys), Some("steps"));
        assert_eq!(did_you_mean("input", keys), Some("inputs"));
        assert_eq!(did_you_mean("zzzzzz", keys), None);
        // a tie names the same candidate whatever the order
        assert_eq!(
            did_you_mean("deply", ["deplox", "deploy2", "deploy"]),
            Some("deploy")
        );
        assert_eq!(did_you_mean("ab", ["ad", "ac"]), Some("ac"));
        assert_eq!(did_you_mean("ab", ["ac", "ad"]), Some("ac"));
    }

    #[test]
    fn codes_are_kebab_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(
                s.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-'),
                "{s}"
            );
            assert!(seen.insert(s), "duplicate code {s}");
        }
    }

    #[test]
    fn many_diagnostics_render_in_halves_as_one_by_one() {
        let text: String = (0..SPLIT_RENDER + 1)
            .map(|i| format!("k{i}: v\n"))
            .collect();
        let file = SourceFile::new("t.yaml", text);
        let diags: Vec<Diagnostic> = (0..=SPLIT_RENDER)
            .map(|i| {
                let at = file.text().find(&format!("k{i}:")).expect("key");
                let d = if i % 3 == 0 {
                    Diagnostic::warning(Code::DeprecatedSyntax, format!("w{i}"))
                } else {
                    Diagnostic::error(Code::UnknownKey, format!("e{i}")).help("h")
                };
                d.at(&file, Span::new(at, at + 2))
            })
            .collect();
        let opts = RenderOptions { color: false };
        let all = render_all(&diags, opts);
        let one_by_one: String = diags
            .iter()
            .map(|d| format!("{}\n\n", render(d, opts)))
            .collect();
        assert!(all.starts_with(&one_by_one), "{all}");
        assert_eq!(
            &all[one_by_one.len()..],
            "171 errors and 86 warnings emitted\n"
        );
    }
}

/// Options for [`render`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions {
    /// ANSI colours (for a terminal).
    pub color: bool,
}

/// Renders one diagnostic the way rustc and cargo do: title with code, `-->` location, source line, carets,
/// and a `help:` line.
pub fn render(d: &Diagnostic, opts: RenderOptions) -> String {
    use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

    let level = match d.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let title = level.primary_title(d.message.as_str()).id(d.code.as_str());
    let mut group: Group<'_> = match (&d.file, d.span) {
        (Some(file), Some(span)) => {
            // only the lines the annotations cover, so a file with thousands of diagnostics is not
            // laid out once per diagnostic
            let lo = d
                .labels
                .iter()
                .map(|l| l.span.start)
                .fold(span.start, usize::min);
            let hi = d
                .labels
                .iter()
                .map(|l| l.span.end)
                .fold(span.end, usize::max);
            let (window, first_line) = file.lines_around(lo, hi);
            let text = &file.text()[window.clone()];
            let clamp = |s: Span| {
                let end = s.end.clamp(window.start, window.end) - window.start;
                let start = s.start.clamp(window.start, window.end) - window.start;
                start.min(end)..end
            };
            let mut primary = AnnotationKind::Primary.span(clamp(span));
            if let Some(label) = &d.label {
                primary = primary.label(label.as_str());
            }
            let snippet = Snippet::source(text)
                .line_start(first_line)
                .path(file.name())
                .annotation(primary)
                .annotations(d.labels.iter().map(|l| {
                    AnnotationKind::Context
                        .span(clamp(l.span))
                        .label(l.message.as_str())
                }));
            title.element(snippet)
        }
        (Some(file), None) => title.element(Level::NOTE.message(format!("in {}", file.name()))),
        _ => Group::with_title(title),
    };
    if let Some(path) = &d.path
        && d.span.is_none()
    {
        group = group.element(Level::NOTE.message(format!("at `{path}`")));
    }
    if let Some(help) = &d.help {
        group = group.element(Level::HELP.message(help.as_str()));
    }
    let renderer = if opts.color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    renderer.render(&[group])
}

/// From this many diagnostics, [`render_all`] renders the second half on a scoped thread.
const SPLIT_RENDER: usize = 256;

/// Renders all diagnostics, sorted, with a closing count line. Many are rendered in two halves at
/// once, joined in their order.
pub fn render_all(diags: &[Diagnostic], opts: RenderOptions) -> String {
    let each = |part: &[Diagnostic]| {
        let mut out = String::new();
        for d in part {
            out.push_str(&render(d, opts));
            out.push_str("\n\n");
        }
        out
    };
    let mut out = if diags.len() < SPLIT_RENDER {
        each(diags)
    } else {
        let (first, second) = diags.split_at(diags.len() / 2);
        let (mut out, rest) = std::thread::scope(|s| {
            let rest = s.spawn(|| each(second));
            (each(first), rest.join())
        });
        out.push_str(&rest.unwrap_or_else(|p| std::panic::resume_unwind(p)));
        out
    };
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors + warnings > 0 {
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        out.push_str(&match (errors, warnings) {
            (0, w) => format!("{} emitted\n", plural(w, "warning")),
            (e, 0) => format!("{} emitted\n", plural(e, "error")),
            (e, w) => format!(
                "{} and {} emitted\n",
                plural(e, "error"),
                plural(w, "warning")
            ),
        });
    }
    out
}
