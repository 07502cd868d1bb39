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
        schemas_dir().join("targets.schema.json"),
        pretty(&engine::targets::schema()),
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
