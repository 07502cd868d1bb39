//! Effects of statements, which fields are SQL text, and the argument types.

use super::*;

#[test]
fn a_read_only_call_is_a_read() {
    let m = |v: Value| v.as_object().cloned().expect("object");
    assert_eq!(
        classify_sql(&m(json!({"sql": "drop table t"}))),
        Some(Effect::Destructive)
    );
    assert_eq!(
        classify_sql(&m(json!({"sql": "drop table t", "read_only": true}))),
        Some(Effect::Read)
    );
    assert_eq!(classify_sql(&m(json!({"sql": null}))), None);
    assert_eq!(
        qualified("public.my\"t").ok().as_deref(),
        Some("\"public\".\"my\"\"t\"")
    );
    assert!(qualified("a.b.c").is_err());
}

#[test]
fn exec_is_a_write_at_least_unless_it_is_read_only() {
    let m = |v: Value| v.as_object().cloned().expect("object");
    assert_eq!(
        classify_exec(&m(json!({"sql": "select app.purge_old()"}))),
        Some(Effect::Write)
    );
    assert_eq!(
        classify_exec(&m(json!({"sql": "drop table t"}))),
        Some(Effect::Destructive)
    );
    assert_eq!(
        classify_exec(&m(json!({"sql": "select 1", "read_only": true}))),
        Some(Effect::Read)
    );
    // the same statement through `query` is a read, and so runs in a read-only transaction
    let q = m(json!({"sql": "select app.purge_old()"}));
    assert!(judged_read(classify_sql, &q));
    assert!(!judged_read(classify_exec, &q));
}

#[test]
fn only_a_read_only_call_may_take_its_whole_statement_from_a_value() {
    let m = |v: Value| v.as_object().cloned().expect("object");
    let sql_fields =
        |v: Value| -> Vec<&'static str> { sql_modes(&m(v)).into_iter().map(|(f, _)| f).collect() };
    // the caller's whole statement, on a read-only call: passed as the statement
    assert_eq!(
        sql_fields(json!({"sql": "{{ input.sql }}", "read_only": true})),
        ["query"]
    );
    // not read-only, or read-only only when rendered: SQL text, no value may go in
    assert_eq!(
        sql_fields(json!({"sql": "{{ input.sql }}"})),
        ["sql", "query"]
    );
    assert_eq!(
        sql_fields(json!({"sql": "{{ input.sql }}", "read_only": "{{ input.ro }}"})),
        ["sql", "query"]
    );
    // a value inside statement text stays interpolation, read-only or not
    assert_eq!(
        sql_fields(json!({"sql": "select {{ input.c }}", "read_only": true})),
        ["sql", "query"]
    );
    assert_eq!(
        sql_fields(json!({"sql": "{{ input.a }}{{ input.b }}", "read_only": true})),
        ["sql", "query"]
    );
}

#[test]
fn examples_parse_into_their_types() {
    use crate::actions::parse_args;
    crate::actions::examples_parse(tool(), |action, args| match action {
        "query" => parse_args::<QueryArgs>(args).map(drop),
        "exec" => parse_args::<ExecArgs>(args).map(drop),
        "transaction" => parse_args::<TransactionArgs>(args).map(drop),
        "export" => parse_args::<ExportArgs>(args).map(drop),
        "tables" => parse_args::<TablesArgs>(args).map(drop),
        "describe" => parse_args::<DescribeArgs>(args).map(drop),
        "insert" | "insert_bulk" => parse_args::<helpers::InsertArgs>(args).map(drop),
        "select" | "count" | "exists" | "update" | "delete" => {
            parse_args::<helpers::TableArgs>(args).map(drop)
        }
        other => panic!("no argument type for psql.{other}"),
    });
    let m = |v: Value| v.as_object().cloned().expect("object");
    let t: TransactionArgs = parse_args(&m(json!({"action": "transaction", "timeout_ms": 5,
        "statements": [{"sql": "select $1", "params": [1]}], "profile_name": "db"})))
    .expect("parses");
    assert_eq!(t.statements[0].sql, "select $1");
    let at = conn::Where::new(&t.target, &t.profile_name, &t.connection, t.read_only);
    assert_eq!(
        (at.target, at.connection, at.read_only),
        (Some("db"), None, false)
    );
    let e = parse_args::<QueryArgs>(&m(json!({"action": "query", "sql": "select 1", "rows": 1})))
        .expect_err("unknown field");
    assert_eq!(e.kind, ErrorKind::InvalidArgs);
    assert!(e.message.contains("rows"), "{}", e.message);
}
