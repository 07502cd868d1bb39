//! `psql` as an attacker would use it, against a real PostgreSQL cluster: an export's query that tries
//! to close the COPY it is put in, and a read-only target whose guarantee must hold at the server,
//! whatever the statement classifier misses. Each case checks what the server kept (rows, large
//! objects, other sessions, files, locks), not what infra answered.

use std::sync::Arc;

use engine::ctx::{Config, Vars};
use engine::run::{CancelToken, Engine, StepOutcome};
use serde_json::{Value, json};

use crate::support::postgres::Postgres;

const RO_PASSWORD: &str = "ro-pass-8c1f2d";

fn target(pg: &Postgres, user: &str, password_env: &str, read_only: bool) -> Value {
    json!({"postgres": {"host": "127.0.0.1", "port": pg.port, "user": user, "database": pg.database,
                        "password_env": password_env, "sslmode": "disable", "read_only": read_only}})
}

fn engine(dir: &std::path::Path, pg: &Postgres) -> Engine {
    let targets = json!({
        "db": target(pg, &pg.user, "PG_TEST_PASSWORD", false),
        "su_ro": target(pg, &pg.user, "PG_TEST_PASSWORD", true),
        "ro": target(pg, "reader", "PG_RO_PASSWORD", true),
        "rw_ro": target(pg, "writer", "PG_RO_PASSWORD", true),
    });
    std::fs::write(dir.join("targets.json"), targets.to_string()).expect("targets");
    // these tests try the SQL layer's own refusals (read-only transactions and roles) with
    // destructive statements; change control is tested in `change_control.rs`, so policy lets them through
    std::fs::write(dir.join("policy.yaml"), "effects: {destructive: allow}\n").expect("policy");
    let c = Config::at(dir).with_vars(Vars::from_pairs([
        ("PG_TEST_PASSWORD", pg.password.clone()),
        ("PG_RO_PASSWORD", RO_PASSWORD.to_owned()),
    ]));
    Engine::new(c, Arc::new(engine::Catalog::builtin()))
}

fn call(e: &Engine, args: Value) -> StepOutcome {
    crate::call_tool(e, "psql", args, &CancelToken::new())
}

fn error(s: &StepOutcome) -> (String, String) {
    let e = s
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("expected an error, got {:?}", s.result));
    (e.kind.to_string(), e.message.clone())
}

/// A path the server's own user can create, so a program or file write that got through would show.
fn canary(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "infra-pgcanary-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// Another session on the server (a `psql` waiting in `pg_sleep`), ended when dropped.
struct Holder {
    child: std::process::Child,
    pid: i32,
}

impl Holder {
    fn start(pg: &Postgres) -> Holder {
        let child = std::process::Command::new(pg.psql_bin())
            .arg(format!(
                "host=127.0.0.1 port={} user={} dbname={} application_name=infra-test-holder",
                pg.port, pg.user, pg.database
            ))
            .args(["-X", "-q", "-c", "select pg_sleep(600)"])
            .env("PGPASSWORD", &pg.password)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("psql");
        let mut h = Holder { child, pid: 0 };
        for _ in 0..200 {
            if let Some(pid) = h.find(pg) {
                h.pid = pid;
                return h;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the holding session did not appear");
    }

    fn find(&self, pg: &Postgres) -> Option<i32> {
        pg.psql("select pid from pg_stat_activity where application_name = 'infra-test-holder'")
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_export_query_cannot_close_its_copy() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), &pg);
    pg.psql("create table t (x int); insert into t values (1), (2)");
    let ran = canary("program");
    let wrote = canary("file");
    let (r, w) = (ran.display(), wrote.display());
    let attacks = [
        format!("SELECT 1) TO PROGRAM 'touch {r}' --"),
        format!("SELECT 1) TO '{w}' --"),
        format!("SELECT 1) TO PROGRAM 'touch {r}' /*"),
        format!("SELECT 1 /* ) */ ) TO PROGRAM 'touch {r}' --"),
        format!("SELECT $$x$$) TO PROGRAM 'touch {r}' --"),
        format!("SELECT $a$ ) $a$) TO PROGRAM 'touch {r}' --"),
        format!("SELECT (1)) TO PROGRAM 'touch {r}' --"),
        format!("SELECT ((1) TO PROGRAM 'touch {r}' --"),
        format!("SELECT 1 --\n) TO PROGRAM 'touch {r}'"),
        format!("SELECT 1); COPY t TO PROGRAM 'touch {r}'; --"),
        format!("SELECT 1) TO PROGRAM 'touch {r}'; SELECT (1"),
        format!("SELECT 1) TO PROGRAM 'touch {r}' WITH (FORMAT text) --"),
        format!("SELECT 'a'')' ) TO PROGRAM 'touch {r}' --"),
        format!("SELECT E'\\')' ) TO PROGRAM 'touch {r}' --"),
        format!("SELECT \"x)\" FROM (SELECT 1 AS \"x)\") s) TO PROGRAM 'touch {r}' --"),
        format!("select lo_export(0, '{w}')"),
        format!("select pg_catalog.lo_export(0, '{w}')"),
        format!("select \"lo_export\"(0, '{w}')"),
        format!("select U&\"lo_export\"(0, '{w}')"),
        "select lo_unlink(1)".to_owned(),
        "select * from dblink_exec('dbname=postgres', 'drop table t')".to_owned(),
        "select query_to_xml('select lo_unlink(1)', true, false, '')".to_owned(),
        "select set_config('default_transaction_read_only', 'off', false)".to_owned(),
    ];
    let mut refused = 0;
    for q in &attacks {
        for format in ["csv", "jsonl"] {
            let s = call(
                &e,
                json!({"action": "export", "target": "db", "query": q, "format": format}),
            );
            let (kind, msg) = error(&s);
            assert!(
                ["refused", "invalid_args"].contains(&kind.as_str()),
                "{q:?} ({format}): {kind}: {msg}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, attacks.len() * 2);
    assert!(!ran.exists(), "a program ran on the server");
    assert!(!wrote.exists(), "a server file was written");
    assert_eq!(pg.psql("select count(*) from t"), "2");

    // whole queries with a paren in a string, a comment at the end or a trailing `;` still export
    for (q, want) in [
        ("select ')' as x", "x\n)\n"),
        ("select $q$)$q$ as x", "x\n)\n"),
        ("select 1 as x -- the end", "x\n1\n"),
        ("select 1 as x;", "x\n1\n"),
        ("select x from t order by x /* ) */", "x\n1\n2\n"),
    ] {
        let s = call(&e, json!({"action": "export", "target": "db", "query": q}));
        assert!(s.error.is_none(), "{q}: {:?}", s.error);
        let v = s.result.expect("result");
        let got = std::io::read_to_string(crate::open_artifact(
            dir.path(),
            v["uri"].as_str().expect("uri"),
        ))
        .expect("read");
        assert_eq!(got, want, "{q}");
    }
    // the server is the last word: a statement the lexer takes for a query but the server does not
    let s = call(
        &e,
        json!({"action": "export", "target": "db", "query": "select from_nowhere("}),
    );
    assert!(error(&s).0 == "invalid_args" || error(&s).0 == "refused");
}

#[test]
fn a_call_judged_a_read_cannot_write_through_a_function() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), &pg);
    pg.psql("create table t (x int); insert into t values (1), (2)");
    pg.psql("create function purge() returns int language plpgsql as $$begin delete from t; return 0; end$$");
    // its text reads as a read: judged, approved and audited as one, so the server holds it to one
    let tries = [
        json!({"action": "query", "target": "db", "sql": "select purge()"}),
        json!({"action": "query", "target": "db", "sql": "select * from purge()"}),
        json!({"action": "transaction", "target": "db", "statements": [{"sql": "select 1"}, {"sql": "select purge()"}]}),
        json!({"action": "exec", "target": "db", "sql": "select purge()", "read_only": true}),
    ];
    for args in tries {
        let s = call(&e, args.clone());
        let (kind, msg) = error(&s);
        assert_eq!(kind, "refused", "{args}: {msg}");
        assert!(msg.contains("read-only transaction"), "{args}: {msg}");
        assert_eq!(
            pg.psql("select count(*) from t"),
            "2",
            "{args}: nothing changed"
        );
    }
    // the caller saying it writes: `exec` is a write, and runs
    let s = call(
        &e,
        json!({"action": "exec", "target": "db", "sql": "select purge()"}),
    );
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(pg.psql("select count(*) from t"), "0");
    // a plain query still reads, in its read-only transaction
    let s = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select count(*) as n from t"}),
    );
    assert_eq!(s.result.expect("rows")["rows"][0]["n"], 0);
}

/// Superuser-made functions that hide a side effect from the classifier: what a read-only target's
/// role may then do is up to the server.
const HIDDEN: &str = "
create extension if not exists dblink;
create function hide_unlink(o oid) returns int language sql as 'select lo_unlink(o)';
create function hide_export(o oid, p text) returns int language sql as 'select lo_export(o, p)';
create function hide_kill(p int) returns bool language sql as 'select pg_terminate_backend(p)';
create function hide_lock() returns void language sql as 'select pg_advisory_lock(4242)';
create function hide_role() returns text language sql as $$select set_config('role', 'postgres', false)$$;
create function hide_put(o oid) returns int language sql as $$select lo_put(o, 0, 'x'::bytea); select 1$$;
create function hide_link(c text) returns text language sql as $$select dblink_exec(c, 'delete from t')$$;
grant execute on all functions in schema public to public;
";

#[test]
fn a_read_only_target_holds_at_the_server() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), &pg);
    pg.psql("create table t (x int); insert into t values (1), (2)");
    pg.psql(&format!(
        "create role reader login password '{RO_PASSWORD}'; grant select on t to reader; \
         create role writer login password '{RO_PASSWORD}'; grant select, insert on t to writer"
    ));
    for stmt in HIDDEN.split(";\n").filter(|s| !s.trim().is_empty()) {
        pg.psql(stmt);
    }
    let lo = pg.psql("select lo_from_bytea(0, 'keep me')");
    let written = canary("lo-export");

    // a read-only target whose role may write is refused before anything runs
    let (kind, msg) = error(&call(
        &e,
        json!({"action": "query", "target": "su_ro", "sql": "select 1"}),
    ));
    assert_eq!(kind, "refused");
    assert!(msg.contains("superuser"), "{msg}");
    let (kind, msg) = error(&call(
        &e,
        json!({"action": "query", "target": "rw_ro", "sql": "select 1"}),
    ));
    assert_eq!(kind, "refused");
    assert!(msg.contains("public.t"), "{msg}");

    // the reader reads
    let s = call(
        &e,
        json!({"action": "query", "target": "ro", "sql": "select count(*) as n from t"}),
    );
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.result.expect("result")["rows"][0]["n"], 2);

    // named side effects are refused before sending
    let holder = Holder::start(&pg);
    let other = holder.pid;
    for sql in [
        format!("select lo_unlink({lo})"),
        format!("select lo_export({lo}, '{}')", written.display()),
        format!("select pg_terminate_backend({other})"),
        "select pg_advisory_lock(1)".to_owned(),
        "select set_config('role', 'postgres', false)".to_owned(),
        "select * from dblink_exec('dbname=postgres', 'delete from t') as d(x text)".to_owned(),
        format!("select \"lo_unlink\"({lo})"),
    ] {
        let (kind, msg) = error(&call(
            &e,
            json!({"action": "query", "target": "ro", "sql": sql}),
        ));
        assert_eq!(kind, "refused", "{sql}: {msg}");
        assert!(msg.contains("nothing was sent"), "{sql}: {msg}");
    }
    // hidden ones reach the server, which refuses them for this role
    let link = format!(
        "host=127.0.0.1 port={} dbname={} user=reader password={RO_PASSWORD}",
        pg.port, pg.database
    );
    for (sql, params) in [
        (format!("select hide_unlink({lo})"), json!([])),
        (
            format!("select hide_export({lo}, '{}')", written.display()),
            json!([]),
        ),
        (format!("select hide_kill({other})"), json!([])),
        ("select hide_role()".to_owned(), json!([])),
        (format!("select hide_put({lo})"), json!([])),
        ("select hide_link($1)".to_owned(), json!([link])),
    ] {
        let s = call(
            &e,
            json!({"action": "query", "target": "ro", "sql": sql, "params": params}),
        );
        let (kind, msg) = error(&s);
        assert!(
            kind == "sql_error" || kind == "refused",
            "{sql}: {kind}: {msg}"
        );
    }
    // a lock taken in a call does not outlive it on the pooled connection
    let s = call(
        &e,
        json!({"action": "query", "target": "ro", "sql": "select hide_lock()"}),
    );
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(
        pg.psql("select count(*) from pg_locks where locktype = 'advisory'"),
        "0",
        "the advisory lock was released"
    );
    // and a setting made in one call is gone in the next
    let s = call(
        &e,
        json!({"action": "query", "target": "ro", "sql": "select current_setting('work_mem') as w"}),
    );
    let before = s.result.expect("result")["rows"][0]["w"].clone();
    let s = call(
        &e,
        json!({"action": "exec", "target": "db", "sql": "set work_mem = '77MB'"}),
    );
    assert!(s.error.is_none(), "{:?}", s.error);
    let s = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select current_setting('work_mem') as w"}),
    );
    assert_eq!(s.result.expect("result")["rows"][0]["w"], before);

    // what the server kept
    assert_eq!(pg.psql("select count(*) from t"), "2", "the rows are there");
    assert_eq!(
        pg.psql(&format!("select convert_from(lo_get({lo}), 'UTF8')")),
        "keep me",
        "the large object is unchanged"
    );
    assert_eq!(holder.find(&pg), Some(other), "the other session lives");
    assert!(!written.exists(), "no server file was written");
    assert_eq!(pg.psql("select count(*) from pg_largeobject_metadata"), "1");
}
