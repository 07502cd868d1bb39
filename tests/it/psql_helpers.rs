//! The `psql` table helpers against a real PostgreSQL: insert (one row, many, all or none),
//! insert_bulk through COPY, select/count/exists with a `where` map, update and delete, with hostile
//! identifiers and values that stay values.

use engine::run::CancelToken;
use serde_json::{Value, json};

use crate::support::postgres::Postgres;

fn call(e: &engine::run::Engine, args: Value) -> engine::run::StepOutcome {
    crate::call_tool(e, "psql", args, &CancelToken::new())
}

fn ok(s: &engine::run::StepOutcome) -> Value {
    assert!(s.error.is_none(), "{:?}", s.error);
    s.result.clone().expect("a result")
}

#[test]
fn table_helpers_bind_values_and_quote_identifiers() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"db": {"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user, "database": pg.database,
                                   "password_env": "PG_TEST_PASSWORD", "sslmode": "disable"}}})
        .to_string(),
    )
    .expect("targets");
    // `update`/`delete` and DDL are destructive; change control is tested in `change_control.rs`
    std::fs::write(
        dir.path().join("policy.yaml"),
        "effects: {destructive: allow}\n",
    )
    .expect("policy");
    let c = engine::ctx::Config::at(dir.path()).with_vars(engine::ctx::Vars::from_pairs([(
        "PG_TEST_PASSWORD",
        pg.password.clone(),
    )]));
    let e = engine::run::Engine::new(c, std::sync::Arc::new(engine::Catalog::builtin()));
    pg.psql("create table \"odd \"\"t\"\"\" (id int primary key, \"na'me\" text, tags text[], done bool default false)");
    let t = "odd \"t\"";
    let evil = "'; drop table \"odd \"\"t\"\"\"; --";

    let r = call(
        &e,
        json!({"action": "insert", "target": "db", "table": t, "rows": [{"id": 1, "na'me": evil, "tags": ["a", "b"]}]}),
    );
    assert_eq!(ok(&r)["rows_affected"], 1);
    // one bad row: none of them is inserted
    let r = call(
        &e,
        json!({"action": "insert", "target": "db", "table": t,
               "rows": [{"id": 2, "na'me": "two"}, {"id": 1, "na'me": "dup"}]}),
    );
    assert_eq!(r.error.as_ref().map(|e| e.kind.as_str()), Some("sql_error"));
    assert_eq!(r.result.as_ref().expect("result")["failed_index"], 1);
    let rows: Vec<Value> = (10..1010)
        .map(|i| json!({"id": i, "na'me": format!("bulk\t{i}\n\\"), "tags": null}))
        .collect();
    let r = call(
        &e,
        json!({"action": "insert_bulk", "target": "db", "table": t, "rows": rows}),
    );
    assert_eq!(ok(&r)["rows_affected"], 1000);

    let r = call(
        &e,
        json!({"action": "select", "target": "db", "table": t, "where": {"na'me": evil},
               "columns": ["id", "tags"], "order_by": ["-id"]}),
    );
    assert_eq!(ok(&r)["rows"], json!([{"id": 1, "tags": ["a", "b"]}]));
    let r = call(
        &e,
        json!({"action": "select", "target": "db", "table": t, "where": {"id": 12}}),
    );
    assert_eq!(ok(&r)["rows"][0]["na'me"], "bulk\t12\n\\");
    let r = call(
        &e,
        json!({"action": "count", "target": "db", "table": t, "where": {"tags": null}}),
    );
    assert_eq!(ok(&r)["count"], 1000);
    let r = call(
        &e,
        json!({"action": "exists", "target": "db", "table": t, "where": {"id": 2}}),
    );
    assert_eq!(ok(&r)["exists"], false);
    let r = call(
        &e,
        json!({"action": "select", "target": "db", "table": t, "max_rows": 5, "order_by": ["id"]}),
    );
    assert_eq!(ok(&r)["row_count"], 5);
    assert_eq!(ok(&r)["more_rows"], true);

    let r = call(
        &e,
        json!({"action": "update", "target": "db", "table": t, "set": {"done": true, "na'me": "$1"}, "where": {"id": 1}}),
    );
    assert_eq!(ok(&r)["rows_affected"], 1);
    assert_eq!(
        pg.psql("select \"na'me\", done from \"odd \"\"t\"\"\" where id = 1"),
        "$1|t"
    );
    let r = call(&e, json!({"action": "delete", "target": "db", "table": t}));
    assert_eq!(
        r.error.as_ref().map(|e| e.kind.as_str()),
        Some("invalid_args")
    );
    let r = call(
        &e,
        json!({"action": "delete", "target": "db", "table": t, "where": {"done": false}}),
    );
    assert_eq!(ok(&r)["rows_affected"], 1000);
    assert_eq!(pg.psql("select count(*) from \"odd \"\"t\"\"\""), "1");
}
