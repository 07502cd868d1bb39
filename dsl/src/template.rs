//! Templates: a static scan (what a template references, how each interpolation ends) and rendering
//! with Tera in three modes (plain, shell, SQL).
//!
//! Tera does not expose its syntax tree (its one analysis, `Tera::get_template_variables`, gives
//! top-level names without positions), so the references the compiler needs (`input.x`, `steps.y`)
//! come from a small scanner over the template's tags. Tera 2 stays the authority for syntax and
//! rendering: errors carry byte ranges, undefined variables fail, and `set_escape_fn` with
//! `render_str_to` gives one escape function per mode, writing into the `Bounded` writer.
//!
//! Shell mode: the escape function (and the `quote` filter) writes a NUL-delimited marker per value
//! (`write_shell_marker`); `place_shell_values` then finds each marker's place in the rendered
//! command with `shell::places` and refuses the render if one stands inside quotes, backquotes,
//! `$'…'`, `$((…))` or a here-document, else replaces it with the value POSIX-quoted (`'…'`, with
//! `'` written `'\''`). `| raw` opts out (an `unsafe-interpolation` warning at compile time, found
//! by `last_top_level_filter`); `raw` and `ident` values are not escaped again. SQL mode: only `|
//! ident` (`"…"`, `"` doubled) may interpolate; `refuse_sql` fails anything else. `Renderer::check`
//! renders against an empty context to catch unknown filters; loops over constant ranges run in
//! full (output is bounded, iterations are not).

use std::io;

use serde_json::Value;
use tera::{Context, ErrorKind, Kwargs, State, Tera, TeraResult};

/// The longest template string accepted (bytes). Longer ones are refused before any parsing.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The longest rendered output kept (bytes); a render that writes more fails.
pub const MAX_RENDER_BYTES: usize = 16 * 1024 * 1024;

/// How interpolated values are written into the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As they are; a string that is exactly one `{{ expr }}` yields the typed value.
    Plain,
    /// POSIX-shell-quoted; `| raw` opts out.
    Shell,
    /// Refused unless it goes through `| ident` (identifier quoting) or `| raw`.
    Sql,
}

/// Whether a string is a template at all (cheap check before any scanning).
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// A variable reference found by [`scan`]: `root` (`input`, `steps`, …) and its first key, if literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub root: String,
    pub key: Option<String>,
    /// Byte range of the reference in the template text.
    pub start: usize,
    pub end: usize,
}

/// One `{{ … }}` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpolation {
    pub start: usize,
    pub end: usize,
    /// The last filter applied at the top level of the expression (`raw` in `{{ x | raw }}`).
    pub last_filter: Option<String>,
}

/// What a template uses, found without rendering it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub references: Vec<Reference>,
    pub interpolations: Vec<Interpolation>,
    /// The expression, when the whole template is exactly one `{{ expr }}`.
    pub single_expression: Option<String>,
    /// Every block is a `{{ path | filter … }}` of a form the scanner fully checks (so Tera's own syntax
    /// check can be skipped).
    pub simple: bool,
}

/// A problem in a template, located by byte range in the template text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub start: usize,
    pub end: usize,
}

impl TemplateError {
    fn new(message: impl Into<String>, start: usize, end: usize) -> Self {
        TemplateError {
            message: message.into(),
            start,
            end,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Str(String),
    Num,
    Punct(&'a str),
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "elif",
    "endif",
    "for",
    "endfor",
    "set",
    "set_global",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "loop",
    "filter",
    "endfilter",
    "raw",
    "endraw",
    "break",
    "continue",
    "include",
    "block",
    "endblock",
    "extends",
    "macro",
    "endmacro",
    "with",
    "__tera_context",
];

fn tokenize(src: &str, base: usize) -> Result<Vec<(Tok<'_>, usize, usize)>, TemplateError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(&src[s..i]), base + s, base + i));
        } else if c.is_ascii_digit() {
            let s = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                // `1.5` is one number, `x.0` never starts here
                i += 1;
            }
            out.push((Tok::Num, base + s, base + i));
        } else if c == b'"' || c == b'\'' || c == b'`' {
            let s = i;
            i += 1;
            let mut value = String::new();
            loop {
                let Some(&b) = bytes.get(i) else {
                    return Err(TemplateError::new(
                        "unterminated string",
                        base + s,
                        base + src.len(),
                    ));
                };
                if b == c {
                    i += 1;
                    break;
                }
                if b == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let ch_len = src[i..].chars().next().map_or(1, char::len_utf8);
                value.push_str(&src[i..i + ch_len]);
                i += ch_len;
            }
            out.push((Tok::Str(value), base + s, base + i));
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let len = if matches!(two, "==" | "!=" | "<=" | ">=" | "?." | "?[" | "//" | "**") {
                2
            } else {
                src[i..].chars().next().map_or(1, char::len_utf8)
            };
            out.push((Tok::Punct(&src[i..i + len]), base + i, base + i + len));
            i += len;
        }
    }
    Ok(out)
}

/// Scans a template: its references, its interpolations and whether it is one single expression.
///
/// Loop variables (`{% for x in … %}`) and `{% set %}` names are local and not reported.
pub fn scan(text: &str) -> Result<Scan, TemplateError> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::new(
            format!(
                "template is {} bytes; the limit is {MAX_TEMPLATE_BYTES}: move large text into an input or an artifact",
                text.len()
            ),
            0,
            0,
        ));
    }
    let mut out = Scan {
        simple: true,
        ..Scan::default()
    };
    let mut locals: Vec<String> = Vec::new();
    let mut pos = 0;
    let mut blocks = 0;
    while let Some(rel) = text[pos..].find('{') {
        let open = pos + rel;
        let kind = text.as_bytes().get(open + 1).copied();
        let close = match kind {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => "#}",
            _ => {
                pos = open + 1;
                continue;
            }
        };
        blocks += 1;
        let mut inner_start = open + 2;
        if text.as_bytes().get(inner_start) == Some(&b'-') {
            inner_start += 1;
        }
        let end = find_close(text, inner_start, close, kind == Some(b'#')).ok_or_else(|| {
            TemplateError::new(
                format!("unclosed `{}`: add `{close}`", &text[open..open + 2]),
                open,
                text.len(),
            )
        })?;
        let mut inner_end = end;
        if inner_end > inner_start && text.as_bytes()[inner_end - 1] == b'-' {
            inner_end -= 1;
        }
        pos = end + 2;
        let inner = &text[inner_start..inner_end];
        match kind {
            Some(b'{') => {
                let toks = tokenize(inner, inner_start)?;
                out.simple &= is_simple_path(&toks);
                collect_refs(&toks, &locals, &mut out.references);
                out.interpolations.push(Interpolation {
                    start: open,
                    end: pos,
                    last_filter: last_top_level_filter(&toks),
                });
                if open == 0 && pos == text.len() && blocks == 1 {
                    out.single_expression = Some(inner.trim().to_owned());
                }
            }
            Some(b'%') => {
                out.simple = false;
                let toks = tokenize(inner, inner_start)?;
                match toks.first().map(|t| &t.0) {
                    Some(Tok::Ident("for")) => {
                        let names: Vec<String> = toks[1..]
                            .iter()
                            .take_while(|t| t.0 != Tok::Ident("in"))
                            .filter_map(|t| match t.0 {
                                Tok::Ident(n) => Some(n.to_owned()),
                                _ => None,
                            })
                            .collect();
                        let rest = toks
                            .iter()
                            .position(|t| t.0 == Tok::Ident("in"))
                            .map_or(toks.len(), |p| p + 1);
                        collect_refs(&toks[rest..], &locals, &mut out.references);
                        locals.extend(names);
                    }
                    Some(Tok::Ident("set" | "set_global")) => {
                        if let Some((Tok::Ident(n), ..)) = toks.get(1) {
                            locals.push((*n).to_owned());
                        }
                        collect_refs(&toks[2.min(toks.len())..], &locals, &mut out.references);
                    }
                    Some(Tok::Ident("raw")) => {
                        // everything up to `{% endraw %}` is literal text
                        match find_endraw(text, pos) {
                            Some(after) => pos = after,
                            None => {
                                return Err(TemplateError::new(
                                    "`{% raw %}` without `{% endraw %}`",
                                    open,
                                    pos,
                                ));
                            }
                        }
                    }
                    _ => collect_refs(&toks, &locals, &mut out.references),
                }
            }
            _ => {}
        }
    }
    if blocks != 1 {
        out.single_expression = None;
    }
    Ok(out)
}

/// Filters that take no arguments and exist in every renderer.
const PLAIN_FILTERS: &[&str] = &[
    "raw",
    "ident",
    "quote",
    "json",
    "safe",
    "upper",
    "lower",
    "trim",
    "length",
    "first",
    "last",
    "str",
    "int",
    "float",
    "keys",
    "values",
    "capitalize",
    "title",
    "reverse",
    "sort",
    "unique",
    "abs",
];

/// `name(.key | [literal])* (| filter)*` with no-argument filters: valid Tera by construction.
fn is_simple_path(toks: &[(Tok<'_>, usize, usize)]) -> bool {
    let mut i = 0;
    match toks.first() {
        Some((Tok::Ident(n), ..)) if !KEYWORDS.contains(n) => i += 1,
        _ => return false,
    }
    loop {
        match (
            toks.get(i).map(|t| &t.0),
            toks.get(i + 1).map(|t| &t.0),
            toks.get(i + 2).map(|t| &t.0),
        ) {
            (Some(Tok::Punct("." | "?.")), Some(Tok::Ident(_)), _) => i += 2,
            (Some(Tok::Punct("[" | "?[")), Some(Tok::Str(_) | Tok::Num), Some(Tok::Punct("]"))) => {
                i += 3
            }
            _ => break,
        }
    }
    while let (Some((Tok::Punct("|"), ..)), Some((Tok::Ident(f), ..))) =
        (toks.get(i), toks.get(i + 1))
    {
        if !PLAIN_FILTERS.contains(f) {
            return false;
        }
        i += 2;
    }
    i == toks.len()
}

fn find_close(text: &str, from: usize, close: &str, comment: bool) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => {
                i += 2;
                continue;
            }
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if !comment && (b == b'"' || b == b'\'' || b == b'`') => quote = Some(b),
            None if text[i..].starts_with(close) => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

fn find_endraw(text: &str, from: usize) -> Option<usize> {
    let mut pos = from;
    while let Some(rel) = text[pos..].find("{%") {
        let open = pos + rel;
        let close = text[open..].find("%}")? + open;
        let inner = text[open + 2..close].trim_matches(|c: char| c == '-' || c.is_whitespace());
        if inner == "endraw" {
            return Some(close + 2);
        }
        pos = close + 2;
    }
    None
}

fn collect_refs(toks: &[(Tok<'_>, usize, usize)], locals: &[String], out: &mut Vec<Reference>) {
    for (i, (tok, start, end)) in toks.iter().enumerate() {
        let Tok::Ident(name) = tok else { continue };
        if KEYWORDS.contains(name) || locals.iter().any(|l| l == name) {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| &toks[p].0);
        if matches!(prev, Some(Tok::Punct("." | "|" | "?.")))
            || matches!(prev, Some(Tok::Ident("is")))
        {
            continue;
        }
        if i >= 2 && toks[i - 1].0 == Tok::Ident("not") && toks[i - 2].0 == Tok::Ident("is") {
            continue;
        }
        if matches!(toks.get(i + 1).map(|t| &t.0), Some(Tok::Punct("(" | "="))) {
            continue;
        }
        let (key, key_end) = match (toks.get(i + 1), toks.get(i + 2), toks.get(i + 3)) {
            (Some((Tok::Punct("." | "?."), ..)), Some((Tok::Ident(k), _, e)), _) => {
                (Some((*k).to_owned()), *e)
            }
            (
                Some((Tok::Punct("[" | "?["), ..)),
                Some((Tok::Str(k), ..)),
                Some((Tok::Punct("]"), _, e)),
            ) => (Some(k.clone()), *e),
            _ => (None, *end),
        };
        out.push(Reference {
            root: (*name).to_owned(),
            key,
            start: *start,
            end: key_end,
        });
    }
}

fn last_top_level_filter(toks: &[(Tok<'_>, usize, usize)]) -> Option<String> {
    let mut depth = 0i32;
    let mut last = None;
    for (i, (tok, ..)) in toks.iter().enumerate() {
        match tok {
            Tok::Punct("(" | "[" | "{") => depth += 1,
            Tok::Punct(")" | "]" | "}") => depth -= 1,
            Tok::Punct("|") if depth == 0 => {
                last = match toks.get(i + 1) {
                    Some((Tok::Ident(f), ..)) => Some((*f).to_owned()),
                    _ => None,
                };
            }
            // an operator after the filter means the filter applies to one operand only
            Tok::Punct(p) if depth == 0 && !matches!(*p, "," | ":" | "=") => last = None,
            Tok::Ident("and" | "or" | "if" | "else" | "in" | "is") if depth == 0 => last = None,
            _ => {}
        }
    }
    last
}

/// POSIX shell quoting: one single-quoted word, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    // writing to a Vec cannot fail
    let _ = write_shell_quoted(s, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

thread_local! {
    /// The values of the shell render in progress on this thread, in the order they were written; the
    /// rendered text holds a marker for each (see [`Renderer::render`]).
    static SHELL_VALUES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A shell value's stand-in in rendered text: NUL, its index, NUL (a command cannot hold NUL itself).
fn write_shell_marker(s: &str, out: &mut dyn io::Write) -> io::Result<()> {
    let n = SHELL_VALUES.with(|v| {
        let mut v = v.borrow_mut();
        v.push(s.to_owned());
        v.len() - 1
    });
    write!(out, "\0{n}\0")
}

/// Replaces the markers of a shell render with their values, quoted, after checking that each one
/// stands where the shell reads a new word.
fn place_shell_values(rendered: &str, values: &[String]) -> Result<String, RenderError> {
    let err = |message: String| RenderError {
        message,
        range: None,
        syntax: false,
    };
    // the command with each marker replaced by one letter, and where each letter is
    let mut skeleton = String::with_capacity(rendered.len());
    let mut at = Vec::with_capacity(values.len());
    let mut pieces = rendered.split('\0');
    skeleton.push_str(pieces.next().unwrap_or_default());
    let mut literal = Vec::new();
    while let Some(index) = pieces.next() {
        let after = pieces.next();
        if index != at.len().to_string() || after.is_none() {
            return Err(err("a shell command cannot hold a NUL byte".into()));
        }
        at.push(skeleton.len());
        skeleton.push('v');
        let after = after.unwrap_or_default();
        literal.push(after);
        skeleton.push_str(after);
    }
    if at.len() != values.len() {
        return Err(err("a shell command cannot hold a NUL byte".into()));
    }
    let places = crate::shell::places(&skeleton, &at);
    if let Some((i, place)) = places
        .iter()
        .enumerate()
        .find_map(|(i, p)| p.map(|p| (i, p)))
    {
        let shown: String = values[i].chars().take(40).collect();
        return Err(err(format!(
            "value {} ({shown:?}) would land {place} in the shell command, where the quotes infra adds do not hold; remove the quotes around the template: values are quoted for you (or use `| raw` for a value meant to be code)",
            i + 1
        )));
    }
    let mut out = String::with_capacity(rendered.len() + values.len() * 2);
    out.push_str(rendered.split('\0').next().unwrap_or_default());
    for (v, after) in values.iter().zip(literal) {
        out.push_str(&shell_quote(v));
        out.push_str(after);
    }
    Ok(out)
}

/// The `{{ … }}` blocks of a shell-field template that stand inside a quoting region of the command
/// (`'…'`, `"…"`, backquotes, `$'…'`, `$((…))`, a here-document), with the region: byte ranges in the
/// template. `| raw` blocks are the author's own code and are not reported. Control tags and comments
/// are read as if absent; the render-time check sees what they produce.
pub fn quoted_interpolations(text: &str) -> Vec<(usize, usize, &'static str)> {
    let Ok(sc) = scan(text) else {
        return Vec::new();
    };
    let mut skeleton = String::with_capacity(text.len());
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let close = if rest.starts_with("{{") {
            Some("}}")
        } else if rest.starts_with("{%") {
            Some("%}")
        } else if rest.starts_with("{#") {
            Some("#}")
        } else {
            None
        };
        let Some(close) = close else {
            let c = rest.chars().next().unwrap_or(' ');
            skeleton.push(c);
            i += c.len_utf8();
            continue;
        };
        let end = find_close(text, i + 2, close, close == "#}").map_or(text.len(), |e| e + 2);
        if close == "}}"
            && let Some(interp) = sc.interpolations.iter().find(|x| x.start == i)
            && interp.last_filter.as_deref() != Some("raw")
        {
            blocks.push((skeleton.len(), interp.start, interp.end));
            skeleton.push('v');
        }
        i = end;
    }
    let offsets: Vec<usize> = blocks.iter().map(|b| b.0).collect();
    crate::shell::places(&skeleton, &offsets)
        .into_iter()
        .zip(blocks)
        .filter_map(|(p, (_, s, e))| p.map(|p| (s, e, p)))
        .collect()
}

fn write_shell_quoted(s: &str, out: &mut dyn io::Write) -> io::Result<()> {
    out.write_all(b"'")?;
    let mut rest = s;
    while let Some(i) = rest.find('\'') {
        out.write_all(&rest.as_bytes()[..i])?;
        out.write_all(b"'\\''")?;
        rest = &rest[i + 1..];
    }
    out.write_all(rest.as_bytes())?;
    out.write_all(b"'")
}

const SQL_REFUSAL: &str = "a value was interpolated into SQL text; pass it in `params` and use `$1`…`$n`, or quote an identifier with `| ident`";

fn refuse_sql(_: &str, _: &mut dyn io::Write) -> io::Result<()> {
    Err(io::Error::other(SQL_REFUSAL))
}

/// SQL identifier quoting: `"name"`, with `"` doubled.
pub fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Renders templates. Build one and reuse it: construction registers filters.
#[derive(Debug)]
pub struct Renderer {
    plain: Tera,
    shell: Tera,
    sql: Tera,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

/// A failure to render.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    pub message: String,
    /// Byte range in the template, when Tera located it.
    pub range: Option<(usize, usize)>,
    /// A syntax error (as opposed to a failure while evaluating).
    pub syntax: bool,
}

fn base_tera() -> Tera {
    let mut t = Tera::new();
    t.autoescape_on(Vec::<&str>::new());
    t.register_filter(
        "raw",
        |v: tera::Value, _: Kwargs, _: &State| -> TeraResult<tera::Value> {
            if v.is_undefined() {
                return Err(tera::Error::message("`raw` was given an undefined value"));
            }
            Ok(match v.as_str() {
                Some(s) => tera::Value::safe_string(s),
                None => v.mark_safe(),
            })
        },
    );
    t.register_filter("ident", |v: &str, _: Kwargs, _: &State| -> tera::Value {
        tera::Value::safe_string(&sql_ident(v))
    });
    t.register_filter("quote", |v: &str, _: Kwargs, _: &State| -> tera::Value {
        tera::Value::safe_string(&shell_quote(v))
    });
    t.register_filter(
        "json",
        |v: tera::Value, _: Kwargs, _: &State| -> TeraResult<String> {
            if v.is_undefined() {
                return Err(tera::Error::message("`json` was given an undefined value"));
            }
            serde_json::to_string(&v).map_err(|e| tera::Error::message(e.to_string()))
        },
    );
    t.register_filter(
        "__typed",
        |v: tera::Value, _: Kwargs, _: &State| -> TeraResult<tera::Value> {
            if v.is_undefined() {
                return Err(tera::Error::message(
                    "the value is not defined; give it a default with `| default(value=…)`",
                ));
            }
            serde_json::to_string(&v)
                .map(|s| tera::Value::safe_string(&s))
                .map_err(|e| tera::Error::message(e.to_string()))
        },
    );
    t
}

struct Bounded<'a> {
    out: &'a mut Vec<u8>,
}

impl io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > MAX_RENDER_BYTES {
            return Err(io::Error::other(format!(
                "rendered text exceeds {MAX_RENDER_BYTES} bytes"
            )));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Renderer {
    pub fn new() -> Self {
        let plain = base_tera();
        let mut shell = base_tera();
        shell.set_escape_fn(write_shell_marker);
        shell.register_filter("quote", |v: &str, _: Kwargs, _: &State| -> tera::Value {
            let mut out = Vec::new();
            let _ = write_shell_marker(v, &mut out);
            tera::Value::safe_string(&String::from_utf8_lossy(&out))
        });
        let mut sql = base_tera();
        sql.set_escape_fn(refuse_sql);
        Renderer { plain, shell, sql }
    }

    /// Checks a template's syntax (and that its filters, tests and functions exist) without evaluating it
    /// against any data.
    pub fn check(&self, text: &str) -> Result<(), RenderError> {
        if !is_template(text) {
            return Ok(());
        }
        match self.render_text(&self.plain, text, &Context::new(), false) {
            Err(e) if e.syntax => Err(e),
            _ => Ok(()),
        }
    }

    /// Renders `text` in `mode` with `ctx` (a JSON object whose keys are the template's variables).
    pub fn render(&self, text: &str, mode: Mode, ctx: &Value) -> Result<Value, RenderError> {
        if !is_template(text) {
            return Ok(Value::String(text.to_owned()));
        }
        let context = Context::from_serialize(ctx).map_err(|e| RenderError {
            message: e.to_string(),
            range: None,
            syntax: false,
        })?;
        match mode {
            Mode::Plain => {
                if let Ok(scan) = scan(text)
                    && let Some(expr) = scan.single_expression
                {
                    let typed = format!("{{{{ ({expr}) | __typed }}}}");
                    let json = self
                        .render_text(&self.plain, &typed, &context, false)
                        .map_err(|e| RenderError {
                            message: format!("`{expr}`: {}", e.message),
                            range: None,
                            syntax: e.syntax,
                        })?;
                    return serde_json::from_str(&json).map_err(|e| RenderError {
                        message: e.to_string(),
                        range: None,
                        syntax: false,
                    });
                }
                self.render_text(&self.plain, text, &context, false)
                    .map(Value::String)
            }
            Mode::Shell => {
                // values are written as markers, then checked against where they stand in the
                // rendered command and quoted in place
                if text.contains('\0') {
                    return Err(RenderError {
                        message: "a shell command cannot hold a NUL byte".into(),
                        range: None,
                        syntax: false,
                    });
                }
                SHELL_VALUES.with(|v| v.borrow_mut().clear());
                let rendered = self.render_text(&self.shell, text, &context, true);
                let values = SHELL_VALUES.with(|v| std::mem::take(&mut *v.borrow_mut()));
                place_shell_values(&rendered?, &values).map(Value::String)
            }
            Mode::Sql => self
                .render_text(&self.sql, text, &context, true)
                .map(Value::String),
        }
    }

    fn render_text(
        &self,
        tera: &Tera,
        text: &str,
        ctx: &Context,
        escape: bool,
    ) -> Result<String, RenderError> {
        let mut out = Vec::new();
        let result = tera.render_str_to(text, ctx, escape, Bounded { out: &mut out });
        match result {
            Ok(()) => String::from_utf8(out).map_err(|e| RenderError {
                message: e.to_string(),
                range: None,
                syntax: false,
            }),
            Err(e) => Err(convert_error(&e)),
        }
    }
}

fn convert_error(e: &tera::Error) -> RenderError {
    match e.kind() {
        ErrorKind::SyntaxError(r) => RenderError {
            message: r.message().to_owned(),
            range: Some((r.span().range.start, r.span().range.end)),
            syntax: true,
        },
        ErrorKind::RenderingError(r) => RenderError {
            message: r.message().to_owned(),
            range: Some((r.span().range.start, r.span().range.end)),
            syntax: false,
        },
        // unknown filters, tests and functions: a multi-line report; keep its first line
        ErrorKind::Msg(m) => RenderError {
            message: m
                .lines()
                .next()
                .unwrap_or(m)
                .trim_start_matches("error: ")
                .to_owned(),
            range: None,
            syntax: true,
        },
        _ => RenderError {
            message: source_chain(e),
            range: None,
            syntax: false,
        },
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}

/// The shared renderer (building one registers filters; reuse it).
pub fn renderer() -> &'static Renderer {
    static R: std::sync::OnceLock<Renderer> = std::sync::OnceLock::new();
    R.get_or_init(Renderer::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refs(t: &str) -> Vec<(String, Option<String>)> {
        scan(t)
            .expect("scan")
            .references
            .into_iter()
            .map(|r| (r.root, r.key))
            .collect()
    }

    #[test]
    fn scan_finds_roots_and_first_keys() {
        assert_eq!(
            refs("echo {{ input.name }} {{ steps['build'].stdout | upper }}"),
            vec![
                ("input".into(), Some("name".into())),
                ("steps".into(), Some("build".into()))
            ]
        );
        assert_eq!(
            refs("{{ x | default(value=input.y) }}"),
            vec![("x".into(), None), ("input".into(), Some("y".into()))]
        );
        assert_eq!(
            refs("{% for h in input.hosts %}{{ h }}{% endfor %}"),
            vec![("input".into(), Some("hosts".into()))]
        );
        assert_eq!(
            refs("{% if a is defined and b is not none %}{% endif %}"),
            vec![("a".into(), None), ("b".into(), None)]
        );
        assert_eq!(refs("{{ 'input.x' }}{# input.y #}"), vec![]);
        assert!(refs("{% raw %}{{ input.x }}{% endraw %}").is_empty());
    }

    #[test]
    fn simple_paths_are_recognised_and_nothing_else() {
        for t in [
            "{{ input.a }}",
            "x {{ steps['b-c'].stdout | trim | raw }} {{ item[0] }}",
            "{# c #}{{ a?.b }}",
        ] {
            assert!(scan(t).expect("scan").simple, "{t}");
            assert!(Renderer::new().check(t).is_ok(), "{t} must be valid Tera");
        }
        for t in [
            "{{ a + 1 }}",
            "{{ a | default(value=1) }}",
            "{{ a | nosuch }}",
            "{% if a %}x{% endif %}",
            "{{ a. }}",
            "{{ true }}",
            "{{ a b }}",
        ] {
            assert!(!scan(t).expect("scan").simple, "{t}");
        }
    }

    #[test]
    fn a_value_inside_the_authors_quotes_is_found_before_and_refused_at_render() {
        let found = quoted_interpolations("echo 'hello {{ input.v }}' {{ input.w }}");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 12);
        assert!(found[0].2.contains("single quotes"));
        assert!(quoted_interpolations("echo \"{{ input.v | quote }}\"").len() == 1);
        assert!(quoted_interpolations("echo '{{ input.v | raw }}'").is_empty());
        assert!(quoted_interpolations("echo {% if x %}'{% endif %}{{ y }}").len() == 1);
        assert!(quoted_interpolations("echo {{ v }} {# ' #} {{ w }}").is_empty());

        let r = Renderer::new();
        let ctx = serde_json::json!({"input": {"v": ";touch /tmp/x;"}});
        for t in [
            "echo 'hello {{ input.v }}'",
            "echo \"{{ input.v }}\"",
            "echo {% if true %}'{% else %}'{% endif %}{{ input.v }}'",
            "echo {{ \"'\" | raw }}{{ input.v }}{{ \"'\" | raw }}",
            "echo '{{ input.v | quote }}'",
            "cat <<EOF\n{{ input.v }}\nEOF",
        ] {
            let e = r.render(t, Mode::Shell, &ctx).expect_err(t);
            assert!(
                e.message.contains("remove the quotes"),
                "{t}: {}",
                e.message
            );
        }
        assert_eq!(
            r.render(
                "echo {{ input.v }} '{{ input.v | raw }}'",
                Mode::Shell,
                &ctx
            )
            .expect("renders"),
            serde_json::json!("echo ';touch /tmp/x;' ';touch /tmp/x;'")
        );
        // NUL cannot stand for a value
        let ctx = serde_json::json!({"input": {"v": "a\u{0}0\u{0}b"}});
        assert!(
            r.render("echo {{ input.v | raw }}", Mode::Shell, &ctx)
                .is_err()
        );
    }

    #[test]
    fn scan_sees_the_last_filter_and_single_expressions() {
        let s = scan("{{ input.a | raw }}").expect("scan");
        assert_eq!(s.interpolations[0].last_filter.as_deref(), Some("raw"));
        assert_eq!(s.single_expression.as_deref(), Some("input.a | raw"));
        let s = scan("{{ input.a | raw ~ 'x' }}").expect("scan");
        assert_eq!(s.interpolations[0].last_filter, None);
        assert_eq!(scan("a {{ x }}").expect("scan").single_expression, None);
        assert!(scan("{{ x ").is_err());
    }

    #[test]
    fn shell_mode_quotes_every_value() {
        let r = Renderer::new();
        let ctx = json!({"input": {"s": "a'b; rm -rf / $(x)", "n": 3}});
        let out = r
            .render("echo {{ input.s }} {{ input.n }}", Mode::Shell, &ctx)
            .expect("render");
        assert_eq!(out, json!("echo 'a'\\''b; rm -rf / $(x)' 3"));
        let raw = r
            .render("echo {{ input.s | raw }}", Mode::Shell, &ctx)
            .expect("render");
        assert_eq!(raw, json!("echo a'b; rm -rf / $(x)"));
    }

    #[test]
    fn sql_mode_refuses_values_but_takes_identifiers() {
        let r = Renderer::new();
        let ctx = json!({"input": {"t": "ev\"il"}});
        assert!(
            r.render("select * from {{ input.t }}", Mode::Sql, &ctx)
                .is_err()
        );
        let ok = r
            .render("select * from {{ input.t | ident }}", Mode::Sql, &ctx)
            .expect("render");
        assert_eq!(ok, json!("select * from \"ev\"\"il\""));
    }

    #[test]
    fn plain_single_expression_is_typed() {
        let r = Renderer::new();
        let ctx = json!({"input": {"n": 3, "list": [1, 2], "s": "x"}});
        assert_eq!(
            r.render("{{ input.n }}", Mode::Plain, &ctx).expect("n"),
            json!(3)
        );
        assert_eq!(
            r.render("{{ input.list }}", Mode::Plain, &ctx).expect("l"),
            json!([1, 2])
        );
        assert_eq!(
            r.render("{{ input.s }}-y", Mode::Plain, &ctx).expect("s"),
            json!("x-y")
        );
        let err = r
            .render("{{ input.missing }}", Mode::Plain, &ctx)
            .expect_err("undefined");
        assert!(err.message.contains("missing"), "{}", err.message);
    }

    #[test]
    fn check_reports_syntax_not_missing_data() {
        let r = Renderer::new();
        assert!(r.check("{{ input.a }}").is_ok());
        assert!(r.check("{{ input.a | nosuchfilter }}").is_err());
        let e = r.check("x {{ 1 + }}").expect_err("syntax");
        assert!(e.syntax);
    }
}
