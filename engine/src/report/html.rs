//! One self-contained HTML report of a run: no script, no network, no file besides itself. Its
//! Content-Security-Policy is `default-src 'none'; style-src 'sha256-…'` (the hash of its one
//! stylesheet), so a browser runs no script and fetches nothing even if some text got through
//! unescaped; every text from the journal, the plan and artifacts goes through [`escape`].
//!
//! Order: header (runbook, run id, status, start, duration, plan digest, step counts) → why it
//! ended (each failing step: error kind and message, exit code, the last lines of its stderr, links)
//! → the graph → the timeline → the step table. The page is also well-formed XML (void elements
//! are self-closed), so an XML parser can check it.

use std::collections::HashMap;
use std::fmt::Write;

use super::svg::{self, DEFS, STYLE, fit};
use super::{Shown, StepView, View, escape};

/// Past this many steps the graph shows the failure's neighbourhood unless asked for the whole.
pub const FOCUS_ABOVE: usize = 60;
/// The most nodes drawn in one graph (leaving out implied edges takes n² / 64 words of memory).
pub const MAX_DRAWN: usize = 5_000;
/// The most rows of the timeline and of the step table; failing steps are always among them.
pub const MAX_ROWS: usize = 2_000;
/// Lines of stderr shown for a failing step.
pub const TAIL_LINES: usize = 20;
/// Failing steps described in "why it ended" (the table lists them all).
const MAX_WHY: usize = 5;

/// What the report needs besides the view.
#[derive(Debug, Default, Clone)]
pub struct Extras {
    /// The tail of each failing step's stderr, by step id (already redacted).
    pub tails: HashMap<String, String>,
    /// The run's artifact URI (`artifact://runs/<runbook>/<run>`): artifacts below it get links.
    pub uri_base: String,
    /// What replaces `uri_base` in a link: empty for a report inside the run directory (links are
    /// relative), else the directory as a `file://` URL ending in `/`.
    pub link_base: String,
    /// Draw every step even past [`FOCUS_ABOVE`].
    pub full_graph: bool,
}

const PAGE_STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#212121;margin:0;padding:16px 24px;background:#fff}\
h1{font-size:20px;margin:0 0 8px;display:flex;align-items:center;gap:10px;flex-wrap:wrap}\
h2{font-size:16px;margin:26px 0 8px;border-bottom:1px solid #e0e0e0;padding-bottom:4px}\
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace;font-size:12px}\
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}dl.meta dt{color:#616161}dl.meta dd{margin:0;overflow-wrap:anywhere}\
.chip{display:inline-flex;align-items:center;gap:4px;padding:1px 8px 1px 4px;border-radius:10px;border:1.5px solid;white-space:nowrap;font-size:13px}\
.chip svg{width:14px;height:14px;flex:none}\
.c-ok{background:#e8f5e9;border-color:#2e7d32}.c-failed{background:#ffebee;border-color:#c62828;border-width:2.5px}\
.c-timeout{background:#fff3e0;border-color:#e65100;border-style:dashed}.c-cancelled{background:#eee;border-color:#424242;border-style:dashed}\
.c-refused{background:#f3e5f5;border-color:#6a1b9a;border-style:double;border-width:3px}.c-skipped{background:#fafafa;border-color:#9e9e9e;border-style:dotted}\
.c-running{background:#e3f2fd;border-color:#1565c0;border-style:dashed}.c-notrun{background:#fff;border-color:#bdbdbd;border-style:dotted}.c-plan{border-color:#546e7a}\
.why{border-left:5px solid #c62828;background:#fff8f8;padding:8px 14px;margin:10px 0}.why.fine{border-color:#2e7d32;background:#f6fbf6}\
.why h3{margin:2px 0 6px;font-size:15px;display:flex;gap:8px;align-items:center;flex-wrap:wrap}\
pre{background:#263238;color:#eceff1;padding:8px 10px;overflow:auto;max-height:360px;white-space:pre-wrap;overflow-wrap:anywhere;margin:6px 0}\
.scroll{overflow:auto;max-width:100%;max-height:80vh;border:1px solid #eceff1}\
.note{color:#616161;font-size:13px}\
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eceff1;vertical-align:top}\
th{background:#fafafa;position:sticky;top:0}td:nth-child(n+3):nth-child(-n+5){text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
td:first-child{overflow-wrap:anywhere;max-width:260px}td:last-child{overflow-wrap:anywhere;max-width:420px}\
.defs{position:absolute;width:0;height:0;overflow:hidden}\
a{color:#1565c0}\
";

/// The report's one stylesheet: the page's and the drawings'.
pub fn stylesheet() -> String {
    format!("{PAGE_STYLE}{STYLE}")
}

/// The Content-Security-Policy: nothing but the stylesheet whose hash it names.
pub fn csp(style: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "default-src 'none'; style-src 'sha256-{}'; img-src data:; base-uri 'none'; form-action 'none'",
        base64(&Sha256::digest(style.as_bytes()))
    )
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A status chip: icon, word, border and colour.
fn chip(s: Shown) -> String {
    format!(
        r##"<span class="chip c-{c}"><svg><use href="#i-{c}"/></svg>{w}</span>"##,
        c = s.class(),
        w = s.word()
    )
}

fn run_shown(v: &View) -> Shown {
    match v.status {
        Some(s) => Shown::of(s),
        None => Shown::Running,
    }
}

fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// A link to an artifact of the run, or its URI as text when it is not below the run.
fn link(x: &Extras, uri: &str, text: &str) -> String {
    let rel = uri
        .strip_prefix(x.uri_base.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .filter(|_| !x.uri_base.is_empty());
    match rel {
        Some(rel) => {
            let href = if x.link_base.is_empty() {
                format!("./{}", percent(rel))
            } else {
                format!("{}{}", x.link_base, percent(rel))
            };
            format!(r#"<a href="{}">{}</a>"#, escape(&href), escape(text))
        }
        None => format!("<code>{}</code>", escape(uri)),
    }
}

/// Percent-encodes what a path segment may not hold as is.
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> &str {
    let t = text.strip_suffix('\n').unwrap_or(text);
    match t.rmatch_indices('\n').nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &t[i + 1..],
        _ => t,
    }
}

/// The whole report.
pub fn report(v: &View, x: &Extras) -> String {
    let style = stylesheet();
    let status = run_shown(v);
    let mut out = String::with_capacity(64 * 1024 + v.steps.len() * 900);
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
<meta http-equiv=\"Content-Security-Policy\" content=\"{}\"/>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\
<meta name=\"referrer\" content=\"no-referrer\"/>\
<title>{} {} — {}</title><style>{style}</style></head><body>",
        csp(&style),
        escape(&v.runbook),
        escape(v.run_id.get(..8).unwrap_or(&v.run_id)),
        status.word(),
    );
    let _ = write!(out, r#"<svg class="defs" aria-hidden="true">{DEFS}</svg>"#);
    header(&mut out, v, status);
    why(&mut out, v, x);
    graph(&mut out, v, x);
    let (rows, hidden) = capped(v, svg::timeline_rows(v));
    let _ = write!(
        out,
        "<section id=\"timeline\"><h2>Timeline</h2><p class=\"note\">One bar per attempt; a retried \
attempt is dashed; steps that ran at the same time sit on neighbouring rows.</p><div class=\"scroll\">{}</div>",
        svg::timeline(v, &rows)
    );
    left_out(&mut out, hidden, v);
    out.push_str("</section>\n");
    table(&mut out, v, x);
    out.push_str("</body></html>\n");
    out
}

fn header(out: &mut String, v: &View, status: Shown) {
    let counts: Vec<String> = v
        .counts()
        .into_iter()
        .map(|(s, n)| format!("{n} {}", s.word()))
        .collect();
    let _ = writeln!(
        out,
        "<header id=\"summary\"><h1>{} <span>{}</span></h1><dl class=\"meta\">\
<dt>run</dt><dd class=\"mono\">{}</dd><dt>status</dt><dd>{}{}</dd><dt>started</dt><dd>{}</dd>\
<dt>duration</dt><dd>{}</dd><dt>plan digest</dt><dd class=\"mono\">{}</dd>\
<dt>steps</dt><dd>{} — {}</dd></dl></header>",
        chip(status),
        escape(&v.runbook),
        escape(&v.run_id),
        status.word(),
        if v.torn {
            " (the journal's last line is torn)"
        } else {
            ""
        },
        escape(&v.started),
        v.duration_ms.map_or("—".into(), duration),
        if v.plan_digest.is_empty() {
            "—".into()
        } else {
            escape(&v.plan_digest)
        },
        v.steps.len(),
        counts.join(", "),
    );
}

fn why(out: &mut String, v: &View, x: &Extras) {
    out.push_str("<section id=\"why\"><h2>Why it ended</h2>\n");
    let failures = v.failures();
    if v.status.is_none() {
        out.push_str(
            "<p class=\"why\">The journal has no <code>run_finished</code> record: the run was \
killed, or is still going.</p>\n",
        );
    } else if failures.is_empty() && v.error.is_none() {
        let skipped = v
            .steps
            .iter()
            .filter(|s| s.status == Shown::Skipped)
            .count();
        let _ = writeln!(
            out,
            "<p class=\"why fine\">Every step that ran succeeded{}.</p>",
            if skipped > 0 {
                format!("; {skipped} skipped (the table says why)")
            } else {
                String::new()
            }
        );
    }
    if let Some(e) = &v.error {
        let _ = writeln!(
            out,
            "<p>The run ended <b>{}</b>: <code>{}</code> {}</p>",
            run_shown(v).word(),
            escape(&e.kind),
            escape(&e.message)
        );
    }
    for &i in failures.iter().take(MAX_WHY) {
        let s = &v.steps[i];
        let _ = write!(
            out,
            "<div class=\"why\"><h3>{} <code>{}</code> <span class=\"note\">{}</span></h3>",
            chip(s.status),
            escape(&s.id),
            escape(&s.action)
        );
        if let Some(e) = &s.error {
            let _ = write!(
                out,
                "<p><code>{}</code> {}{}</p>",
                escape(&e.kind),
                escape(&e.message),
                s.exit_code
                    .map(|c| format!(" (exit code {c})"))
                    .unwrap_or_default()
            );
        }
        if s.retries() > 1 {
            let _ = write!(out, "<p class=\"note\">after {} attempts</p>", s.retries());
        }
        if let Some(t) = x.tails.get(&s.id).filter(|t| !t.trim().is_empty()) {
            let _ = write!(
                out,
                "<p class=\"note\">last {TAIL_LINES} lines of stderr:</p><pre>{}</pre>",
                escape(last_lines(t, TAIL_LINES))
            );
        }
        let links: Vec<String> = s
            .artifacts
            .iter()
            .map(|u| link(x, u, u.rsplit('/').next().unwrap_or(u)))
            .collect();
        if !links.is_empty() {
            let _ = write!(out, "<p>artifacts: {}</p>", links.join(" · "));
        }
        out.push_str("</div>\n");
    }
    if failures.len() > MAX_WHY {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} more failed steps are in the table.</p>",
            failures.len() - MAX_WHY
        );
    }
    out.push_str("</section>\n");
}

fn graph(out: &mut String, v: &View, x: &Extras) {
    out.push_str("<section id=\"graph\"><h2>Graph</h2>\n");
    let focus = (!x.full_graph && v.steps.len() > FOCUS_ABOVE)
        .then(|| v.neighbourhood(2))
        .flatten();
    match &focus {
        Some(only) => {
            let _ = writeln!(
                out,
                "<p class=\"note\">{} of {} steps: those within two edges of a failure. \
<code>infra report {} --full-graph</code> draws them all.</p>",
                only.len(),
                v.steps.len(),
                escape(v.run_id.get(..8).unwrap_or(&v.run_id))
            );
        }
        None => out.push_str(
            "<p class=\"note\">Colour, icon, border and word show each status; <code>finally</code> \
steps are rounded, rollbacks have a double border and a dashed edge from their step.</p>\n",
        ),
    }
    let drawn = focus.as_ref().map_or(v.steps.len(), Vec::len);
    if drawn > MAX_DRAWN {
        let _ = writeln!(
            out,
            "<p class=\"note\">{drawn} steps are too many to draw here (at most {MAX_DRAWN}); \
the table lists them.</p></section>"
        );
        return;
    }
    let _ = writeln!(
        out,
        "<div class=\"scroll\">{}</div></section>",
        svg::graph(v, focus.as_deref(), false)
    );
}

/// `rows` cut to [`MAX_ROWS`], in their order, keeping every failing step; and how many were left out.
pub fn capped(v: &View, rows: Vec<usize>) -> (Vec<usize>, usize) {
    if rows.len() <= MAX_ROWS {
        return (rows, 0);
    }
    let failing = rows
        .iter()
        .filter(|&&i| v.steps[i].status.is_failure())
        .count()
        .min(MAX_ROWS);
    let mut room = MAX_ROWS - failing;
    let total = rows.len();
    let kept: Vec<usize> = rows
        .into_iter()
        .filter(|&i| {
            if v.steps[i].status.is_failure() {
                return true;
            }
            let keep = room > 0;
            room = room.saturating_sub(1);
            keep
        })
        .collect();
    let hidden = total - kept.len();
    (kept, hidden)
}

fn left_out(out: &mut String, hidden: usize, v: &View) {
    if hidden > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{hidden} more steps are left out here; <code>infra runs show {}</code> \
lists every record.</p>",
            escape(v.run_id.get(..8).unwrap_or(&v.run_id))
        );
    }
}

fn table(out: &mut String, v: &View, x: &Extras) {
    out.push_str(
        "<section id=\"steps\"><h2>Steps</h2><table><thead><tr><th>step</th><th>status</th>\
<th>attempts</th><th>duration</th><th>start</th><th>artifacts</th><th>note</th></tr></thead><tbody>\n",
    );
    let (rows, hidden) = capped(v, (0..v.steps.len()).collect());
    for s in rows.into_iter().map(|i| &v.steps[i]) {
        let kind = match s.kind {
            super::Kind::Main => String::new(),
            super::Kind::Finally => " <span class=\"note\">finally</span>".into(),
            super::Kind::Rollback => " <span class=\"note\">rollback</span>".into(),
        };
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code>{kind}<br/><span class=\"note\">{}</span></td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.id),
            escape(&s.action),
            chip(s.status),
            s.retries(),
            s.duration_ms().map_or(String::new(), duration),
            s.attempts
                .first()
                .map_or(String::new(), |a| format!("+{}", duration(a.start_ms))),
            s.artifacts
                .iter()
                .map(|u| link(x, u, u.rsplit('/').next().unwrap_or(u)))
                .collect::<Vec<_>>()
                .join(" "),
            note(s),
        );
    }
    out.push_str("</tbody></table>");
    left_out(out, hidden, v);
    out.push_str("</section>\n");
}

fn note(s: &StepView) -> String {
    if let Some(r) = &s.reason {
        return escape(r);
    }
    match &s.error {
        Some(e) => format!(
            "<code>{}</code> {}",
            escape(&e.kind),
            escape(&fit(&e.message, 400))
        ),
        None => String::new(),
    }
}
