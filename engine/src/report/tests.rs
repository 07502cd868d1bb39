use serde_json::{Value, json};

use super::html::{Extras, csp, report, stylesheet};
use super::*;
use crate::record::evidence::{ErrorInfo, Record, Status};

const HOSTILE: &str = "<script>alert('x')</script>\"]]>&amp;";

/// A plan of `n` steps: `s0`, then each needs one or two earlier steps; `fin` in `finally`, and a
/// rollback on `s0`.
fn plan(n: usize, first: &str) -> Value {
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = if i == 0 {
            first.to_owned()
        } else {
            format!("s{i}")
        };
        let needs: Vec<String> = match i {
            0 => vec![],
            1 | 2 => vec![first.to_owned()],
            _ => {
                let mut v = vec![format!("s{}", i - 1)];
                if i % 3 == 0 {
                    v.push(format!("s{}", i - 2));
                }
                v
            }
        };
        let mut node =
            json!({"id": id, "phase": "main", "tool": "local", "action": "exec", "needs": needs});
        if i == 0 {
            node["rollback"] =
                json!({"id": format!("{first}-rollback"), "tool": "state", "action": "set"});
        }
        nodes.push(node);
    }
    nodes.push(
        json!({"id": "fin", "phase": "finally", "tool": "state", "action": "get", "needs": []}),
    );
    json!({"runbook": "deploy", "digest": "abc123", "nodes": nodes})
}

fn ts(ms: u64) -> String {
    format!(
        "2026-12-05T10:{:02}:{:02}.{:03}Z",
        ms / 60_000,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// A run of `plan(n)`: every step succeeds but `s{fail}` (two attempts, the last failed), after which
/// the rest are skipped; `fin` runs; the rollback runs.
fn records(n: usize, first: &str, fail: usize, message: &str) -> Vec<Record> {
    let id = "0123456789abcdef";
    let mut r = vec![Record::RunStarted {
        run_id: id.into(),
        ts: ts(0),
        runbook: "deploy".into(),
        source: "deploy.yaml".into(),
        runbook_digest: "rd".into(),
        plan_digest: "abc123".into(),
        inputs: json!({}),
        effects: "write".into(),
        resumed_from: None,
    }];
    let mut t = 0;
    let step = |r: &mut Vec<Record>, name: &str, attempt: u32, status: Status, t: &mut u64| {
        r.push(Record::NodeStarted {
            run_id: id.into(),
            ts: ts(*t),
            step: name.into(),
            attempt,
            index: None,
            tool: "local".into(),
            action: "exec".into(),
            args: json!({}),
        });
        *t += 40;
        let failed = status != Status::Succeeded;
        r.push(Record::NodeFinished {
            run_id: id.into(),
            ts: ts(*t),
            step: name.into(),
            attempt,
            index: None,
            status,
            duration_ms: 40,
            exit_code: failed.then_some(3),
            outputs: Value::Null,
            artifacts: vec![
                format!("artifact://runs/deploy/x/{name}/stdout"),
                format!("artifact://runs/deploy/x/{name}/stderr"),
            ],
            error: failed.then(|| ErrorInfo {
                kind: "nonzero_exit".into(),
                message: message.into(),
            }),
        });
    };
    for i in 0..n {
        let name = if i == 0 {
            first.to_owned()
        } else {
            format!("s{i}")
        };
        if i < fail {
            step(&mut r, &name, 1, Status::Succeeded, &mut t);
        } else if i == fail {
            step(&mut r, &name, 1, Status::Failed, &mut t);
            step(&mut r, &name, 2, Status::Failed, &mut t);
        } else {
            r.push(Record::NodeSkipped {
                run_id: id.into(),
                ts: ts(t),
                step: name,
                reason: "a needed step failed".into(),
            });
        }
    }
    step(&mut r, "fin", 1, Status::Succeeded, &mut t);
    step(
        &mut r,
        &format!("{first}-rollback"),
        1,
        Status::Succeeded,
        &mut t,
    );
    r.push(Record::RunFinished {
        run_id: id.into(),
        ts: ts(t),
        status: Status::Failed,
        duration_ms: t,
        outputs: Value::Null,
        error: Some(ErrorInfo {
            kind: "step_failed".into(),
            message: format!(
                "step `{}` failed",
                if fail == 0 {
                    first.to_owned()
                } else {
                    format!("s{fail}")
                }
            ),
        }),
    });
    r
}

fn extras(tail: &str, step: &str) -> Extras {
    Extras {
        tails: [(step.to_owned(), tail.to_owned())].into(),
        uri_base: "artifact://runs/deploy/x".into(),
        ..Extras::default()
    }
}

/// Well-formed XML, checked the simple way: every tag closes in order, attributes are quoted, and no
/// `<` or `&` appears in text unescaped. Enough for what the renderer writes.
pub(super) fn well_formed(xml: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = xml.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let void = ["meta", "br"];
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        check_text(text);
        let close = rest[open..].find('>').expect("tag closes") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "</{name}> closes the wrong tag");
            continue;
        }
        let name = tag.split([' ', '/']).next().expect("a name");
        // attribute values are quoted and hold no `<` or `"`
        let quotes = tag.matches('"').count();
        assert!(quotes.is_multiple_of(2), "unbalanced quotes in <{tag}>");
        if !tag.ends_with('/') && !void.contains(&name) {
            stack.push(name);
        }
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn check_text(text: &str) {
    for (i, _) in text.match_indices('&') {
        let ent = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                .iter()
                .any(|e| ent.starts_with(e)),
            "a bare & in {text:?}"
        );
    }
}

#[test]
fn a_run_shows_each_step_with_its_journal_status() {
    let v = View::of_run(Some(&plan(6, "s0")), &records(6, "s0", 3, "boom"), false);
    let by = |id: &str| v.steps.iter().find(|s| s.id == id).expect(id);
    assert_eq!(by("s0").status, Shown::Succeeded);
    assert_eq!(by("s3").status, Shown::Failed);
    assert_eq!(by("s3").retries(), 2);
    assert_eq!(by("s4").status, Shown::Skipped);
    assert_eq!(by("s4").reason.as_deref(), Some("a needed step failed"));
    assert_eq!(by("fin").kind, Kind::Finally);
    assert_eq!(by("s0-rollback").kind, Kind::Rollback);
    assert_eq!(by("s0-rollback").status, Shown::Succeeded);
    assert_eq!(v.steps.len(), 8, "six steps, finally, the rollback");
    assert_eq!(v.failures().len(), 1);
    // every plan node appears in the graph once, with its status word
    let svg = svg::graph(&v, None, true);
    assert_eq!(svg.matches("<g class=\"n ").count(), 8);
    assert!(svg.contains("failed · 2 attempts"));
    assert!(svg.contains("skipped: a needed step…") || svg.contains("skipped: a needed step f"));
    assert!(svg.contains("rollback of s0"));
    assert!(svg.contains("finally · state.get"));
    // a plan alone: no statuses
    let p = svg::graph(&View::of_plan(&plan(6, "s0")), None, true);
    assert_eq!(p.matches("class=\"n s-plan\"").count(), 8);
    well_formed(&p);
}

#[test]
fn the_report_has_its_sections_in_order_and_no_script() {
    let tail: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let v = View::of_run(Some(&plan(6, "s0")), &records(6, "s0", 3, "boom"), false);
    let html = report(&v, &extras(&tail, "s3"));
    let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("no {s}"));
    assert!(at("id=\"summary\"") < at("id=\"why\""));
    assert!(at("id=\"why\"") < at("id=\"graph\""));
    assert!(at("id=\"graph\"") < at("id=\"timeline\""));
    assert!(at("id=\"timeline\"") < at("id=\"steps\""));
    assert!(html.contains("line 11\nline 12") && html.contains("line 30"));
    assert!(!html.contains("line 10\n"), "only the last 20 lines");
    assert!(html.contains("<a href=\"./s3/stderr\">stderr</a>"));
    assert!(!html.to_lowercase().contains("<script"));
    assert!(
        !html.contains("http://")
            || html.matches("http://").count()
                == html.matches("http://www.w3.org/2000/svg").count()
    );
    assert!(!html.contains("https://"));
    // the retried attempt is dashed on the timeline
    assert_eq!(html.matches("bar s-failed retry").count(), 1);
    well_formed(html.trim_start_matches("<!DOCTYPE html>\n"));
}

#[test]
fn the_csp_hash_is_the_stylesheets() {
    let v = View::of_run(Some(&plan(3, "s0")), &records(3, "s0", 1, "x"), false);
    let html = report(&v, &Extras::default());
    let style = stylesheet();
    assert!(html.contains(&format!("<style>{style}</style>")));
    assert_eq!(html.matches("<style>").count(), 1);
    let policy = csp(&style);
    assert!(html.contains(&format!("content=\"{policy}\"")));
    assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"));
    assert!(!policy.contains("script-src") && !policy.contains("unsafe"));
    assert!(
        !html.contains(" style=\""),
        "no inline style attribute (the hash would not cover it)"
    );
    // the hash of a known text, so the encoding is right: sha256("") in base64
    assert!(csp("").contains("'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"));
}

#[test]
fn hostile_text_stays_text() {
    let v = View::of_run(
        Some(&plan(4, HOSTILE)),
        &records(4, HOSTILE, 0, HOSTILE),
        false,
    );
    let html = report(&v, &extras(&format!("{HOSTILE}\n{HOSTILE}"), HOSTILE));
    assert!(!html.contains("<script"), "a planted tag escaped");
    assert!(!html.contains("]]>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;]]&gt;&amp;amp;"));
    well_formed(html.trim_start_matches("<!DOCTYPE html>\n"));
    let svg = svg::graph(&v, None, true);
    assert!(!svg.contains("<script") && !svg.contains("]]>"));
    well_formed(&svg);
}

#[test]
fn the_same_run_gives_the_same_bytes() {
    let make = || {
        let v = View::of_run(Some(&plan(40, "s0")), &records(40, "s0", 20, "e"), false);
        report(&v, &extras("a\nb\n", "s20"))
    };
    assert_eq!(make(), make());
}

#[test]
#[allow(clippy::print_stderr)] // sizes, for people (`-- --nocapture`)
fn big_runs_focus_on_the_failure_and_stay_within_budget() {
    for (n, budget) in [(100, 200 * 1024), (1000, 1024 * 1024)] {
        let v = View::of_run(
            Some(&plan(n, "s0")),
            &records(n, "s0", n / 2, "exit 1"),
            false,
        );
        let html = report(&v, &extras("x\n", "s1"));
        eprintln!("report of {n} steps: {} bytes", html.len());
        assert!(html.len() < budget, "{n} steps: {} bytes", html.len());
        let drawn = html.matches("<g class=\"n ").count();
        assert!(drawn < 12, "{drawn} nodes drawn around the failure");
        let full = report(
            &v,
            &Extras {
                full_graph: true,
                ..extras("x\n", "s1")
            },
        );
        assert_eq!(full.matches("<g class=\"n ").count(), n + 2);
        eprintln!("with the whole graph: {} bytes", full.len());
        // a run that succeeded has no failure to centre on: the whole graph
        let ok = View::of_run(Some(&plan(n, "s0")), &records(n, "s0", n, "e"), false);
        let whole = report(&ok, &Extras::default());
        eprintln!("a successful run of {n} steps: {} bytes", whole.len());
        assert!(whole.len() < budget, "{n} steps: {} bytes", whole.len());
    }
}

#[test]
fn a_run_without_its_plan_is_drawn_from_its_journal() {
    let v = View::of_run(None, &records(5, "s0", 2, "x"), true);
    assert!(v.edges.is_empty() && v.torn);
    assert_eq!(v.runbook, "deploy");
    assert!(
        v.steps
            .iter()
            .any(|s| s.id == "s2" && s.status == Shown::Failed)
    );
    let html = report(&v, &Extras::default());
    assert!(html.contains("torn"));
}

#[test]
fn labels_are_cut_to_fit() {
    assert_eq!(svg::fit("short", 10), "short");
    assert_eq!(svg::fit("abcdefghijkl", 6), "abcde…");
    assert_eq!(svg::fit("ééééé", 6), "éé…");
    assert_eq!(html::last_lines("a\nb\nc\n", 2), "b\nc");
    assert_eq!(html::last_lines("a\nb", 5), "a\nb");
    assert_eq!(html::percent("a b/ü"), "a%20b/%C3%BC");
}

#[test]
fn huge_runs_are_cut_but_keep_their_failures() {
    let n = 6_000;
    let v = View::of_run(
        Some(&plan(n, "s0")),
        &records(n, "s0", n - 10, "late"),
        false,
    );
    let html = report(&v, &extras("x\n", "s1"));
    // the failure's neighbourhood is drawn; the table and timeline are cut, the failing step kept
    assert!(html.matches("<g class=\"n ").count() < 12);
    assert!(html.matches("<tr>").count() <= html::MAX_ROWS + 1);
    assert!(html.contains(&format!("<code>s{}</code>", n - 10)));
    assert!(html.contains("more steps are left out here"));
    // asked for every node, there are too many to draw
    let all = report(
        &v,
        &Extras {
            full_graph: true,
            ..Extras::default()
        },
    );
    assert!(all.contains("too many to draw here"));
    assert!(all.len() < 2 * 1024 * 1024, "{} bytes", all.len());
}
