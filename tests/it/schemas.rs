//! The committed JSON Schemas are the ones the code validates with: generated from the code, compared here.
//! `UPDATE_SCHEMAS=1 cargo test --test it schemas` rewrites them.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("json");
    s.push('\n');
    s
}

fn expected() -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    m.insert(
        schemas_dir().join("runbook.schema.json"),
        pretty(&dsl::raw::runbook_file_schema()),
    );
    m.insert(
        schemas_dir().join("evidence.schema.json"),
        pretty(&engine::record::evidence::schema()),
    );
    m.insert(
        schemas_dir().join("audit.schema.json"),
        pretty(&engine::record::audit_record::schema()),
    );
    m.insert(
        schemas_dir().join("targets.schema.json"),
        pretty(&engine::targets::schema()),
    );
    m.insert(
        schemas_dir().join("policy.schema.json"),
        pretty(&engine::policy::schema()),
    );
    m.insert(
        schemas_dir().join("capabilities.schema.json"),
        pretty(&engine::capability::schema()),
    );
    for a in engine::actions::all_actions() {
        m.insert(
            schemas_dir().join("actions").join(a.schema_file()),
            pretty(a.schema()),
        );
    }
    m
}

#[test]
fn committed_schemas_match_the_code() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let want = expected();
    let mut problems = Vec::new();
    for (path, text) in &want {
        match std::fs::read_to_string(path) {
            Ok(old) if old == *text => {}
            _ if update => {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(path, text).expect("write schema");
            }
            Ok(_) => problems.push(format!("{} differs from the code", path.display())),
            Err(_) => problems.push(format!("{} is missing", path.display())),
        }
    }
    let actions_dir = schemas_dir().join("actions");
    for entry in std::fs::read_dir(&actions_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        if !want.contains_key(&entry.path()) {
            problems.push(format!(
                "{} belongs to no registered action",
                entry.path().display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nrun `UPDATE_SCHEMAS=1 cargo test --test it schemas` to regenerate",
        problems.join("\n")
    );
}

#[test]
fn every_schema_is_valid_draft_2020_12_and_every_example_passes() {
    for (path, text) in expected() {
        let schema: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema",
            "{}",
            path.display()
        );
        jsonschema::draft202012::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for a in engine::actions::all_actions() {
        let example = (a.example)();
        let v = engine::actions::validator(a);
        let errors: Vec<String> = v.iter_errors(&example).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{}: example {example} is invalid: {errors:?}",
            a.qualified()
        );
        // the example compiles as a single call too
        engine::compile_call(a.tool, &example, &engine::CompileOptions::default())
            .unwrap_or_else(|d| panic!("{}: {d:?}", a.qualified()));
    }
}

#[test]
fn a_single_call_is_a_one_node_plan_through_the_same_compiler() {
    let opts = engine::CompileOptions::default();
    let plan = engine::compile_call(
        "mcp_state",
        &serde_json::json!({"action": "set", "key": "k", "value": 1}),
        &opts,
    )
    .expect("compiles");
    assert_eq!(plan.len(), 1);
    assert_eq!(plan.effects(), dsl::Effect::Write);
    let err = engine::compile_call(
        "state",
        &serde_json::json!({"action": "set", "value": 1}),
        &opts,
    )
    .expect_err("no key");
    assert_eq!(err[0].code, dsl::Code::MissingKey);
    assert_eq!(err[0].path.as_deref(), Some("/steps/0/args/key"));
    let err = engine::compile_call("nope", &serde_json::json!({"action": "x"}), &opts)
        .expect_err("no tool");
    assert_eq!(err[0].code, dsl::Code::UnknownTool);
}

/// Every record a run writes to the audit log is a line the committed audit schema accepts: starts and
/// ends, intents and outcomes, a refusal and a rejection.
#[test]
fn audit_lines_match_the_audit_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine::run::Engine::new(
        engine::ctx::Config::at(dir.path()),
        std::sync::Arc::new(engine::Catalog::builtin()),
    );
    let file = dsl::SourceFile::new(
        "a.yaml",
        "name: a\nsteps:\n  - {id: set, tool: state, args: {action: set, key: k, value: 1}}\n  - {id: off, tool: local, continue_on_error: true, args: {action: exec, command: 'true'}}\n  - {id: bad, tool: state, continue_on_error: true, foreach: '{{ 5 }}', args: {action: get, key: k}}\n",
    );
    let loaded = dsl::load(&file, None);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let rb = std::sync::Arc::new(loaded.runbooks.into_iter().next().expect("runbook"));
    let plan = engine::compile(rb, &engine::CompileOptions::default()).expect("compiles");
    let _ = e.execute(
        &plan,
        serde_json::Map::new(),
        &engine::run::RunOptions::default(),
    );
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(schemas_dir().join("audit.schema.json")).expect("schema"),
    )
    .expect("json");
    let v = jsonschema::draft202012::new(&schema).expect("valid schema");
    let log = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit log");
    let mut kinds = std::collections::BTreeSet::new();
    for line in log.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).expect("json line");
        let errors: Vec<String> = v.iter_errors(&rec).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}: {errors:?}");
        kinds.insert(rec["kind"].as_str().unwrap_or_default().to_owned());
    }
    for k in [
        "run_started",
        "intent",
        "outcome",
        "refused",
        "rejected",
        "run_finished",
    ] {
        assert!(kinds.contains(k), "no `{k}` record in {kinds:?}");
    }
}
