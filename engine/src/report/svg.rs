//! The step graph and the timeline as SVG text.
//!
//! A step's status shows four ways, so no one needs colour to read it: the box's colour, a drawn icon
//! (SVG shapes in `<symbol>`s, no font glyph), the border's style (solid, thick, dashed, dotted…) and
//! the word. `finally` steps are pill-shaped and say so; rollbacks have a double border, name their
//! step, and hang from it by a dashed edge. A retried step says how many attempts it took; a skipped
//! one says why. An edge implied by a longer path is left out (`layout::essential`). Labels are cut to fit their box (the whole text is in the node's `<title>`).
//!
//! Shapes are styled by class: [`STYLE`] is the stylesheet, put in a standalone SVG's `<style>` or in
//! the report's one stylesheet.

use std::fmt::Write;

use super::layout::{self, GAP_Y, NODE_H, NODE_W};
use super::{Kind, Shown, View, escape};

/// The stylesheet of both drawings.
pub const STYLE: &str = "\
svg text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace;font-size:11px;fill:#212121}\
.n .id{font-weight:bold;font-size:12px}.n .st{font-size:11px;fill:#37474f}\
.b{stroke-width:1.6}.in{fill:none;stroke-width:1}\
.s-ok .b,.bar.s-ok{fill:#e8f5e9;stroke:#2e7d32}\
.s-failed .b,.bar.s-failed{fill:#ffebee;stroke:#c62828;stroke-width:3.2}\
.s-timeout .b,.bar.s-timeout{fill:#fff3e0;stroke:#e65100;stroke-width:2.6;stroke-dasharray:9 3}\
.s-cancelled .b,.bar.s-cancelled{fill:#eeeeee;stroke:#424242;stroke-width:2;stroke-dasharray:5 3}\
.s-refused .b,.bar.s-refused{fill:#f3e5f5;stroke:#6a1b9a;stroke-width:2.6;stroke-dasharray:10 3 2 3}\
.s-skipped .b,.bar.s-skipped{fill:#fafafa;stroke:#9e9e9e;stroke-dasharray:2 3}\
.s-running .b,.bar.s-running{fill:#e3f2fd;stroke:#1565c0;stroke-dasharray:12 4}\
.s-notrun .b{fill:#ffffff;stroke:#bdbdbd;stroke-dasharray:1 4}\
.s-plan .b{fill:#ffffff;stroke:#546e7a}\
.in{stroke:#6d4c41}\
.e{fill:none;stroke:#78909c;stroke-width:1.3}.e.rb{stroke:#8d6e63;stroke-dasharray:6 4}\
.bar{stroke-width:1.2}.bar.retry{fill-opacity:.45;stroke-dasharray:4 3;stroke-width:1.6}\
.ax{stroke:#cfd8dc;stroke-width:1}.tl .lbl{font-size:11px}\
";

/// The drawn icons, one `<symbol>` per status, and the arrowhead (a standalone graph has its own; the
/// report has them once, for the graph and every status chip).
pub const DEFS: &str = concat!(
    "<defs>",
    r##"<marker id="ah" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0 0L10 5L0 10z" fill="#78909c"/></marker>"##,
    r##"<symbol id="i-ok" viewBox="0 0 16 16"><circle cx="8" cy="8" r="8" fill="#2e7d32"/><path d="M4 8.5l2.6 2.6L12 5.2" fill="none" stroke="#fff" stroke-width="2"/></symbol>"##,
    r##"<symbol id="i-failed" viewBox="0 0 16 16"><circle cx="8" cy="8" r="8" fill="#c62828"/><path d="M5 5l6 6M11 5l-6 6" stroke="#fff" stroke-width="2.2"/></symbol>"##,
    r##"<symbol id="i-timeout" viewBox="0 0 16 16"><circle cx="8" cy="8" r="8" fill="#e65100"/><path d="M8 3.5V8.4l3.2 2" fill="none" stroke="#fff" stroke-width="1.8"/></symbol>"##,
    r##"<symbol id="i-cancelled" viewBox="0 0 16 16"><circle cx="8" cy="8" r="8" fill="#424242"/><rect x="5" y="5" width="6" height="6" fill="#fff"/></symbol>"##,
    r##"<symbol id="i-refused" viewBox="0 0 16 16"><circle cx="8" cy="8" r="8" fill="#6a1b9a"/><rect x="3.5" y="6.9" width="9" height="2.2" fill="#fff"/></symbol>"##,
    r##"<symbol id="i-skipped" viewBox="0 0 16 16"><circle cx="8" cy="8" r="8" fill="#9e9e9e"/><path d="M3.8 4.6l4 3.4-4 3.4zM8.2 4.6l4 3.4-4 3.4z" fill="#fff"/></symbol>"##,
    r##"<symbol id="i-running" viewBox="0 0 16 16"><circle cx="8" cy="8" r="8" fill="#1565c0"/><circle cx="8" cy="8" r="3" fill="#fff"/></symbol>"##,
    r##"<symbol id="i-notrun" viewBox="0 0 16 16"><circle cx="8" cy="8" r="6.5" fill="#fff" stroke="#9e9e9e" stroke-width="1.6"/></symbol>"##,
    r##"<symbol id="i-plan" viewBox="0 0 16 16"><rect x="2.5" y="2.5" width="11" height="11" rx="2" fill="#fff" stroke="#546e7a" stroke-width="1.6"/></symbol>"##,
    "</defs>"
);

/// At most `cols` columns of text (a character outside ASCII counts two), cut with `…`.
pub fn fit(s: &str, cols: usize) -> String {
    let width = |c: char| if c.is_ascii() { 1 } else { 2 };
    if s.chars().map(width).sum::<usize>() <= cols {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        if used + width(c) > cols.saturating_sub(1) {
            break;
        }
        used += width(c);
        out.push(c);
    }
    out.push('…');
    out
}

/// What the third line of a node says.
fn status_line(s: &super::StepView) -> String {
    match s.status {
        Shown::Skipped => match &s.reason {
            Some(r) => format!("skipped: {r}"),
            None => "skipped".into(),
        },
        Shown::Plan | Shown::NotRun => s.status.word().into(),
        st => match s.retries() {
            n if n > 1 => format!("{} · {n} attempts", st.word()),
            _ => st.word().into(),
        },
    }
}

fn second_line(s: &super::StepView) -> String {
    match (s.kind, &s.rollback_of) {
        (Kind::Finally, _) => format!("finally · {}", s.action),
        (Kind::Rollback, Some(of)) => format!("rollback of {of}"),
        (Kind::Rollback, None) => format!("rollback · {}", s.action),
        (Kind::Main, _) => s.action.clone(),
    }
}

/// The graph of `view`, or of the steps `only` names (indices into `view.steps`, in order). With
/// `standalone`, an SVG document with its own stylesheet; else an element for the report.
pub fn graph(view: &View, only: Option<&[usize]>, standalone: bool) -> String {
    let all: Vec<usize>;
    let shown: &[usize] = match only {
        Some(o) => o,
        None => {
            all = (0..view.steps.len()).collect();
            &all
        }
    };
    let mut local = vec![usize::MAX; view.steps.len()];
    for (k, &i) in shown.iter().enumerate() {
        local[i] = k;
    }
    let edges: Vec<(usize, usize, bool)> = view
        .edges
        .iter()
        .filter(|(a, b)| local[*a] != usize::MAX && local[*b] != usize::MAX)
        .map(|&(a, b)| (local[a], local[b], view.steps[b].kind == Kind::Rollback))
        .collect();
    // an edge another path already implies is not drawn (transitive reduction)
    let keep = layout::essential(
        shown.len(),
        &edges.iter().map(|&(a, b, _)| (a, b)).collect::<Vec<_>>(),
    );
    let edges: Vec<(usize, usize, bool)> = edges
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect();
    let pairs: Vec<(usize, usize)> = edges.iter().map(|&(a, b, _)| (a, b)).collect();
    let l = layout::layout(shown.len(), &pairs);
    let mut out = String::with_capacity(400 * shown.len() + 2000);
    if standalone {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    }
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="g" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">"#,
        w = l.width,
        h = l.height,
        label = escape(&format!("steps of {}", view.runbook)),
    );
    if standalone {
        let _ = write!(out, "<style>{STYLE}</style>{DEFS}");
    }
    for (k, &(a, b, rollback)) in edges.iter().enumerate() {
        let (ax, ay) = l.pos[a];
        let (bx, by) = l.pos[b];
        let mut d = format!("M{} {}", ax + NODE_W / 2, ay + NODE_H);
        let mut from = (ax + NODE_W / 2, ay + NODE_H);
        // down through each layer it crosses (beside the boxes), then into the target's top
        let mut points = l.routes[k].clone();
        points.push((bx + NODE_W / 2, by.saturating_sub(2)));
        for pair in points.chunks(2) {
            let to = pair[0];
            let dy = (GAP_Y / 2).min(to.1.saturating_sub(from.1) / 2);
            let _ = write!(
                d,
                "C{} {} {} {} {} {}",
                from.0,
                from.1 + dy,
                to.0,
                to.1 - dy,
                to.0,
                to.1
            );
            from = to;
            if let Some(&below) = pair.get(1) {
                let _ = write!(d, "V{}", below.1);
                from = below;
            }
        }
        let _ = write!(
            out,
            r#"<path class="e{}" d="{d}" marker-end="url(#ah)"/>"#,
            if rollback { " rb" } else { "" },
        );
    }
    for (k, &i) in shown.iter().enumerate() {
        let s = &view.steps[i];
        let (x, y) = l.pos[k];
        let cls = s.status.class();
        let (first, second, third) = (fit(&s.id, 22), fit(&second_line(s), 24), status_line(s));
        let third_cut = fit(&third, 24);
        let _ = write!(
            out,
            r#"<g class="n s-{cls}" transform="translate({x},{y})">"#
        );
        // the whole text when a label was cut or there is an error (a tooltip, and for screen readers)
        if first != s.id || second != second_line(s) || third_cut != third || s.error.is_some() {
            let mut title = format!("{} — {}\n{}", s.id, second_line(s), third);
            if let Some(e) = &s.error {
                let _ = write!(title, "\n{}: {}", e.kind, fit(&e.message, 300));
            }
            let _ = write!(out, "<title>{}</title>", escape(&title));
        }
        let _ = write!(
            out,
            r#"<rect class="b" width="{NODE_W}" height="{NODE_H}" rx="{}"/>"#,
            if s.kind == Kind::Finally { 22 } else { 4 },
        );
        if s.kind == Kind::Rollback {
            let _ = write!(
                out,
                r#"<rect class="in" x="4" y="4" width="{}" height="{}" rx="2"/>"#,
                NODE_W - 8,
                NODE_H - 8
            );
        }
        let tx = if s.kind == Kind::Finally { 36 } else { 32 };
        let _ = write!(
            out,
            r##"<use href="#i-{cls}" x="{ix}" y="8" width="16" height="16"/><text x="{tx}" y="20" class="id">{}</text><text x="{tx}" y="36">{}</text><text x="{tx}" y="51" class="st">{}</text></g>"##,
            escape(&first),
            escape(&second),
            escape(&third_cut),
            ix = tx - 24,
        );
    }
    out.push_str("</svg>");
    if standalone {
        out.push('\n');
    }
    out
}

/// Timeline sizes.
const LABEL_W: u32 = 230;
const PLOT_W: u32 = 880;
const ROW_H: u32 = 18;
const AXIS_H: u32 = 24;

/// The steps that ran, in order of first start: the timeline's rows.
pub fn timeline_rows(view: &View) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..view.steps.len())
        .filter(|&i| !view.steps[i].attempts.is_empty())
        .collect();
    rows.sort_by_key(|&i| (view.steps[i].attempts[0].start_ms, i));
    rows
}

/// One bar per attempt on the run's time axis, one row per step of `rows` (rows in order of first start, so
/// steps that ran in parallel sit side by side on neighbouring rows with overlapping bars). An
/// attempt that was retried is dashed and paler.
pub fn timeline(view: &View, rows: &[usize]) -> String {
    let end = view
        .steps
        .iter()
        .flat_map(|s| &s.attempts)
        .map(|a| a.start_ms + a.duration_ms.unwrap_or(0))
        .max()
        .unwrap_or(0)
        .max(view.duration_ms.unwrap_or(0))
        .max(1);
    let (tick, unit) = ticks(end);
    let h = AXIS_H + rows.len() as u32 * ROW_H + 6;
    let w = LABEL_W + PLOT_W + 20;
    let mut out = String::with_capacity(200 * rows.len() + 1000);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="tl" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="timeline">"#
    );
    let x_of = |ms: u64| LABEL_W as f64 + ms as f64 / end as f64 * PLOT_W as f64;
    let mut t = 0;
    while t <= end {
        let x = x_of(t);
        let _ = write!(
            out,
            r#"<line class="ax" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{h}"/><text x="{x:.1}" y="14" text-anchor="middle">{}</text>"#,
            AXIS_H - 6,
            unit(t),
        );
        t += tick;
    }
    for (r, &i) in rows.iter().enumerate() {
        let s = &view.steps[i];
        let y = AXIS_H + r as u32 * ROW_H;
        let _ = write!(
            out,
            r#"<text class="lbl" x="4" y="{}">{}</text>"#,
            y + 13,
            escape(&fit(&s.id, 30)),
        );
        for a in &s.attempts {
            let retried = s
                .attempts
                .iter()
                .any(|b| b.index == a.index && b.attempt > a.attempt);
            let x = x_of(a.start_ms);
            let width = (x_of(a.start_ms + a.duration_ms.unwrap_or(0)) - x).max(2.0);
            let what = match a.index {
                Some(ix) => format!("{} [{ix}]", s.id),
                None => s.id.clone(),
            };
            let _ = write!(
                out,
                r#"<rect class="bar s-{}{}" x="{x:.1}" y="{}" width="{width:.1}" height="{}"><title>{}</title></rect>"#,
                a.status.class(),
                if retried { " retry" } else { "" },
                y + 3,
                ROW_H - 6,
                escape(&format!(
                    "{what} attempt {}: {}{}, from {} ms{}",
                    a.attempt,
                    a.status.word(),
                    if retried { " (retried)" } else { "" },
                    a.start_ms,
                    a.duration_ms
                        .map(|d| format!(", {d} ms"))
                        .unwrap_or_default(),
                )),
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// A tick spacing for an axis of `end` ms (at most about ten ticks), and how to write a tick.
fn ticks(end: u64) -> (u64, fn(u64) -> String) {
    let steps = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 86_400_000,
    ];
    let tick = steps
        .iter()
        .copied()
        .find(|s| end / s <= 10)
        .unwrap_or(end.div_ceil(10).max(1));
    let unit: fn(u64) -> String = if tick >= 60_000 {
        |t| format!("{}m{:02}s", t / 60_000, t % 60_000 / 1000)
    } else if tick >= 100 {
        |t| match t {
            0 => "0".into(),
            t if t % 1000 == 0 => format!("{}s", t / 1000),
            t => format!("{:.1}s", t as f64 / 1000.0),
        }
    } else {
        |t| format!("{t}ms")
    };
    (tick, unit)
}
