//! The table helpers of `psql`: `insert` (rows as bound parameters, in one transaction),
//! `insert_bulk` (rows through COPY), `select`, `count`, `exists`, `update` and `delete`, each built
//! from a table name and a `where` map of column → value. Identifiers are quoted, values are bound
//! parameters (`null` is `IS NULL`): no SQL is made from a value. `update` and `delete` need a
//! non-empty `where` (every row is `exec`'s, classified destructive).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::values::Param;
use super::{ActionError, ActionSpec, Call, conn, invalid, qualified, refs, row_json};
use crate::actions::args_schema;
use crate::error::ErrorKind;
use dsl::Effect;
use dsl::template::sql_ident;

/// Column → value; a `null` value matches NULL.
pub type Where = IndexMap<String, Value>;

/// Rows into a table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InsertArgs {
    /// `table` or `schema.table`.
    pub table: String,
    /// Rows (each column → value), all or none.
    #[schemars(with = "Option<Vec<Value>>", length(max = 100000))]
    pub rows: Option<Vec<Map<String, Value>>>,
    pub target: Option<String>,
    pub profile_name: Option<String>,
    pub connection: Option<String>,
}

/// Rows read, counted, tested, changed or removed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableArgs {
    /// `table` or `schema.table`.
    pub table: String,
    /// Column → value, all of which must match (`null`: IS NULL).
    #[serde(rename = "where")]
    #[schemars(with = "Option<Value>", extend("type" = "object"))]
    pub where_: Option<Where>,
    /// `select`: the columns (default all).
    #[schemars(with = "Option<Vec<Value>>")]
    pub columns: Option<Vec<String>>,
    /// `select`: order by these columns (`-name` for descending).
    #[schemars(with = "Option<Vec<Value>>")]
    pub order_by: Option<Vec<String>>,
    /// `select`: the most rows (default 1,000).
    #[schemars(range(min = 1, max = 100000))]
    pub max_rows: Option<u64>,
    /// `update`: column → new value.
    #[schemars(with = "Option<Value>", extend("type" = "object"))]
    pub set: Option<Map<String, Value>>,
    pub target: Option<String>,
    pub profile_name: Option<String>,
    pub connection: Option<String>,
}

/// ` WHERE "a" = $1 AND "b" IS NULL`, its parameters numbered after those in `params`.
fn where_clause(w: Option<&Where>, params: &mut Vec<Param>) -> String {
    let Some(w) = w.filter(|w| !w.is_empty()) else {
        return String::new();
    };
    let parts: Vec<String> = w
        .iter()
        .map(|(c, v)| {
            if v.is_null() {
                format!("{} IS NULL", sql_ident(c))
            } else {
                params.push(Param(v.clone()));
                format!("{} = ${}", sql_ident(c), params.len())
            }
        })
        .collect();
    format!(" WHERE {}", parts.join(" AND "))
}

fn resolve(call: &Call<'_>, a: &TableArgs, writes: bool) -> Result<conn::Resolved, ActionError> {
    let r = conn::resolve(
        call,
        conn::Where::new(&a.target, &a.profile_name, &a.connection, None),
    )?;
    if writes && r.read_only {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!("{} is read-only; nothing was sent", r.label),
        ));
    }
    Ok(r)
}

fn run_rows(
    call: &Call<'_>,
    r: &conn::Resolved,
    sql: &str,
    params: &[Param],
) -> Result<Vec<Value>, ActionError> {
    call.host.pools().psql.with(call, r, |c| {
        let rows = c
            .query(sql, &refs(params))
            .map_err(|e| conn::db_error(&e, "running the query"))?;
        rows.iter().map(row_json).collect()
    })
}

fn select(call: &Call<'_>, a: &TableArgs, action: &str) -> Result<Value, ActionError> {
    let table = qualified(&a.table)?;
    let r = resolve(call, a, false)?;
    let mut params = Vec::new();
    let w = where_clause(a.where_.as_ref(), &mut params);
    let (sql, limit) = match action {
        "count" => (format!("SELECT count(*) AS count FROM {table}{w}"), 1),
        "exists" => (
            format!("SELECT EXISTS (SELECT 1 FROM {table}{w}) AS exists"),
            1,
        ),
        _ => {
            let cols = match a.columns.as_deref() {
                Some(c) if !c.is_empty() => c
                    .iter()
                    .map(|c| sql_ident(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "*".to_owned(),
            };
            let order = match a.order_by.as_deref() {
                Some(o) if !o.is_empty() => {
                    let by: Vec<String> = o
                        .iter()
                        .map(|c| match c.strip_prefix('-') {
                            Some(c) => format!("{} DESC", sql_ident(c)),
                            None => sql_ident(c),
                        })
                        .collect();
                    format!(" ORDER BY {}", by.join(", "))
                }
                _ => String::new(),
            };
            let limit = a.max_rows.unwrap_or(1000);
            (
                format!("SELECT {cols} FROM {table}{w}{order} LIMIT {}", limit + 1),
                limit,
            )
        }
    };
    let mut rows = run_rows(call, &r, &sql, &params)?;
    Ok(match action {
        "count" => {
            json!({"count": rows.first().map(|r| r["count"].clone()), "database": r.label, "ok": true})
        }
        "exists" => {
            json!({"exists": rows.first().map(|r| r["exists"].clone()), "database": r.label, "ok": true})
        }
        _ => {
            let more = rows.len() as u64 > limit;
            rows.truncate(limit as usize);
            json!({"rows": rows, "row_count": rows.len(), "more_rows": more, "database": r.label, "ok": true})
        }
    })
}

fn change(call: &Call<'_>, a: &TableArgs, action: &str) -> Result<Value, ActionError> {
    let table = qualified(&a.table)?;
    if a.where_.as_ref().is_none_or(|w| w.is_empty()) {
        return Err(invalid(format!(
            "`{action}` takes a non-empty `where`; for every row, use `exec` with a statement"
        )));
    }
    let mut params = Vec::new();
    let sql = if action == "update" {
        let set = a
            .set
            .as_ref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("`update` takes `set`: column → new value"))?;
        let sets: Vec<String> = set
            .iter()
            .map(|(c, v)| {
                params.push(Param(v.clone()));
                format!("{} = ${}", sql_ident(c), params.len())
            })
            .collect();
        let w = where_clause(a.where_.as_ref(), &mut params);
        format!("UPDATE {table} SET {}{w}", sets.join(", "))
    } else {
        let w = where_clause(a.where_.as_ref(), &mut params);
        format!("DELETE FROM {table}{w}")
    };
    let r = resolve(call, a, true)?;
    let n = call.host.pools().psql.with(call, &r, |c| {
        c.execute(sql.as_str(), &refs(&params))
            .map_err(|e| conn::db_error(&e, &format!("running the {action}")))
    })?;
    Ok(json!({"rows_affected": n, "database": r.label, "ok": true}))
}

/// The rows of an insert, at least one.
fn rows_of(a: &InsertArgs) -> Result<&[Map<String, Value>], ActionError> {
    match a.rows.as_deref() {
        Some(rs) if !rs.is_empty() => Ok(rs),
        _ => Err(invalid("`rows` takes at least one row (column → value)")),
    }
}

fn insert(call: &Call<'_>, a: InsertArgs) -> Result<Value, ActionError> {
    let table = qualified(&a.table)?;
    let rows = rows_of(&a)?;
    let r = conn::resolve(
        call,
        conn::Where::new(&a.target, &a.profile_name, &a.connection, None),
    )?;
    if r.read_only {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!("{} is read-only; nothing was sent", r.label),
        ));
    }
    let n = call.host.pools().psql.with(call, &r, |c| {
        let mut tx = c
            .transaction()
            .map_err(|e| conn::db_error(&e, "starting the transaction"))?;
        let mut n = 0;
        for (i, row) in rows.iter().enumerate() {
            let cols: Vec<String> = row.keys().map(|k| sql_ident(k)).collect();
            let marks: Vec<String> = (1..=row.len()).map(|i| format!("${i}")).collect();
            let params: Vec<Param> = row.values().cloned().map(Param).collect();
            let sql = if row.is_empty() {
                format!("INSERT INTO {table} DEFAULT VALUES")
            } else {
                format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    cols.join(", "),
                    marks.join(", ")
                )
            };
            n += tx.execute(sql.as_str(), &refs(&params)).map_err(|e| {
                let mut err = conn::db_error(&e, &format!("row {i}"));
                err.message.push_str("; nothing was inserted");
                err.with_result(json!({"failed_index": i, "committed": false}))
            })?;
        }
        tx.commit().map_err(|e| conn::db_error(&e, "committing"))?;
        Ok(n)
    })?;
    Ok(json!({"rows_affected": n, "database": r.label, "ok": true}))
}

fn insert_bulk(call: &Call<'_>, a: InsertArgs) -> Result<Value, ActionError> {
    let rows = rows_of(&a)?;
    let columns: Vec<String> = rows[0].keys().cloned().collect();
    let mut text = Vec::new();
    for row in rows {
        crate::actions::pipeline::text_row(row, &columns, &mut text);
    }
    let at = super::stream::At {
        target: a.target.as_deref().or(a.profile_name.as_deref()),
        connection: a.connection.as_deref(),
    };
    let load = super::stream::Load {
        table: &a.table,
        columns: &columns,
        truncate_first: false,
    };
    let (n, label) = super::stream::copy_in(call, at, &load, &mut text.as_slice())?;
    Ok(json!({"rows_affected": n, "database": label, "ok": true}))
}

/// Runs one helper action.
pub(super) fn invoke(action: &str, call: &Call<'_>) -> Result<Value, ActionError> {
    match action {
        "insert" => insert(call, call.parse()?),
        "insert_bulk" => insert_bulk(call, call.parse()?),
        "select" | "count" | "exists" => select(call, &call.parse()?, action),
        "update" | "delete" => change(call, &call.parse()?, action),
        other => Err(ActionError::new(
            ErrorKind::NotAvailable,
            format!("psql has no action `{other}`"),
        )),
    }
}

/// The helper actions, made by `spec` (the tool's own constructor).
pub(super) fn actions(
    spec: impl Fn(
        &'static str,
        &'static str,
        &'static str,
        Effect,
        fn() -> Value,
        Option<super::super::ClassifyFn>,
        fn() -> Value,
    ) -> ActionSpec,
) -> Vec<ActionSpec> {
    vec![
        spec(
            "insert",
            "Insert rows",
            "Inserts rows. Each of `rows` (column → value) as bound parameters, all or none.",
            Effect::Write,
            || {
                args_schema::<InsertArgs>(
                    "psql",
                    "insert",
                    "Inserts rows. Each of `rows` (column → value) as bound parameters, all or none.",
                )
            },
            None,
            || json!({"action": "insert", "table": "events", "rows": [{"kind": "deploy", "ok": true}]}),
        ),
        spec(
            "insert_bulk",
            "Insert rows by COPY",
            "Inserts rows by COPY. All of `rows` (column → value), or none.",
            Effect::Write,
            || {
                args_schema::<InsertArgs>(
                    "psql",
                    "insert_bulk",
                    "Inserts rows by COPY. All of `rows` (column → value), or none.",
                )
            },
            None,
            || json!({"action": "insert_bulk", "table": "events", "rows": [{"kind": "a"}, {"kind": "b"}]}),
        ),
        spec(
            "select",
            "Select rows",
            "Reads matching rows. From `table`, matching `where` (column → value), with `columns`, `order_by`, `max_rows`.",
            Effect::Read,
            || {
                args_schema::<TableArgs>(
                    "psql",
                    "select",
                    "Reads matching rows. From `table`, matching `where` (column → value), with `columns`, `order_by`, `max_rows`.",
                )
            },
            None,
            || json!({"action": "select", "table": "events", "where": {"kind": "deploy"}, "order_by": ["-id"], "max_rows": 10}),
        ),
        spec(
            "count",
            "Count rows",
            "Counts matching rows. Those of `table` matching `where`.",
            Effect::Read,
            || {
                args_schema::<TableArgs>(
                    "psql",
                    "count",
                    "Counts matching rows. Those of `table` matching `where`.",
                )
            },
            None,
            || json!({"action": "count", "table": "events", "where": {"kind": "deploy"}}),
        ),
        spec(
            "exists",
            "Test for rows",
            "Tests for a match. Whether a row of `table` matches `where`.",
            Effect::Read,
            || {
                args_schema::<TableArgs>(
                    "psql",
                    "exists",
                    "Tests for a match. Whether a row of `table` matches `where`.",
                )
            },
            None,
            || json!({"action": "exists", "table": "events", "where": {"id": 42}}),
        ),
        spec(
            "update",
            "Update rows",
            "Updates rows. Sets `set` (column → value) where `where` matches.",
            Effect::Write,
            || {
                args_schema::<TableArgs>(
                    "psql",
                    "update",
                    "Updates rows. Sets `set` (column → value) where `where` matches.",
                )
            },
            None,
            || json!({"action": "update", "table": "events", "set": {"done": true}, "where": {"id": 42}}),
        ),
        spec(
            "delete",
            "Delete rows",
            "Deletes matching rows. Those `where` matches.",
            Effect::Destructive,
            || {
                args_schema::<TableArgs>(
                    "psql",
                    "delete",
                    "Deletes matching rows. Those `where` matches.",
                )
            },
            None,
            || json!({"action": "delete", "table": "events", "where": {"id": 42}}),
        ),
    ]
}
