//! The original's data paths (`steps.x.items[0].name`, `a.0`, `a["k-1"]`) and their `{{ path }}`
//! templates, rewritten into Tera expressions.

use std::collections::HashMap;
use std::sync::Arc;

use crate::template::scan;

/// One step of a data path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(u64),
}

/// How the original treated a reference to a missing value (`template_missing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Missing {
    /// Fail (the default).
    Error,
    /// An empty string.
    Empty,
    /// `null`.
    Null,
}

/// What a rewrite renames: the `foreach` variable, steps whose result an `output.path` narrowed,
/// `result` inside that step's `retry.until`.
#[derive(Clone, Debug, Default)]
pub(super) struct Renames {
    /// `foreach.as`: this name is `item` now.
    pub item: Option<String>,
    /// Step id → the path its `output` picked. Shared: each step's context is a copy of the
    /// runbook's, and copying the map per step would cost steps × outputs.
    pub outputs: Arc<HashMap<String, Vec<Seg>>>,
    /// The path `result` is narrowed to (the step's own `output.path`).
    pub result: Option<Vec<Seg>>,
}

/// The context of one rewrite.
#[derive(Clone, Debug)]
pub(super) struct Cx {
    pub renames: Renames,
    pub missing: Missing,
}

impl Cx {
    /// Nothing renamed and a missing value an error: then only `{{ ?x }}`, path steps that are not
    /// names (`a.0`, `a.my-key`, `a["k"]`) and `trace_id` change a template.
    fn is_plain(&self) -> bool {
        self.missing == Missing::Error
            && self.renames.item.is_none()
            && self.renames.outputs.is_empty()
            && self.renames.result.is_none()
    }
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

const KEYWORDS: &[&str] = &[
    "true", "false", "none", "None", "null", "True", "False", "and", "or", "not", "in", "is",
    "loop",
];

/// One step of a path; quotes only inside brackets (`a["k"]`), as elsewhere `"k"` is a string.
fn segment(raw: &str, bracket: bool) -> Option<Seg> {
    let t = raw.trim();
    let unquoted = t
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| t.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
    if let Some(k) = unquoted.filter(|_| bracket) {
        return Some(Seg::Key(k.to_owned()));
    }
    if bracket && !t.chars().all(|c| c.is_ascii_digit()) {
        // `a[k]` reads the variable `k` in Tera: an expression of ours, not an original path
        return None;
    }
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return None;
    }
    Some(match t.parse::<u64>() {
        Ok(i) => Seg::Index(i),
        Err(_) => Seg::Key(t.to_owned()),
    })
}

/// Parses an original data path; `None` when the text is not one (an expression of ours, say).
pub(super) fn parse(path: &str) -> Option<Vec<Seg>> {
    let segs = parse_relative(path)?;
    match segs.first() {
        Some(Seg::Key(root)) if is_ident(root) && !KEYWORDS.contains(&root.as_str()) => Some(segs),
        _ => None,
    }
}

/// Parses a path below a value (`value`, `rows[0].name`, `0`): any first step.
pub(super) fn parse_relative(path: &str) -> Option<Vec<Seg>> {
    let p = path.trim();
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut chars = p.chars();
    let mut after_bracket = false;
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if cur.is_empty() && !after_bracket {
                    return None;
                }
                if !cur.is_empty() {
                    segs.push(segment(&cur, false)?);
                }
                cur.clear();
                after_bracket = false;
            }
            '[' => {
                if !cur.is_empty() {
                    segs.push(segment(&cur, false)?);
                    cur.clear();
                }
                let inner: String = chars.by_ref().take_while(|&c| c != ']').collect();
                segs.push(segment(&inner, true)?);
                after_bracket = true;
            }
            _ => {
                cur.push(c);
                after_bracket = false;
            }
        }
    }
    if !cur.is_empty() {
        segs.push(segment(&cur, false)?);
    }
    (!segs.is_empty()).then_some(segs)
}

impl Renames {
    pub(super) fn apply(&self, mut segs: Vec<Seg>) -> Vec<Seg> {
        let root = match segs.first() {
            Some(Seg::Key(r)) => r.clone(),
            _ => return segs,
        };
        if self.item.as_deref() == Some(root.as_str()) {
            segs[0] = Seg::Key("item".into());
        } else if root == "steps" {
            if let Some(Seg::Key(id)) = segs.get(1)
                && let Some(extra) = self.outputs.get(id)
            {
                segs.splice(2..2, extra.iter().cloned());
            }
        } else if root == "result" {
            if let Some(extra) = &self.result {
                segs.splice(1..1, extra.iter().cloned());
            }
        } else if root == "trace_id" && segs.len() == 1 {
            segs = vec![Seg::Key("run".into()), Seg::Key("id".into())];
        }
        segs
    }

    /// Whether a reference (root and first key) is one this rewrite renames.
    fn touches(&self, root: &str, key: Option<&str>) -> bool {
        self.item.as_deref() == Some(root)
            || (root == "steps" && key.is_some_and(|k| self.outputs.contains_key(k)))
            || (root == "result" && self.result.is_some())
            || root == "trace_id"
    }
}

/// A Tera string literal.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A path as a Tera expression; `safe`: every step after the root is optional (`?.`), so a missing
/// value is undefined instead of an error.
pub(super) fn tera(segs: &[Seg], safe: bool) -> String {
    let mut out = String::new();
    let opt = if safe { "?" } else { "" };
    for (i, s) in segs.iter().enumerate() {
        match s {
            Seg::Key(k) if i == 0 => out.push_str(k),
            Seg::Key(k) if is_ident(k) => {
                out.push_str(opt);
                out.push('.');
                out.push_str(k);
            }
            Seg::Key(k) => {
                out.push_str(opt);
                out.push('[');
                out.push_str(&quote(k));
                out.push(']');
            }
            Seg::Index(n) => {
                out.push_str(opt);
                out.push_str(&format!("[{n}]"));
            }
        }
    }
    out
}

/// The value at a path, `none` when anything on the way is missing (the original's `path` lookups).
pub(super) fn value_or_none(segs: &[Seg]) -> String {
    format!("({} | default(value=none))", tera(segs, true))
}

/// Why a template was rewritten (beyond renames), for the warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Why {
    /// `{{ ?x }}`.
    Optional,
    /// `a.0` or a key that is not a name.
    Index,
    /// `{{ trace_id }}`.
    TraceId,
}

impl Why {
    pub(super) fn says(self) -> &'static str {
        match self {
            Why::Optional => "`{{ ?x }}` (an optional reference)",
            Why::Index => "path steps like `a.0` or `a.my-key`",
            Why::TraceId => "`trace_id` (now `run.id`)",
        }
    }
}

/// One original `{{ path }}` (with an optional leading `?`) as a Tera expression, or `None` when
/// the block is not an original path.
pub(super) fn expression(inner: &str, cx: &Cx, why: &mut Vec<Why>) -> Option<String> {
    let t = inner.trim();
    let (optional, body) = match t.strip_prefix('?') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let segs = parse(body)?;
    if optional {
        why.push(Why::Optional);
    }
    if tera(&segs, false) != body.trim() {
        why.push(Why::Index);
    }
    if matches!(segs.as_slice(), [Seg::Key(r)] if r == "trace_id") {
        why.push(Why::TraceId);
    }
    let segs = cx.renames.apply(segs);
    let missing = if optional { Missing::Empty } else { cx.missing };
    Some(match missing {
        Missing::Error => tera(&segs, false),
        Missing::Empty => format!("{} | default(value=\"\")", tera(&segs, true)),
        Missing::Null => format!("{} | default(value=none)", tera(&segs, true)),
    })
}

/// Whether a block's inner text is surely left as written under a plain [`Cx`], decided without
/// parsing it (false: not sure). A dotted path of names (`input.host`) stays; so does text that
/// cannot be an original path: ASCII with a character no path step has outside brackets
/// (`x | upper`, `a == 1`). Blocks with `?`, `[`, `trace_id` or other text are not decided here.
fn plainly_unchanged(inner: &str) -> bool {
    let t = inner.trim();
    if t.starts_with('?') || t.contains('[') || t.contains("trace_id") || !t.is_ascii() {
        return false;
    }
    let path_like = t.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') || b.is_ascii_whitespace()
    });
    !path_like || t.split('.').all(is_ident)
}

/// Whether `rewrite` surely returns `Ok(None)`: every block of `text`, split as `rewrite` splits
/// them, is [`plainly_unchanged`] under a plain context. Most strings of a current runbook are,
/// and this costs no allocation.
fn plainly_unchanged_text(text: &str, cx: &Cx) -> bool {
    cx.is_plain() && plainly_unchanged_blocks(text)
}

/// [`plainly_unchanged_text`] under a plain context.
pub(super) fn plainly_unchanged_blocks(text: &str) -> bool {
    let mut rest = text;
    while let Some(open) = find_pair(rest, '{') {
        let Some(close) = find_pair(&rest[open + 2..], '}').map(|c| open + 2 + c) else {
            break;
        };
        if !plainly_unchanged(&rest[open + 2..close]) {
            return false;
        }
        rest = &rest[close + 2..];
    }
    true
}

/// Where `cc` (`{{` or `}}`) first occurs in `s`: `s.find("{{")`, through a search for one
/// character, which costs less on the many strings that have none.
fn find_pair(s: &str, c: char) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(c) {
        let at = from + i;
        if s[at + 1..].starts_with(c) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Rewrites the original's `{{ path }}` blocks of a string into Tera. `Ok(None)`: nothing changes.
/// `Err`: a block of ours reads a name this rewrite renames, which only a person can fix.
pub(super) fn rewrite(text: &str, cx: &Cx) -> Result<Option<(String, Vec<Why>)>, String> {
    if !text.contains("{{") || plainly_unchanged_text(text, cx) {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut why = Vec::new();
    let mut changed = false;
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}").map(|c| open + 2 + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = &rest[open + 2..close];
        match expression(inner, cx, &mut why) {
            Some(e) if e != inner.trim() => {
                changed = true;
                out.push_str("{{ ");
                out.push_str(&e);
                out.push_str(" }}");
            }
            Some(_) => out.push_str(&rest[open..close + 2]),
            None => {
                let block = &rest[open..close + 2];
                if let Ok(s) = scan(block) {
                    for r in &s.references {
                        if cx.renames.touches(&r.root, r.key.as_deref()) {
                            return Err(format!(
                                "`{}` reads `{}{}`, which the translation renames, in an expression it cannot rewrite",
                                block.trim(),
                                r.root,
                                r.key
                                    .as_deref()
                                    .map(|k| format!(".{k}"))
                                    .unwrap_or_default()
                            ));
                        }
                    }
                }
                out.push_str(block);
            }
        }
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    why.sort();
    why.dedup();
    Ok(changed.then_some((out, why)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_found_where_find_finds_it() {
        for s in [
            "", "{", "{{", "a{b{{c", "{x{", "}}}", "é{{", "a}b}}", "{{{", "{é{{",
        ] {
            assert_eq!(find_pair(s, '{'), s.find("{{"), "{s}");
            assert_eq!(find_pair(s, '}'), s.find("}}"), "{s}");
        }
    }

    fn cx() -> Cx {
        Cx {
            renames: Renames::default(),
            missing: Missing::Error,
        }
    }

    #[test]
    fn paths_become_tera() {
        let p = parse("steps.x.items[0].name").expect("ok");
        assert_eq!(tera(&p, false), "steps.x.items[0].name");
        assert_eq!(tera(&parse("a.0.b").expect("ok"), true), "a?[0]?.b");
        assert_eq!(
            tera(&parse("a.my-key").expect("ok"), false),
            "a[\"my-key\"]"
        );
        assert_eq!(tera(&parse("a['k']").expect("ok"), false), "a.k");
        assert!(parse("a | upper").is_none());
        assert!(parse("true").is_none());
        assert!(parse("a..b").is_none());
        assert!(parse("\"any\"").is_none());
        assert!(parse("input.map[item]").is_none());
        assert_eq!(rewrite("{{ \"any\" }}", &cx()).expect("ok"), None);
    }

    #[test]
    fn templates_are_rewritten_only_where_needed() {
        assert_eq!(rewrite("{{ input.x }}", &cx()).expect("ok"), None);
        assert_eq!(rewrite("{{ input.x | upper }}", &cx()).expect("ok"), None);
        // decided without parsing, and the same as parsing decides
        for (text, plain) in [
            ("a {{ input.x }} b {{ steps.s.out }}", true),
            ("{{ input.x | upper }} {{ a == 1 }}", true),
            ("{{ true }}", true),
            ("{{ a.0 }}", false),
            ("{{ a .b }}", false),
            ("{{ a.my-key }}", false),
            ("{{ ?a }}", false),
            ("{{ a[\"k\"] }}", false),
            ("{{ trace_id }}", false),
            ("{{ a.\u{a0}b }}", false),
            ("{{- a -}}", false),
        ] {
            assert_eq!(plainly_unchanged_text(text, &cx()), plain, "{text}");
            if plain {
                assert_eq!(rewrite(text, &cx()).expect("ok"), None, "{text}");
            }
        }
        assert_eq!(
            rewrite("{{ a .b }}", &cx())
                .expect("ok")
                .map(|r| r.0)
                .as_deref(),
            Some("{{ a.b }}")
        );
        assert!(rewrite("{{ a.\u{a0}b }}", &cx()).expect("ok").is_some());
        let mut renamed = cx();
        renamed.renames.item = Some("host".into());
        assert!(!plainly_unchanged_text("{{ input.x }}", &renamed));
        let (t, why) = rewrite("a {{ ?input.x }} b {{ steps.s.rows.0 }}", &cx())
            .expect("ok")
            .expect("ok");
        assert_eq!(
            t,
            "a {{ input?.x | default(value=\"\") }} b {{ steps.s.rows[0] }}"
        );
        assert_eq!(why, vec![Why::Optional, Why::Index]);
        let (t, _) = rewrite("{{ trace_id }}", &cx()).expect("ok").expect("ok");
        assert_eq!(t, "{{ run.id }}");
    }

    #[test]
    fn renames_apply_and_unrewritable_reads_are_refused() {
        let mut c = cx();
        c.renames.item = Some("host".into());
        Arc::make_mut(&mut c.renames.outputs).insert("get".into(), vec![Seg::Key("value".into())]);
        let (t, _) = rewrite("{{ host.name }}/{{ steps.get }}", &c)
            .expect("ok")
            .expect("ok");
        assert_eq!(t, "{{ item.name }}/{{ steps.get.value }}");
        assert!(rewrite("{{ steps.get | length }}", &c).is_err());
        c.missing = Missing::Null;
        let (t, _) = rewrite("{{ input.x }}", &c).expect("ok").expect("ok");
        assert_eq!(t, "{{ input?.x | default(value=none) }}");
    }
}
