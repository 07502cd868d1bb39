use super::*;

fn load_text(name: &str, text: &str) -> (IndexMap<String, Capability>, Vec<Diagnostic>) {
    let catalog = Catalog::builtin();
    parse(&SourceFile::new(name, text), &catalog, &IndexMap::new())
}

fn first_error(text: &str) -> Diagnostic {
    let (_, d) = load_text("capabilities.yaml", text);
    d.into_iter().find(Diagnostic::is_error).expect("an error")
}

#[test]
fn the_seed_minimal_file_loads() {
    let (caps, d) = load_text(
        "capabilities.json",
        "{\n  \"version\": 1,\n  \"capabilities\": {}\n}\n",
    );
    assert!(caps.is_empty() && d.is_empty(), "{d:?}");
}

#[test]
fn builtins_load_clean() {
    let (caps, d) = load_text("builtin.json", include_str!("builtin.json"));
    assert!(d.is_empty(), "{d:?}");
    assert!(caps.contains_key("repo.snapshot"));
}

#[test]
fn bad_files_are_located() {
    let d = first_error("version: 1\ncapabilities:\n  a:\n    runbok: repo.snapshot\n");
    assert_eq!(
        d.location().as_deref(),
        Some("capabilities.yaml:4:5"),
        "{d:?}"
    );
    assert!(d.help.as_deref().unwrap_or("").contains("runbook"), "{d:?}");
    let d =
        first_error("version: 1\ncapabilities:\n  a:\n    runbook: repo.snapshot\n    tags: yes\n");
    assert!(d.message.contains("tags"), "{d:?}");
    let d = first_error("version: 1\ncapabilities:\n  a:\n    runbook: repo.snapshots\n");
    assert_eq!(d.code, Code::UnknownRunbook);
    assert!(
        d.help.as_deref().unwrap_or("").contains("repo.snapshot"),
        "{d:?}"
    );
    let d = first_error(
        "version: 1\ncapabilities:\n  a:\n    runbook: repo.snapshot\n    inputs: {map: {repo_pth: context.root}}\n",
    );
    assert_eq!(d.code, Code::UndefinedInput);
    assert_eq!(
        d.location().as_deref(),
        Some("capabilities.yaml:5:20"),
        "{d:?}"
    );
    let d = first_error(
        "version: 1\ncapabilities:\n  a: {runbook: repo.snapshot, depends_on: [b]}\n  b: {runbook: repo.snapshot, depends_on: [a]}\n",
    );
    assert_eq!(d.code, Code::DependencyCycle, "{d:?}");
    assert!(d.message.contains("a → b → a"), "{d:?}");
    let d = first_error("{\"version\": 1, \"capabilities\": {\"a\": {]}");
    assert_eq!(d.code, Code::YamlSyntax);
    let d = first_error(
        "version: 1\ncapabilities:\n  a: {runbook: repo.snapshot, inputs: {map: {repo_path: ctx.root}}}\n",
    );
    assert!(d.message.contains("ctx.root"), "{d:?}");
}
