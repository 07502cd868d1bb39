//! PostgreSQL as a pipeline's source and sink. A source is a table or one read-only query streamed
//! with `COPY … TO STDOUT` (CSV with a header, or JSON Lines) in a read-only transaction; a sink loads
//! rows in COPY's text format (one record per line) with `COPY … FROM STDIN` into named columns, in one transaction (after `TRUNCATE` when
//! asked): every row or none. The server's error context (`COPY t, line N, column c`) gives the bad
//! record's number and column.

use std::io::{Read, Write};

use serde_json::json;

use super::{conn, qualified};
use crate::actions::{ActionError, Call};
use crate::error::ErrorKind;
use dsl::template::sql_ident;

/// Where a pipeline end connects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    pub target: Option<&'a str>,
    pub connection: Option<&'a str>,
}

impl At<'_> {
    fn resolve(&self, call: &Call<'_>) -> Result<conn::Resolved, ActionError> {
        conn::resolve(
            call,
            conn::Where {
                target: self.target,
                connection: self.connection,
                read_only: false,
            },
        )
    }
}

/// Streams a table or query into `to` (CSV with a header, or JSON Lines); returns the database label.
pub(crate) fn copy_out(
    call: &Call<'_>,
    at: At<'_>,
    table: Option<&str>,
    query: Option<&str>,
    jsonl: bool,
    to: &mut dyn Write,
) -> Result<String, ActionError> {
    let (copy, whole) =
        super::export::copy_out(table, query, jsonl, true, "a pipeline reads with")?;
    let r = at.resolve(call)?;
    call.host.pools().psql.with(call, &r, |client| {
        let mut tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .map_err(|e| conn::db_error(&e, "starting the transaction"))?;
        if let Some(q) = whole {
            let stmt = tx
                .prepare(q)
                .map_err(|e| conn::db_error(&e, "the server does not take `query` as one query"))?;
            if stmt.columns().is_empty() {
                return Err(ActionError::new(
                    ErrorKind::Refused,
                    "`query` returns no rows; nothing was run",
                ));
            }
        }
        let mut reader = tx
            .copy_out(copy.as_str())
            .map_err(|e| conn::db_error(&e, "starting the copy out"))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut plain = Vec::with_capacity(buf.len());
        let mut unescape = super::export::Unescape::default();
        loop {
            let n = reader.read(&mut buf).map_err(|e| match io_db_error(&e) {
                Some(pe) => conn::db_error(pe, "reading the rows"),
                None => ActionError::new(ErrorKind::DbFailed, format!("reading the rows: {e}")),
            })?;
            if n == 0 {
                break;
            }
            let chunk: &[u8] = if jsonl {
                plain.clear();
                unescape.feed(&buf[..n], &mut plain);
                &plain
            } else {
                &buf[..n]
            };
            to.write_all(chunk).map_err(|e| {
                ActionError::new(ErrorKind::Failed, format!("passing rows on: {e}"))
            })?;
        }
        drop(reader);
        tx.commit()
            .map_err(|e| conn::db_error(&e, "finishing the copy out"))?;
        Ok(r.label.clone())
    })
}

/// A load into a table.
#[derive(Debug)]
pub(crate) struct Load<'a> {
    pub table: &'a str,
    /// Column names in the order of the fields; empty: the table's own order.
    pub columns: &'a [String],
    pub truncate_first: bool,
}

/// The record and column of the server's `COPY t, line N, column c: …` context.
fn bad_row(where_: &str, table: &str, columns: &[String]) -> Option<(u64, Option<String>)> {
    let rel = table.rsplit('.').next().unwrap_or(table);
    let rest = where_.strip_prefix(&format!("COPY {rel}, line "))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let record = digits.parse().ok()?;
    let rest = rest[digits.len()..].strip_prefix(", column ");
    let column = rest.and_then(|r| {
        columns
            .iter()
            .filter(|c| r.starts_with(&format!("{c}:")) || r == c.as_str())
            .max_by_key(|c| c.len())
            .cloned()
    });
    Some((record, column))
}

/// The server's refusal of a row, with the record it names.
fn copy_error(e: &postgres::Error, load: &Load<'_>) -> ActionError {
    let mut err = conn::db_error(e, "loading the rows");
    let at = e
        .as_db_error()
        .and_then(|d| d.where_())
        .and_then(|w| bad_row(w, load.table, load.columns));
    if let Some((record, column)) = at {
        err.message = format!(
            "record {record}{}: {}; nothing was loaded (the transaction was rolled back)",
            column
                .as_deref()
                .map(|c| format!(", column `{c}`"))
                .unwrap_or_default(),
            err.message
        );
        err = err.with_result(json!({"record": record, "column": column, "committed": false}));
    } else {
        err.message
            .push_str("; nothing was loaded (the transaction was rolled back)");
    }
    err
}

/// A driver error inside a write, when there is one.
fn io_db_error(e: &std::io::Error) -> Option<&postgres::Error> {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<postgres::Error>())
}

/// Loads rows in COPY's text format (one per line) into a table, all rows or none; returns the rows and the database label.
pub(crate) fn copy_in(
    call: &Call<'_>,
    at: At<'_>,
    load: &Load<'_>,
    body: &mut dyn Read,
) -> Result<(u64, String), ActionError> {
    let table = qualified(load.table)?;
    let r = at.resolve(call)?;
    if r.read_only {
        return Err(ActionError::new(
            ErrorKind::Refused,
            format!(
                "{} is read-only, and a load writes; nothing was sent",
                r.label
            ),
        ));
    }
    let cols = if load.columns.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = load.columns.iter().map(|c| sql_ident(c)).collect();
        format!(" ({})", quoted.join(", "))
    };
    let copy = format!("COPY {table}{cols} FROM STDIN");
    call.host.pools().psql.with(call, &r, |client| {
        let mut tx = client
            .transaction()
            .map_err(|e| conn::db_error(&e, "starting the transaction"))?;
        if load.truncate_first {
            tx.batch_execute(&format!("TRUNCATE TABLE {table}"))
                .map_err(|e| conn::db_error(&e, "truncating the table"))?;
        }
        let mut w = tx
            .copy_in(copy.as_str())
            .map_err(|e| conn::db_error(&e, "starting the load"))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // dropping the writer aborts the copy, and the transaction rolls back
                    return Err(ActionError::new(
                        ErrorKind::Failed,
                        format!("reading the stream: {e}; nothing was loaded"),
                    ));
                }
            };
            if let Err(e) = w.write_all(&buf[..n]) {
                return Err(match io_db_error(&e) {
                    Some(pe) => copy_error(pe, load),
                    None => ActionError::new(ErrorKind::DbFailed, format!("loading the rows: {e}")),
                });
            }
        }
        let rows = w.finish().map_err(|e| copy_error(&e, load))?;
        tx.commit().map_err(|e| conn::db_error(&e, "committing"))?;
        Ok((rows, r.label.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bad_row_is_read_from_the_servers_context() {
        let cols = vec!["id".to_owned(), "we, ird: x".to_owned(), "we".to_owned()];
        assert_eq!(
            bad_row("COPY t, line 500001, column id: \"x\"", "public.t", &cols),
            Some((500_001, Some("id".into())))
        );
        assert_eq!(
            bad_row("COPY t, line 3, column we, ird: x: \"v\"", "t", &cols),
            Some((3, Some("we, ird: x".into())))
        );
        assert_eq!(
            bad_row("COPY t, line 7: \"1,2\"", "t", &cols),
            Some((7, None))
        );
        assert_eq!(bad_row("SQL function", "t", &cols), None);
    }
}
