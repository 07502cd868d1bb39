//! The static scan of a template: its tokens, the references it makes (`input.x`, `steps.y`) and how
//! each interpolation ends (its last top-level filter).

use super::{Interpolation, MAX_TEMPLATE_BYTES, Reference, Scan, TemplateError};

#[derive(Clone, Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Str(String),
    Num,
    Punct(&'a str),
}

/// Tera's keywords: never a variable.
fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "and"
            | "or"
            | "not"
            | "in"
            | "is"
            | "if"
            | "else"
            | "elif"
            | "endif"
            | "for"
            | "endfor"
            | "set"
            | "set_global"
            | "true"
            | "false"
            | "none"
            | "True"
            | "False"
            | "None"
            | "loop"
            | "filter"
            | "endfilter"
            | "raw"
            | "endraw"
            | "break"
            | "continue"
            | "include"
            | "block"
            | "endblock"
            | "extends"
            | "macro"
            | "endmacro"
            | "with"
            | "__tera_context"
    )
}

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
        Some((Tok::Ident(n), ..)) if !is_keyword(n) => i += 1,
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
    // the variables of list comprehensions (`[c.name for c in steps.x.items if c.ok]`) are local to
    // the expression
    let mut bound: Vec<&str> = Vec::new();
    for (i, (tok, ..)) in toks.iter().enumerate() {
        if *tok == Tok::Ident("for") {
            bound.extend(
                toks[i + 1..]
                    .iter()
                    .take_while(|t| t.0 != Tok::Ident("in"))
                    .filter_map(|t| match t.0 {
                        Tok::Ident(n) => Some(n),
                        _ => None,
                    }),
            );
        }
    }
    for (i, (tok, start, end)) in toks.iter().enumerate() {
        let Tok::Ident(name) = tok else { continue };
        if is_keyword(name) || locals.iter().any(|l| l == name) || bound.contains(name) {
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

/// The `{{ … }}` blocks of a shell-field template that stand inside a quoting region of the command
/// (`'…'`, `"…"`, backquotes, `$'…'`, `$((…))`, a here-document), with the region: byte ranges in the
/// template. `| raw` blocks are the author's own code and are not reported. Control tags and comments
/// are read as if absent; the render-time check sees what they produce.
pub fn quoted_interpolations(text: &str) -> Vec<(usize, usize, &'static str)> {
    match scan(text) {
        Ok(sc) => quoted_interpolations_of(text, &sc),
        Err(_) => Vec::new(),
    }
}

/// [`quoted_interpolations`] of a template already scanned (`sc` is `scan(text)`).
pub fn quoted_interpolations_of(text: &str, sc: &Scan) -> Vec<(usize, usize, &'static str)> {
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
            // no block starts before the next `{` past this character
            let len = rest.chars().next().map_or(1, char::len_utf8);
            let next = rest[len..].find('{').map_or(rest.len(), |p| p + len);
            skeleton.push_str(&rest[..next]);
            i += next;
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
