//! Rendering with Tera in the three modes: the escape function per mode, shell markers and their
//! placement, SQL refusal, the bounded writer, and the shared `Renderer`.

use std::io;

use serde_json::Value;
use tera::{Context, ErrorKind, Kwargs, State, Tera, TeraResult};

use super::{MAX_RENDER_BYTES, Mode, is_template, scan};

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
