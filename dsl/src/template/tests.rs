//! Tests of the scan and of rendering in every mode.

use super::*;
use serde_json::json;

fn refs(t: &str) -> Vec<(String, Option<String>)> {
    scan(t)
        .expect("scan")
        .references
        .into_iter()
        .map(|r| (r.root, r.key))
        .collect()
}

#[test]
fn scan_finds_roots_and_first_keys() {
    assert_eq!(
        refs("echo {{ input.name }} {{ steps['build'].stdout | upper }}"),
        vec![
            ("input".into(), Some("name".into())),
            ("steps".into(), Some("build".into()))
        ]
    );
    assert_eq!(
        refs("{{ x | default(value=input.y) }}"),
        vec![("x".into(), None), ("input".into(), Some("y".into()))]
    );
    assert_eq!(
        refs("{% for h in input.hosts %}{{ h }}{% endfor %}"),
        vec![("input".into(), Some("hosts".into()))]
    );
    assert_eq!(
        refs("{% if a is defined and b is not none %}{% endif %}"),
        vec![("a".into(), None), ("b".into(), None)]
    );
    assert_eq!(
        refs("{{ [c.name for c in steps.ci.runs if c.status != input.done] | length }}"),
        vec![
            ("steps".into(), Some("ci".into())),
            ("input".into(), Some("done".into()))
        ]
    );
    assert_eq!(refs("{{ 'input.x' }}{# input.y #}"), vec![]);
    assert!(refs("{% raw %}{{ input.x }}{% endraw %}").is_empty());
}

#[test]
fn simple_paths_are_recognised_and_nothing_else() {
    for t in [
        "{{ input.a }}",
        "x {{ steps['b-c'].stdout | trim | raw }} {{ item[0] }}",
        "{# c #}{{ a?.b }}",
    ] {
        assert!(scan(t).expect("scan").simple, "{t}");
        assert!(Renderer::new().check(t).is_ok(), "{t} must be valid Tera");
    }
    for t in [
        "{{ a + 1 }}",
        "{{ a | default(value=1) }}",
        "{{ a | nosuch }}",
        "{% if a %}x{% endif %}",
        "{{ a. }}",
        "{{ true }}",
        "{{ a b }}",
    ] {
        assert!(!scan(t).expect("scan").simple, "{t}");
    }
}

#[test]
fn a_value_inside_the_authors_quotes_is_found_before_and_refused_at_render() {
    let found = quoted_interpolations("echo 'hello {{ input.v }}' {{ input.w }}");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, 12);
    assert!(found[0].2.contains("single quotes"));
    assert!(quoted_interpolations("echo \"{{ input.v | quote }}\"").len() == 1);
    assert!(quoted_interpolations("echo '{{ input.v | raw }}'").is_empty());
    assert!(quoted_interpolations("echo {% if x %}'{% endif %}{{ y }}").len() == 1);
    assert!(quoted_interpolations("echo {{ v }} {# ' #} {{ w }}").is_empty());

    let r = Renderer::new();
    let ctx = serde_json::json!({"input": {"v": ";touch /tmp/x;"}});
    for t in [
        "echo 'hello {{ input.v }}'",
        "echo \"{{ input.v }}\"",
        "echo {% if true %}'{% else %}'{% endif %}{{ input.v }}'",
        "echo {{ \"'\" | raw }}{{ input.v }}{{ \"'\" | raw }}",
        "echo '{{ input.v | quote }}'",
        "cat <<EOF\n{{ input.v }}\nEOF",
    ] {
        let e = r.render(t, Mode::Shell, &ctx).expect_err(t);
        assert!(
            e.message.contains("remove the quotes"),
            "{t}: {}",
            e.message
        );
    }
    assert_eq!(
        r.render(
            "echo {{ input.v }} '{{ input.v | raw }}'",
            Mode::Shell,
            &ctx
        )
        .expect("renders"),
        serde_json::json!("echo ';touch /tmp/x;' ';touch /tmp/x;'")
    );
    // NUL cannot stand for a value
    let ctx = serde_json::json!({"input": {"v": "a\u{0}0\u{0}b"}});
    assert!(
        r.render("echo {{ input.v | raw }}", Mode::Shell, &ctx)
            .is_err()
    );
}

#[test]
fn scan_sees_the_last_filter_and_single_expressions() {
    let s = scan("{{ input.a | raw }}").expect("scan");
    assert_eq!(s.interpolations[0].last_filter.as_deref(), Some("raw"));
    assert_eq!(s.single_expression.as_deref(), Some("input.a | raw"));
    let s = scan("{{ input.a | raw ~ 'x' }}").expect("scan");
    assert_eq!(s.interpolations[0].last_filter, None);
    assert_eq!(scan("a {{ x }}").expect("scan").single_expression, None);
    assert!(scan("{{ x ").is_err());
}

#[test]
fn shell_mode_quotes_every_value() {
    let r = Renderer::new();
    let ctx = json!({"input": {"s": "a'b; rm -rf / $(x)", "n": 3}});
    let out = r
        .render("echo {{ input.s }} {{ input.n }}", Mode::Shell, &ctx)
        .expect("render");
    assert_eq!(out, json!("echo 'a'\\''b; rm -rf / $(x)' 3"));
    let raw = r
        .render("echo {{ input.s | raw }}", Mode::Shell, &ctx)
        .expect("render");
    assert_eq!(raw, json!("echo a'b; rm -rf / $(x)"));
}

#[test]
fn sql_mode_refuses_values_but_takes_identifiers() {
    let r = Renderer::new();
    let ctx = json!({"input": {"t": "ev\"il"}});
    assert!(
        r.render("select * from {{ input.t }}", Mode::Sql, &ctx)
            .is_err()
    );
    let ok = r
        .render("select * from {{ input.t | ident }}", Mode::Sql, &ctx)
        .expect("render");
    assert_eq!(ok, json!("select * from \"ev\"\"il\""));
}

#[test]
fn plain_single_expression_is_typed() {
    let r = Renderer::new();
    let ctx = json!({"input": {"n": 3, "list": [1, 2], "s": "x"}});
    assert_eq!(
        r.render("{{ input.n }}", Mode::Plain, &ctx).expect("n"),
        json!(3)
    );
    assert_eq!(
        r.render("{{ input.list }}", Mode::Plain, &ctx).expect("l"),
        json!([1, 2])
    );
    assert_eq!(
        r.render("{{ input.s }}-y", Mode::Plain, &ctx).expect("s"),
        json!("x-y")
    );
    let err = r
        .render("{{ input.missing }}", Mode::Plain, &ctx)
        .expect_err("undefined");
    assert!(err.message.contains("missing"), "{}", err.message);
}

#[test]
fn check_reports_syntax_not_missing_data() {
    let r = Renderer::new();
    assert!(r.check("{{ input.a }}").is_ok());
    assert!(r.check("{{ input.a | nosuchfilter }}").is_err());
    let e = r.check("x {{ 1 + }}").expect_err("syntax");
    assert!(e.syntax);
}
