use serde_json::{Value, json};

use super::cond::condition;
use super::path::{Cx, Missing, Renames};
use crate::diagnostic::Code;
use crate::raw::{BoolOrTemplate, ListOrTemplate};
use crate::template::{Mode, renderer};
use crate::{SourceFile, load};

fn cx() -> Cx {
    Cx {
        renames: Renames::default(),
        missing: Missing::Error,
    }
}

/// Renders a translated condition against a context, as the engine renders `when`.
fn holds(c: Value, ctx: &Value) -> Value {
    let expr = condition(&c, &cx()).expect("translates");
    renderer()
        .render(&format!("{{{{ {expr} }}}}"), Mode::Plain, ctx)
        .unwrap_or_else(|e| panic!("{expr}: {}", e.message))
}

#[test]
fn conditions_keep_the_originals_meaning() {
    let ctx = json!({
        "input": {"flag": true, "env": "prod", "n": 5, "empty": "", "nul": null},
        "steps": {"a": {"stdout": "Synced Healthy", "list": [1, 2], "rows": [{"v": "7"}]}},
    });
    let t = Value::Bool(true);
    let f = Value::Bool(false);
    let cases = [
        (json!({"path": "input.flag", "equals": true}), &t),
        (json!({"path": "input.flag", "equals": "true"}), &f),
        (json!({"path": "input.env", "not_equals": "dev"}), &t),
        (json!({"path": "input.env", "in": ["dev", "prod"]}), &t),
        (json!({"path": "input.missing", "in": ["dev", "prod"]}), &f),
        (json!({"path": "steps.a.stdout", "contains": "Healthy"}), &t),
        (json!({"path": "steps.a.list", "contains": 3}), &f),
        (json!({"path": "steps.a.nope.deeper", "exists": true}), &f),
        (json!({"path": "steps.a.nope.deeper", "exists": false}), &t),
        (json!({"path": "input.nul", "exists": true}), &f),
        (json!({"path": "input.empty", "exists": true}), &t),
        (json!({"path": "input.n", "gt": 4}), &t),
        (
            json!({"path": "input.n", "lte": "{{ steps.a.rows.0.v }}"}),
            &t,
        ),
        (json!({"path": "input.missing", "lt": 1}), &t),
        (
            json!({"path": "input.env", "equals": "{{ input.env }}"}),
            &t,
        ),
        (
            json!({"path": "input.env", "equals": "pr{{ input.empty }}od"}),
            &t,
        ),
        (json!({"path": "input.flag"}), &t),
        (json!({"path": "input.nul"}), &f),
        (json!({"value": 1, "in": [1, 2]}), &t),
        (
            json!({"and": [{"path": "input.flag", "equals": true}, {"path": "input.env", "equals": "dev"}]}),
            &f,
        ),
        (
            json!({"or": [{"path": "input.flag", "equals": false}, {"path": "input.env", "equals": "prod"}]}),
            &t,
        ),
        (json!({"not": {"path": "input.flag", "equals": true}}), &f),
        (json!({"and": []}), &t),
        (json!("{{ input.flag }}"), &t),
        (json!("{{ ?input.gone }}"), &f),
    ];
    for (c, want) in cases {
        assert_eq!(&holds(c.clone(), &ctx), want, "{c}");
    }
}

#[test]
fn conditions_without_an_equivalent_are_refused() {
    assert!(condition(&json!({"path": "{{ input.p }}", "exists": true}), &cx()).is_err());
    assert!(condition(&json!({"path": "a", "matches": "x"}), &cx()).is_err());
    assert!(condition(&json!([1]), &cx()).is_err());
}

const ORIGINAL: &str = r#"{
  "legacy.demo": {
    "description": "The original's syntax.",
    "inputs": ["env"],
    "stop_on_error": false,
    "template_missing": "error",
    "seed_state": {"greeting": "hi"},
    "steps": [
      {"id": "get", "tool": "state", "args": {"action": "get", "key": "greeting", "output": {"path": "value"}, "store_as": "copy"}},
      {"id": "check", "tool": "state",
       "when": {"and": [{"path": "steps.get", "equals": "hi"}, {"path": "input.env", "in": ["prod", "dev"]}]},
       "args": {"action": "set", "key": "k", "value": "{{ steps.get }}-{{ ?state.nothing }}-{{ trace_id }}"}},
      {"id": "each", "tool": "state", "foreach": {"items": ["a", "b"], "as": "x"},
       "args": {"action": "set", "key": "k_{{ x }}", "value": "{{ index }}"}},
      {"id": "poll", "tool": "state", "retry": {"max_attempts": 3, "delay_ms": 0, "until": {"path": "result.value", "exists": true}},
       "args": {"action": "get", "key": "greeting"}}
    ]
  }
}"#;

#[test]
fn an_original_runbooks_json_loads_with_warnings() {
    let loaded = load(&SourceFile::new("runbooks.json", ORIGINAL), None);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    assert!(
        loaded
            .diagnostics
            .iter()
            .all(|d| d.code == Code::DeprecatedSyntax && d.span.is_some() && d.help.is_some())
    );
    assert!(loaded.diagnostics.len() >= 8, "{:#?}", loaded.diagnostics);
    let rb = &loaded.runbooks[0];
    let ids: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["seed_greeting", "get", "get_store", "check", "each", "poll"]
    );
    let step = |id: &str| rb.steps.iter().find(|s| s.id.as_str() == id).expect("step");
    assert!(
        rb.steps
            .iter()
            .filter(|s| s.id.as_str() != "seed_greeting")
            .all(|s| s.continue_on_error)
    );
    assert_eq!(step("get_store").args["value"], "{{ steps.get.value }}");
    assert_eq!(step("get_store").args["scope"], "session");
    assert!(step("get").args.get("output").is_none());
    match &step("check").when {
        Some(BoolOrTemplate::Template(t)) => {
            assert!(t.contains("steps?.get?.value"), "{t}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        step("check").args["value"],
        "{{ steps.get.value }}-{{ state?.nothing | default(value=\"\") }}-{{ run.id }}"
    );
    assert!(matches!(&step("each").foreach, Some(ListOrTemplate::List(l)) if l.len() == 2));
    assert_eq!(step("each").args["key"], "k_{{ item }}");
    let retry = step("poll").retry.as_ref().expect("retry");
    assert_eq!(retry.attempts, 3);
    assert!(
        retry
            .until
            .as_deref()
            .is_some_and(|u| u.contains("result?.value"))
    );
}

#[test]
fn fix_writes_the_new_form_which_loads_without_warnings() {
    let file = SourceFile::new("runbooks.json", ORIGINAL);
    let fixed = super::fix(&file, None).expect("fixes").expect("changes");
    assert!(!fixed.changes.is_empty());
    let again = load(&SourceFile::new("runbooks.json", fixed.text.clone()), None);
    assert!(again.diagnostics.is_empty(), "{:#?}", again.diagnostics);
    assert!(fixed.text.contains("\"continue_on_error\": true"));
    // nothing to do the second time
    let file = SourceFile::new("runbooks.json", fixed.text);
    assert!(super::fix(&file, None).expect("fine").is_none());
    // YAML is written as YAML
    let yaml = "name: y\ninputs: [x]\nsteps:\n  - id: a\n    tool: state\n    when: {path: input.x, exists: true}\n    args: {action: get, key: k}\n";
    let fixed = super::fix(&SourceFile::new("y.yaml", yaml), None)
        .expect("fixes")
        .expect("changes");
    assert!(fixed.text.contains("when:"), "{}", fixed.text);
    assert!(!fixed.text.trim_start().starts_with('{'), "{}", fixed.text);
}

#[test]
fn what_cannot_be_translated_is_an_error_and_the_runbook_is_not_loaded() {
    let text = r#"{"a.b": {"steps": [{"id": "s", "tool": "state", "retry": {"max_attempts": "{{ input.n }}"}, "args": {"action": "get", "key": "k"}}]},
                 "c.d": {"steps": [{"id": "s", "tool": "state", "args": {"action": "get", "key": "k", "output": {"pick": ["value"]}}}]},
                 "ok.one": {"steps": [{"id": "s", "tool": "state", "args": {"action": "get", "key": "k"}}]}}"#;
    let loaded = load(&SourceFile::new("runbooks.json", text), None);
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 2, "{:#?}", loaded.diagnostics);
    assert!(errors.iter().all(|d| d.code == Code::DeprecatedSyntax));
    assert!(
        errors[0]
            .help
            .as_deref()
            .is_some_and(|h| h.contains("attempts"))
    );
    let names: Vec<&str> = loaded.runbooks.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ok.one"]);
    assert!(super::fix(&SourceFile::new("runbooks.json", text), None).is_err());
}

#[test]
fn a_file_found_current_at_first_look_is_left_as_it_is_by_the_whole_translation() {
    use super::{surely_current, translate_all};
    use crate::parse::parse;
    let legacy = [
        "name: a\nstop_on_error: false\nsteps: []\n",
        "name: a\ntemplate_missing: empty\nsteps: []\n",
        "name: a\nseed_state: {k: 1}\nsteps: []\n",
        "name: a\nsteps:\n  - {name: x, tool: state, args: {action: get, key: k}}\n",
        "name: a\nsteps:\n  - {id: x, tool: state, args: {action: get, key: k}, output: {path: v}}\n",
        "name: a\nsteps:\n  - {id: x, tool: state, args: {action: get, key: k, store_as: y}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, store_scope: run}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, foreach: {items: [1], as: n}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, when: {path: input.f}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, when: [{path: input.f}]}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, retry: {max_attempts: 2}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, retry: {attempts: 2, base_delay_ms: 1}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, retry: {attempts: 2, backoff_factor: 2}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, retry: {attempts: 2, retry_on_error: false}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, retry: {attempts: 2, until: {path: result.ok}}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a, key: '{{ ?input.k }}'}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a, key: '{{ steps.y.rows.0 }}'}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a, key: 'a {{ trace_id }}'}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a, list: ['{{ a[\"k\"] }}']}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, when: '{{ ?input.f }}'}\n",
        "name: a\nsteps: []\noutputs: {o: '{{ steps.x.0 }}'}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a, key: \"\\x7b{ ?input.k }}\"}}\n",
        "a:\n  steps:\n    - {name: x, tool: t, args: {action: a}}\nb:\n  steps: []\n",
    ];
    let current = [
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a, key: '{{ input.k | upper }}'}}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a, items: [{name: n, id: i}]}, foreach: [1, 2], when: '{{ input.f }}'}\n",
        "name: a\nsteps:\n  - {id: x, tool: t, args: {action: a}, retry: {attempts: 2, until: '{{ result.ok }}'}}\nfinally:\n  - {id: f, tool: t, args: {action: a}}\noutputs: {o: '{{ steps.x.v }}'}\n",
    ];
    let check = |text: &str| -> bool {
        let file = SourceFile::new("t.yaml", text);
        let mut tree = parse(&file).expect("parse");
        let current = surely_current(&tree);
        let before = tree.clone();
        let map_form = load::is_map_form(&tree);
        let t = translate_all(&file, &mut tree, map_form);
        if current {
            assert!(t.diagnostics.is_empty() && t.broken.is_empty(), "{text}");
            assert_eq!(tree, before, "{text}");
        }
        current
    };
    for text in legacy {
        assert!(!check(text), "{text}");
    }
    for text in current {
        assert!(check(text), "{text}");
    }
    // and every runbook of the repository
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../runbooks");
    let mut found = 0;
    for e in std::fs::read_dir(dir).expect("runbooks").flatten() {
        let text = std::fs::read_to_string(e.path()).expect("text");
        found += usize::from(check(&text));
    }
    assert!(found > 10, "{found}");
}
