//! `psql`: PostgreSQL queries, writes, transactions, exports and catalog views. Values travel as bound
//! parameters; each `sql` is one statement (the extended protocol refuses more, and so do we, before
//! sending). The effect of a call is classified from its statement, and the server holds the call to
//! it: a call judged a read (`read_only`, or every statement of it reads as a read) runs in a read-only
//! transaction, after writing statements were refused, so a write the lexer cannot see (a function
//! that writes) is refused by the server (`judged_read`), and the call, judged, approved and audited as
//! a read, changes nothing. `exec` is the caller saying the statement writes: it is judged a write
//! at least, whatever its text reads as.

pub mod conn;
mod export;
mod helpers;
pub mod sql;
pub(crate) mod stream;
pub mod values;

use crate::error::ErrorKind;
use std::io::Write;

use postgres::Client;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ActionError, ActionSpec, Call, ToolSpec, args_schema};
use crate::record::artifacts::ArtifactWriter;
use dsl::Effect;
use dsl::template::Mode;
use values::{Cell, Param};

pub use conn::PgTarget;

/// One statement with `$1…$n` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// One SQL statement; values go in `params` as `$1…$n`.
    pub sql: String,
    /// Values of `$1…$n` (JSON; sent as text, the server parses them to the parameter's type).
    pub params: Option<Vec<Value>>,
    /// A target with a `postgres` section (`profile_name` is the same).
    pub target: Option<String>,
    pub profile_name: Option<String>,
    /// A connection URL (prefer a target: a URL here carries its password into the call).
    pub connection: Option<String>,
    /// Run in a read-only transaction; writing statements are refused before sending.
    pub read_only: Option<bool>,
    /// The most rows fetched (default 10,000).
    #[schemars(range(min = 1))]
    pub max_rows: Option<u64>,
}

/// One writing statement.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    pub sql: String,
    pub params: Option<Vec<Value>>,
    pub target: Option<String>,
    pub profile_name: Option<String>,
    pub connection: Option<String>,
    pub read_only: Option<bool>,
}

/// One statement of a transaction.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub sql: String,
    pub params: Option<Vec<Value>>,
}

/// Statements run all or nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionArgs {
    #[schemars(length(min = 1))]
    pub statements: Vec<Statement>,
    pub target: Option<String>,
    pub profile_name: Option<String>,
    pub connection: Option<String>,
    pub read_only: Option<bool>,
}

/// A table or a query, streamed out with `COPY … TO STDOUT`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportArgs {
    /// `table` or `schema.table`.
    pub table: Option<String>,
    /// One read-only statement (SELECT, VALUES, WITH … SELECT, TABLE).
    pub query: Option<String>,
    /// `csv` (default) or `jsonl` (one JSON object per row).
    #[schemars(regex(pattern = "^(csv|jsonl|json)$"))]
    pub format: Option<String>,
    /// A header line in CSV (default true; `header` is the same).
    pub csv_header: Option<bool>,
    pub header: Option<bool>,
    /// Write to this file on the infra host (needs INFRA_UNSAFE_LOCAL=1); default: an artifact.
    pub file_path: Option<String>,
    pub target: Option<String>,
    pub profile_name: Option<String>,
    pub connection: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TablesArgs {
    /// Only this schema.
    pub schema: Option<String>,
    pub target: Option<String>,
    pub profile_name: Option<String>,
    pub connection: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeArgs {
    /// `table` or `schema.table`.
    pub table: String,
    pub target: Option<String>,
    pub profile_name: Option<String>,
    pub connection: Option<String>,
}

/// `sql` and `query` are SQL text: no value may be interpolated into them (`| ident` aside). One case
/// is the caller's statement, not interpolation: a read-only call (`read_only: true`, written as is)
/// whose field is one whole `{{ expression }}`. The server holds such a call read-only whatever the
/// statement says (a read-only role and transaction), so the value is passed as the statement.
fn sql_modes(args: &Map<String, Value>) -> Vec<(&'static str, Mode)> {
    let read_only = args.get("read_only") == Some(&Value::Bool(true));
    ["sql", "query"]
        .into_iter()
        .filter(|f| {
            let whole = args
                .get(*f)
                .and_then(Value::as_str)
                .and_then(|t| dsl::template::scan(t).ok())
                .is_some_and(|s| s.single_expression.is_some());
            !(read_only && whole)
        })
        .map(|f| (f, Mode::Sql))
        .collect()
}

/// The effect of a statement argument: what it says; a read-only call only reads. A call judged a read
/// runs in a read-only transaction (`judged_read`).
fn classify_sql(args: &Map<String, Value>) -> Option<Effect> {
    if args.get("read_only") == Some(&Value::Bool(true)) {
        return Some(Effect::Read);
    }
    let sql = args.get("sql")?.as_str()?;
    sql::classify(sql).ok().map(|(e, _)| e)
}

/// `exec`: a write at least (the caller says the statement writes), unless the call is read-only.
fn classify_exec(args: &Map<String, Value>) -> Option<Effect> {
    if args.get("read_only") == Some(&Value::Bool(true)) {
        return Some(Effect::Read);
    }
    Some(classify_sql(args).map_or(Effect::Write, |e| e.max(Effect::Write)))
}

/// Whether a call was judged a read (the effect its policy, approval and audit record saw): it then
/// runs in a read-only transaction, so the server refuses a write its text did not show.
fn judged_read(
    classify: fn(&Map<String, Value>) -> Option<Effect>,
    args: &Map<String, Value>,
) -> bool {
    classify(args) == Some(Effect::Read)
}

/// A server's refusal of a write in a call judged a read by its text, said as such.
fn refused_hidden_write(mut e: ActionError, read_only_asked: bool) -> ActionError {
    if read_only_asked || !e.message.contains("SQLSTATE 25006") {
        return e;
    }
    e.kind = ErrorKind::Refused;
    e.message = format!(
        "the call reads as a read, so it ran in a read-only transaction, and the server refused a write in it (a function that writes?); nothing was changed: {}",
        e.message
    );
    e.hint("a statement that writes goes through `psql exec` (or a `transaction` with a writing statement), which is judged, approved and audited as a write")
}

fn classify_transaction(args: &Map<String, Value>) -> Option<Effect> {
    if args.get("read_only") == Some(&Value::Bool(true)) {
        return Some(Effect::Read);
    }
    let mut worst = Effect::Read;
    for s in args.get("statements")?.as_array()? {
        let e = sql::classify(s.get("sql")?.as_str()?).ok()?.0;
        worst = worst.max(e);
    }
    Some(worst)
}

/// Values of connection URLs, which carry passwords: masked before the call is recorded.
fn connection_secret(args: &Map<String, Value>) -> Vec<String> {
    let Some(c) = args.get("connection").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out = vec![c.to_owned()];
    if let Ok(cfg) = c.parse::<postgres::Config>()
        && let Some(pw) = cfg.get_password()
    {
        out.push(String::from_utf8_lossy(pw).into_owned());
    }
    out
}

pub(super) fn tool() -> ToolSpec {
    let a = |name: &'static str,
             title: &'static str,
             description: &'static str,
             effect: Effect,
             schema_fn: fn() -> Value,
             classify: Option<super::ClassifyFn>,
             example: fn() -> Value| ActionSpec {
        tool: "psql",
        name,
        title,
        description,
        effect,
        unsafe_local: false,
        schema_fn,
        modes: sql_modes,
        classify,
        secret_args: Some(connection_secret),
        example,
    };
    ToolSpec {
        name: "psql",
        title: "PostgreSQL",
        description: "PostgreSQL: pooled, parameters bound, effects per statement, server-side timeouts.",
        aliases: &["mcp_psql_manager", "sql"],
        open_world: true,
        actions: vec![
            a(
                "query",
                "Run a query",
                "Runs one statement with `$n` params; typed JSON rows with column names and types; all rows in an artifact past the budget.",
                Effect::Destructive,
                || {
                    args_schema::<QueryArgs>(
                        "psql",
                        "query",
                        "Runs one statement with `$n` params; typed JSON rows with column names and types; all rows in an artifact past the budget.",
                    )
                },
                Some(classify_sql),
                || json!({"action": "query", "sql": "select now()"}),
            ),
            a(
                "exec",
                "Run a writing statement",
                "Runs one writing statement. `$n` params; returns the rows affected.",
                Effect::Destructive,
                || {
                    args_schema::<ExecArgs>(
                        "psql",
                        "exec",
                        "Runs one writing statement. `$n` params; returns the rows affected.",
                    )
                },
                Some(classify_exec),
                || json!({"action": "exec", "sql": "update jobs set done = true where id = $1", "params": [42]}),
            ),
            a(
                "transaction",
                "Run statements atomically",
                "Runs statements in one transaction: all of them, or none if one fails.",
                Effect::Destructive,
                || {
                    args_schema::<TransactionArgs>(
                        "psql",
                        "transaction",
                        "Runs statements in one transaction: all of them, or none if one fails.",
                    )
                },
                Some(classify_transaction),
                || json!({"action": "transaction", "statements": [{"sql": "insert into t (x) values ($1)", "params": [1]}, {"sql": "delete from t where x = $1", "params": [0]}]}),
            ),
            a(
                "export",
                "Export a table or query",
                "Exports a table or query as CSV or JSON Lines. Streamed with COPY … TO STDOUT into an artifact (a host file with INFRA_UNSAFE_LOCAL=1), with its SHA-256.",
                Effect::Read,
                || {
                    args_schema::<ExportArgs>(
                        "psql",
                        "export",
                        "Exports a table or query as CSV or JSON Lines. Streamed with COPY … TO STDOUT into an artifact (a host file with INFRA_UNSAFE_LOCAL=1), with its SHA-256.",
                    )
                },
                None,
                || json!({"action": "export", "table": "events", "format": "csv", "csv_header": true}),
            ),
            a(
                "tables",
                "List tables",
                "Tables and views, with sizes. Estimated rows and bytes of each.",
                Effect::Read,
                || {
                    args_schema::<TablesArgs>(
                        "psql",
                        "tables",
                        "Tables and views, with sizes. Estimated rows and bytes of each.",
                    )
                },
                None,
                || json!({"action": "tables", "schema": "public"}),
            ),
            a(
                "describe",
                "Describe a table",
                "A table's columns, indexes and constraints.",
                Effect::Read,
                || {
                    args_schema::<DescribeArgs>(
                        "psql",
                        "describe",
                        "A table's columns, indexes and constraints.",
                    )
                },
                None,
                || json!({"action": "describe", "table": "public.events"}),
            ),
        ]
        .into_iter()
        .chain(helpers::actions(a))
        .collect(),
    }
}

/// Rows kept in the result; all fetched rows are in an artifact past this.
const INLINE_BYTES: usize = 64 * 1024;
const DEFAULT_MAX_ROWS: u64 = 10_000;
/// Rows fetched per round trip.
const BATCH: i32 = 1000;

fn invalid(msg: impl Into<String>) -> ActionError {
    ActionError::new(ErrorKind::InvalidArgs, msg)
}

/// `sql` as one statement, or why not.
fn one_statement(sql: &str) -> Result<(), ActionError> {
    match sql::count(sql) {
        Ok(1) => Ok(()),
        Ok(0) => Err(invalid("`sql` holds no statement")),
        Ok(n) => Err(ActionError::new(
            ErrorKind::Refused,
            format!("`sql` holds {n} statements; one call runs one statement"),
        )
        .hint("use `transaction` for several statements; nothing was sent")),
        Err(e) => Err(invalid(format!("`sql` cannot be read: {e}"))),
    }
}

/// Refuses a writing statement on a read-only call, before anything is sent.
fn refuse_writes(sql: &str, read_only: bool) -> Result<(), ActionError> {
    if !read_only {
        return Ok(());
    }
    match sql::classify(sql) {
        Ok((Effect::Read, _)) => Ok(()),
        Ok((e, why)) => Err(ActionError::new(
            ErrorKind::Refused,
            format!("this call is read-only and the statement is `{e}` ({why}); nothing was sent"),
        )
        .hint("run it without `read_only` (and on a target that is not read-only)")),
        Err(e) => Err(invalid(format!("`sql` cannot be read: {e}"))),
    }
}

fn params_of(v: Option<&[Value]>) -> Vec<Param> {
    v.unwrap_or_default().iter().cloned().map(Param).collect()
}

fn refs(params: &[Param]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn check_param_count(stmt: &postgres::Statement, given: usize) -> Result<(), ActionError> {
    let want = stmt.params().len();
    if want == given {
        Ok(())
    } else {
        Err(invalid(format!(
            "the statement takes {want} parameter(s) and `params` has {given}"
        )))
    }
}

fn columns(stmt: &postgres::Statement) -> Value {
    Value::Array(
        stmt.columns()
            .iter()
            .map(|c| json!({"name": c.name(), "type": c.type_().name()}))
            .collect(),
    )
}

fn row_json(row: &postgres::Row) -> Result<Value, ActionError> {
    let mut m = Map::new();
    for (i, c) in row.columns().iter().enumerate() {
        let cell: Cell = row.try_get(i).map_err(|e| {
            ActionError::new(
                ErrorKind::DbFailed,
                format!("cannot read column `{}`: {e}", c.name()),
            )
        })?;
        m.insert(c.name().to_owned(), cell.0);
    }
    Ok(Value::Object(m))
}

/// Rows as they arrive: the first in memory up to a budget, then all of them in an artifact.
struct RowSink<'c> {
    call: &'c Call<'c>,
    kept: Vec<Value>,
    kept_bytes: usize,
    spill: Option<ArtifactWriter>,
    rows: u64,
}

impl RowSink<'_> {
    fn push(&mut self, v: Value) -> Result<(), ActionError> {
        let line = v.to_string();
        self.rows += 1;
        let io = |e: std::io::Error| {
            ActionError::new(ErrorKind::Failed, format!("writing the rows: {e}"))
        };
        if let Some(w) = &mut self.spill {
            return w
                .write_all(line.as_bytes())
                .and_then(|()| w.write_all(b"\n"))
                .map_err(io);
        }
        self.kept_bytes += line.len() + 1;
        self.kept.push(v);
        if self.kept_bytes > INLINE_BYTES {
            let mut w = ArtifactWriter::create(
                &self.call.dir,
                &self.call.uri_base,
                "rows.jsonl",
                self.call.host.redactor().clone(),
            )
            .map_err(io)?;
            for r in &self.kept {
                w.write_all(r.to_string().as_bytes()).map_err(io)?;
                w.write_all(b"\n").map_err(io)?;
            }
            // the result keeps what fits the budget
            while self.kept_bytes > INLINE_BYTES {
                if let Some(last) = self.kept.pop() {
                    self.kept_bytes -= last.to_string().len() + 1;
                }
            }
            self.spill = Some(w);
        }
        Ok(())
    }
}

fn query(call: &Call<'_>) -> Result<Value, ActionError> {
    let QueryArgs {
        sql,
        params,
        target,
        profile_name,
        connection,
        read_only,
        max_rows,
    } = call.parse()?;
    let sql = sql.as_str();
    one_statement(sql)?;
    let r = conn::resolve(
        call,
        conn::Where::new(&target, &profile_name, &connection, read_only),
    )?;
    refuse_writes(sql, r.read_only)?;
    let reads = r.read_only || judged_read(classify_sql, call.args);
    let params = params_of(params.as_deref());
    let max_rows = max_rows.unwrap_or(DEFAULT_MAX_ROWS);
    let started = std::time::Instant::now();
    let pool = &call.host.pools().psql;
    let ran = pool.with(call, &r, |client: &mut Client| {
        let mut tx = client
            .build_transaction()
            .read_only(reads)
            .start()
            .map_err(|e| conn::db_error(&e, "starting the transaction"))?;
        let stmt = tx
            .prepare(sql)
            .map_err(|e| conn::db_error(&e, "preparing"))?;
        check_param_count(&stmt, params.len())?;
        let portal = tx
            .bind(&stmt, &refs(&params))
            .map_err(|e| conn::db_error(&e, "binding the parameters"))?;
        let mut sink = RowSink {
            call,
            kept: Vec::new(),
            kept_bytes: 0,
            spill: None,
            rows: 0,
        };
        let mut more = false;
        loop {
            let want = (max_rows - sink.rows).min(BATCH as u64) as i32;
            let batch = tx
                .query_portal(&portal, want.max(1))
                .map_err(|e| conn::db_error(&e, "running the query"))?;
            let n = batch.len();
            if sink.rows >= max_rows {
                more = n > 0;
                break;
            }
            for row in &batch {
                sink.push(row_json(row)?)?;
            }
            if n < want as usize {
                break;
            }
        }
        drop(portal);
        tx.commit().map_err(|e| conn::db_error(&e, "committing"))?;
        Ok((columns(&stmt), sink, more))
    });
    let (cols, sink, more) = ran.map_err(|e| refused_hidden_write(e, r.read_only))?;
    let mut out = json!({
        "columns": cols,
        "row_count": sink.rows,
        "rows_truncated": sink.rows > sink.kept.len() as u64,
        "more_rows": more,
        "read_only": reads,
        "database": r.label,
        "duration_ms": started.elapsed().as_millis() as u64,
        "ok": true,
    });
    out["rows"] = Value::Array(sink.kept);
    match sink.spill {
        Some(w) => {
            let a = w.finish().map_err(|e| {
                ActionError::new(ErrorKind::Failed, format!("writing the rows: {e}"))
            })?;
            out["rows_uri"] = a.uri.clone().into();
            out["artifacts"] = json!([a.to_json()]);
        }
        None => out["artifacts"] = json!([]),
    }
    Ok(out)
}

fn exec(call: &Call<'_>) -> Result<Value, ActionError> {
    let ExecArgs {
        sql,
        params,
        target,
        profile_name,
        connection,
        read_only,
    } = call.parse()?;
    let sql = sql.as_str();
    one_statement(sql)?;
    let r = conn::resolve(
        call,
        conn::Where::new(&target, &profile_name, &connection, read_only),
    )?;
    refuse_writes(sql, r.read_only)?;
    let params = params_of(params.as_deref());
    let started = std::time::Instant::now();
    let n = call.host.pools().psql.with(call, &r, |client| {
        // a read-only call in a read-only transaction, as `query` runs one
        let mut tx = client
            .build_transaction()
            .read_only(r.read_only)
            .start()
            .map_err(|e| conn::db_error(&e, "starting the transaction"))?;
        let stmt = tx
            .prepare(sql)
            .map_err(|e| conn::db_error(&e, "preparing"))?;
        check_param_count(&stmt, params.len())?;
        let n = tx
            .execute(&stmt, &refs(&params))
            .map_err(|e| conn::db_error(&e, "running the statement"))?;
        tx.commit().map_err(|e| conn::db_error(&e, "committing"))?;
        Ok(n)
    })?;
    Ok(json!({
        "rows_affected": n,
        "database": r.label,
        "duration_ms": started.elapsed().as_millis() as u64,
        "ok": true,
    }))
}

fn transaction(call: &Call<'_>) -> Result<Value, ActionError> {
    let TransactionArgs {
        statements,
        target,
        profile_name,
        connection,
        read_only,
    } = call.parse()?;
    let r = conn::resolve(
        call,
        conn::Where::new(&target, &profile_name, &connection, read_only),
    )?;
    for (i, s) in statements.iter().enumerate() {
        let sql = s.sql.as_str();
        one_statement(sql).map_err(|mut e| {
            e.message = format!("statement {i}: {}", e.message);
            e
        })?;
        refuse_writes(sql, r.read_only)?;
    }
    let reads = r.read_only || judged_read(classify_transaction, call.args);
    let started = std::time::Instant::now();
    let done = call.host.pools().psql.with(call, &r, |client| {
        let mut tx = client
            .build_transaction()
            .read_only(reads)
            .start()
            .map_err(|e| conn::db_error(&e, "starting the transaction"))?;
        let mut done = Vec::new();
        for (i, s) in statements.iter().enumerate() {
            let sql = s.sql.as_str();
            let params = params_of(s.params.as_deref());
            let step = (|| {
                let stmt = tx.prepare(sql).map_err(|e| conn::db_error(&e, "preparing"))?;
                check_param_count(&stmt, params.len())?;
                tx.execute(&stmt, &refs(&params))
                    .map_err(|e| conn::db_error(&e, "running"))
            })();
            match step {
                Ok(n) => done.push(json!({"index": i, "rows_affected": n})),
                Err(mut e) => {
                    // dropping the transaction rolls it back
                    e.message = format!(
                        "statement {i} failed, so the transaction was rolled back and nothing was changed: {}",
                        e.message
                    );
                    return Err(e.with_result(json!({"failed_index": i, "committed": false})));
                }
            }
        }
        tx.commit()
            .map_err(|e| conn::db_error(&e, "committing"))?;
        Ok(done)
    });
    let done = done.map_err(|e| refused_hidden_write(e, r.read_only))?;
    Ok(json!({
        "statements": done,
        "committed": true,
        "database": r.label,
        "duration_ms": started.elapsed().as_millis() as u64,
        "ok": true,
    }))
}

/// `name` or `schema.name`, each part quoted as an identifier.
fn qualified(table: &str) -> Result<String, ActionError> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(format!(
            "`table` `{table}` is not `name` or `schema.name`"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| dsl::template::sql_ident(p))
        .collect::<Vec<_>>()
        .join("."))
}

fn tables(call: &Call<'_>) -> Result<Value, ActionError> {
    let TablesArgs {
        schema,
        target,
        profile_name,
        connection,
    } = call.parse()?;
    let r = conn::resolve(
        call,
        conn::Where::new(&target, &profile_name, &connection, None),
    )?;
    let schema = schema.map(Value::String);
    let rows = call.host.pools().psql.with(call, &r, |client| {
        let rows = client
            .query(
                "SELECT n.nspname AS schema, c.relname AS name,
                        CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                          WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                          WHEN 'f' THEN 'foreign table' END AS kind,
                        GREATEST(c.reltuples, 0)::bigint AS estimated_rows,
                        pg_total_relation_size(c.oid) AS bytes
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg_toast%'
                   AND ($1::text IS NULL OR n.nspname = $1::text)
                 ORDER BY 1, 2",
                &[&Param(schema.clone().unwrap_or(Value::Null))],
            )
            .map_err(|e| conn::db_error(&e, "listing tables"))?;
        rows.iter().map(row_json).collect::<Result<Vec<_>, _>>()
    })?;
    Ok(json!({"tables": rows, "count": rows.len(), "database": r.label, "ok": true}))
}

fn describe(call: &Call<'_>) -> Result<Value, ActionError> {
    let DescribeArgs {
        table,
        target,
        profile_name,
        connection,
    } = call.parse()?;
    let (schema, name) = match table.split_once('.') {
        Some((s, n)) => (Some(s.to_owned()), n.to_owned()),
        None => (None, table.clone()),
    };
    let r = conn::resolve(
        call,
        conn::Where::new(&target, &profile_name, &connection, None),
    )?;
    let schema_v = schema.map_or(Value::Null, Value::String);
    let (cols, idx, cons) = call.host.pools().psql.with(call, &r, |client| {
        let p = [Param(schema_v.clone()), Param(Value::String(name.clone()))];
        let params = refs(&p);
        // the first visible table of that name, like the search path finds it
        let rel = "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relname = $2::text AND ($1::text IS NULL AND pg_table_is_visible(c.oid) OR n.nspname = $1::text)
                   LIMIT 1";
        let cols = client
            .query(
                &format!(
                    "SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
                            NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS default
                     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                     WHERE a.attrelid = ({rel}) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
                ),
                &params,
            )
            .map_err(|e| conn::db_error(&e, "reading the columns"))?;
        let idx = client
            .query(
                &format!(
                    "SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition,
                            x.indisunique AS unique, x.indisprimary AS primary
                     FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                     WHERE x.indrelid = ({rel}) ORDER BY 1"
                ),
                &params,
            )
            .map_err(|e| conn::db_error(&e, "reading the indexes"))?;
        let cons = client
            .query(
                &format!(
                    "SELECT conname AS name, contype::text AS kind, pg_get_constraintdef(oid) AS definition
                     FROM pg_constraint WHERE conrelid = ({rel}) ORDER BY 1"
                ),
                &params,
            )
            .map_err(|e| conn::db_error(&e, "reading the constraints"))?;
        let all = |rows: Vec<postgres::Row>| rows.iter().map(row_json).collect::<Result<Vec<_>, _>>();
        Ok((all(cols)?, all(idx)?, all(cons)?))
    })?;
    if cols.is_empty() {
        return Err(ActionError::new(
            ErrorKind::NotFound,
            format!("no table `{table}` in {}", r.label),
        )
        .hint("`psql {action: tables}` lists them"));
    }
    Ok(json!({
        "table": table,
        "columns": cols,
        "indexes": idx,
        "constraints": cons,
        "database": r.label,
        "ok": true,
    }))
}

pub(super) fn invoke(action: &str, call: &Call<'_>) -> Result<Value, ActionError> {
    match action {
        "query" => query(call),
        "exec" => exec(call),
        "transaction" => transaction(call),
        "export" => export::export(call, call.parse()?),
        "tables" => tables(call),
        "describe" => describe(call),
        other => helpers::invoke(other, call),
    }
}

#[cfg(test)]
mod tests;
