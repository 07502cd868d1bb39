use std::path::Path;

use dsl::diagnostic::{RenderOptions, render_all};

use crate::{check_file, data_dir};

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            ) && !p.to_string_lossy().ends_with(".plan.json")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_err_file_reports_its_code_as_expected() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut mismatches = Vec::new();
    for path in files(&data_dir().join("err")) {
        let code = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("stem")
            .to_owned();
        let (_, diags) = check_file(&path);
        assert!(
            diags.iter().any(|d| d.code.as_str() == code),
            "{}: expected a `{code}` diagnostic, got {:?}",
            path.display(),
            diags.iter().map(|d| d.to_string()).collect::<Vec<_>>()
        );
        for d in &diags {
            assert!(
                d.span.is_some() && d.file.is_some(),
                "{}: unlocated diagnostic {d}",
                path.display()
            );
        }
        let rendered = render_all(&diags, RenderOptions::default());
        let expect = path.with_extension("stderr");
        match std::fs::read_to_string(&expect) {
            Ok(old) if !update => {
                if old != rendered {
                    mismatches.push(format!(
                        "{}:\n--- expected\n{old}\n--- actual\n{rendered}",
                        expect.display()
                    ));
                }
            }
            _ => std::fs::write(&expect, &rendered).expect("write expectation"),
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered diagnostics changed (UPDATE_EXPECT=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn every_ok_file_compiles_cleanly() {
    for path in files(&data_dir().join("ok")) {
        let (compiled, diags) = check_file(&path);
        let errors: Vec<String> = diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        assert!(compiled >= 1, "{}: nothing compiled", path.display());
    }
}

#[test]
fn every_builtin_runbook_compiles() {
    let catalog = engine::Catalog::builtin();
    assert!(
        catalog.diagnostics().is_empty(),
        "{:?}",
        catalog.diagnostics()
    );
    let names: Vec<&str> = catalog.names().collect();
    for required in ["repo.snapshot", "hello.world"] {
        assert!(names.contains(&required), "missing built-in {required}");
    }
    let opts = engine::CompileOptions {
        resolver: Some(&catalog),
        stack: Vec::new(),
    };
    for e in catalog.entries() {
        let plan = engine::compile(e.runbook.clone(), &opts)
            .unwrap_or_else(|d| panic!("{}: {d:?}", e.runbook.name));
        // the built-ins are warning-free (`db.query` passes its caller's statement to a read-only
        // call, which the server holds read-only)
        assert!(
            plan.warnings().is_empty(),
            "{}: {:?}",
            e.runbook.name,
            plan.warnings()
        );
    }
    let snap = catalog.get("repo.snapshot").expect("repo.snapshot");
    let plan = engine::compile(snap.runbook.clone(), &opts).expect("compiles");
    assert_eq!(
        plan.effects(),
        dsl::Effect::Read,
        "repo.snapshot must need no opt-in"
    );
    assert!(
        plan.nodes()
            .all(|n| n.action.tool == "repo" && !n.action.unsafe_local)
    );
}

#[test]
fn cycle_names_every_step() {
    let (_, diags) = check_file(&data_dir().join("err/dependency-cycle.yaml"));
    let d = diags
        .iter()
        .find(|d| d.code == dsl::Code::DependencyCycle)
        .expect("cycle");
    for step in ["`a`", "`b`", "`c`"] {
        assert!(d.message.contains(step), "{}", d.message);
    }
}

#[test]
fn unknown_key_suggests_the_near_name() {
    let (_, diags) = check_file(&data_dir().join("err/unknown-key.yaml"));
    let helps: Vec<&str> = diags.iter().filter_map(|d| d.help.as_deref()).collect();
    assert!(helps.contains(&"did you mean `description`?"), "{helps:?}");
    assert!(
        helps.contains(&"did you mean `continue_on_error`?"),
        "{helps:?}"
    );
    let locs: Vec<String> = diags.iter().filter_map(|d| d.location()).collect();
    assert!(locs.iter().any(|l| l.ends_with(":2:1")), "{locs:?}");
    assert!(locs.iter().any(|l| l.ends_with(":7:5")), "{locs:?}");
}

#[test]
fn templated_args_are_checked_only_where_literal() {
    let (_, diags) = check_file(&data_dir().join("err/invalid-args.yaml"));
    let paths: Vec<&str> = diags.iter().filter_map(|d| d.path.as_deref()).collect();
    assert!(paths.contains(&"/steps/0/args/key"), "{paths:?}");
    assert!(paths.contains(&"/steps/0/args/scope"), "{paths:?}");
    assert!(paths.contains(&"/steps/1/args/colour"), "{paths:?}");
    // `limit` is a template: its type is only known once rendered
    assert!(!paths.contains(&"/steps/1/args/limit"), "{paths:?}");
}

/// The compiled plan of each runbook of every `ok` file, pinned as `<file>.plan.json` (runbook name →
/// `Plan::to_json`): a change in what `compile` produces shows as a diff. `UPDATE_EXPECT=1` rewrites them.
#[test]
fn every_ok_file_compiles_to_its_pinned_plan() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let catalog = engine::Catalog::builtin();
    let opts = engine::CompileOptions {
        resolver: Some(&catalog),
        stack: Vec::new(),
    };
    let mut mismatches = Vec::new();
    for path in files(&data_dir().join("ok")) {
        let text = std::fs::read_to_string(&path).expect("read");
        let rel = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&path)
            .display()
            .to_string();
        let loaded = dsl::load(
            &dsl::SourceFile::new(rel, text),
            path.file_stem().and_then(|s| s.to_str()),
        );
        let mut plans = serde_json::Map::new();
        for rb in loaded.runbooks {
            let name = rb.name.clone();
            let plan = engine::compile(std::sync::Arc::new(rb), &opts)
                .unwrap_or_else(|d| panic!("{}: {d:?}", path.display()));
            plans.insert(name, plan.to_json());
        }
        let rendered = serde_json::to_string_pretty(&plans).expect("json") + "\n";
        let expect = path.with_extension("plan.json");
        match std::fs::read_to_string(&expect) {
            Ok(old) if !update => {
                if old != rendered {
                    mismatches.push(expect.display().to_string());
                }
            }
            _ => std::fs::write(&expect, &rendered).expect("write expectation"),
        }
    }
    assert!(
        mismatches.is_empty(),
        "compiled plans changed (UPDATE_EXPECT=1 to accept): {mismatches:?}"
    );
}

/// The compiled plans of the built-in `k8s.*`, `preflight.k8s` and `gitops.*` runbooks, pinned in
/// `tests/data/builtin-cluster.plan.json`: each kubectl, git and forge call they make, with the
/// arguments it is given, shows as a diff when it changes. `UPDATE_EXPECT=1` rewrites it.
#[test]
fn the_cluster_and_gitops_built_ins_compile_to_their_pinned_plans() {
    let catalog = engine::Catalog::builtin();
    let opts = engine::CompileOptions {
        resolver: Some(&catalog),
        stack: Vec::new(),
    };
    let mut plans = serde_json::Map::new();
    let mut entries: Vec<_> = catalog
        .entries()
        .into_iter()
        .filter(|e| {
            let n = &e.runbook.name;
            n.starts_with("k8s.") || n.starts_with("gitops.") || n == "preflight.k8s"
        })
        .collect();
    entries.sort_by(|a, b| a.runbook.name.cmp(&b.runbook.name));
    for e in entries {
        let plan = engine::compile(e.runbook.clone(), &opts)
            .unwrap_or_else(|d| panic!("{}: {d:?}", e.runbook.name));
        plans.insert(e.runbook.name.clone(), plan.to_json());
    }
    assert_eq!(plans.len(), 14, "{:?}", plans.keys().collect::<Vec<_>>());
    let rendered = serde_json::to_string_pretty(&plans).expect("json") + "\n";
    let expect = data_dir().join("builtin-cluster.plan.json");
    match std::fs::read_to_string(&expect) {
        Ok(old) if std::env::var_os("UPDATE_EXPECT").is_none() => assert!(
            old == rendered,
            "the built-in cluster runbooks compile differently (UPDATE_EXPECT=1 to accept)"
        ),
        _ => std::fs::write(&expect, &rendered).expect("write expectation"),
    }
}
