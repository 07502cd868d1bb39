//! `psql.export`: a table or one whole query streamed out with `COPY … TO STDOUT` as CSV or JSON Lines,
//! into an artifact or a host file (through a temporary sibling renamed over it), with its digest.

use crate::error::ErrorKind;
use std::io::{Read, Write};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ExportArgs, conn, invalid, one_statement, qualified, sql};
use crate::actions::{ActionError, Call};
use crate::record::artifacts::ArtifactWriter;
use dsl::Effect;

/// Where an export goes.
enum ExportSink {
    File(std::io::BufWriter<std::fs::File>),
    Artifact(ArtifactWriter),
}

/// Undoes COPY's text-format escapes (`\\`, `\n`, `\t`, …) across chunk boundaries.
#[derive(Debug, Default)]
pub(super) struct Unescape {
    pending: bool,
}

impl Unescape {
    pub(super) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.pending {
                self.pending = false;
                out.push(match b {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'b' => 8,
                    b'f' => 12,
                    b'v' => 11,
                    other => other,
                });
            } else if b == b'\\' {
                self.pending = true;
            } else {
                out.push(b);
            }
        }
    }
}

/// Counts CSV records (newlines outside quotes).
#[derive(Debug, Default)]
struct CsvCount {
    quoted: bool,
    records: u64,
}

impl CsvCount {
    fn feed(&mut self, input: &[u8]) {
        for &b in input {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => self.records += 1,
                _ => {}
            }
        }
    }
}

pub(super) fn export(call: &Call<'_>, args: ExportArgs) -> Result<Value, ActionError> {
    let ExportArgs {
        table,
        query,
        format,
        csv_header,
        header,
        file_path,
        target,
        profile_name,
        connection,
    } = args;
    let file_path = file_path.as_deref().filter(|p| !p.is_empty());
    if file_path.is_some() && !call.host.config().unsafe_local {
        return Err(ActionError::new(
            ErrorKind::Refused,
            "`file_path` names a path on the infra host, which needs INFRA_UNSAFE_LOCAL=1",
        )
        .hint("leave it out to export into an artifact"));
    }
    let format = match format.as_deref().unwrap_or("csv") {
        "jsonl" | "json" => "jsonl",
        _ => "csv",
    };
    let header = csv_header.or(header).unwrap_or(true);
    let (copy, whole_query) = copy_out(
        table.as_deref(),
        query.as_deref(),
        format == "jsonl",
        header,
        "an export runs",
    )?;
    let r = conn::resolve(
        call,
        conn::Where::new(&target, &profile_name, &connection, None),
    )?;
    let name = format!("export.{format}");
    let started = std::time::Instant::now();
    // where the bytes go: an artifact, or a sibling of the host file renamed over it at the end
    let tmp = file_path.map(|p| crate::actions::temp_sibling(std::path::Path::new(p)));
    let result = call.host.pools().psql.with(call, &r, |client| {
        let mut tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .map_err(|e| conn::db_error(&e, "starting the transaction"))?;
        if let Some(q) = whole_query {
            // the server parses the query alone first (the extended protocol takes one statement and
            // runs nothing): only a whole query that returns rows goes inside the COPY
            let stmt = tx.prepare(q).map_err(|e| {
                let mut err = conn::db_error(&e, "the server does not take `query` as one query");
                err.message.push_str("; nothing was exported");
                err
            })?;
            if stmt.columns().is_empty() {
                return Err(ActionError::new(
                    ErrorKind::Refused,
                    "`query` returns no rows, so there is nothing to export; nothing was run",
                ));
            }
        }
        let mut reader = tx
            .copy_out(copy.as_str())
            .map_err(|e| conn::db_error(&e, "starting the export"))?;
        let io = |e: std::io::Error| {
            ActionError::new(ErrorKind::Failed, format!("writing the export: {e}"))
        };
        let mut to = match &tmp {
            Some(t) => ExportSink::File(std::io::BufWriter::with_capacity(
                256 * 1024,
                std::fs::File::create(t).map_err(io)?,
            )),
            None => ExportSink::Artifact(
                ArtifactWriter::create(
                    &call.dir,
                    &call.uri_base,
                    &name,
                    call.host.redactor().clone(),
                )
                .map_err(io)?,
            ),
        };
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut csv = CsvCount::default();
        let mut lines = 0u64;
        let mut unescape = Unescape::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut plain = Vec::with_capacity(buf.len());
        let mut ended = false;
        while !ended {
            // COPY arrives one row per message: gather a large chunk before hashing and writing (and
            // never read past the end, which the driver takes for a protocol error)
            let mut n = 0;
            while n < buf.len() {
                let got = reader.read(&mut buf[n..]).map_err(|e| {
                    ActionError::new(ErrorKind::DbFailed, format!("reading the export: {e}"))
                })?;
                if got == 0 {
                    ended = true;
                    break;
                }
                n += got;
            }
            if n == 0 {
                break;
            }
            let chunk: &[u8] = if format == "jsonl" {
                plain.clear();
                unescape.feed(&buf[..n], &mut plain);
                lines += plain.iter().filter(|b| **b == b'\n').count() as u64;
                &plain
            } else {
                csv.feed(&buf[..n]);
                &buf[..n]
            };
            hasher.update(chunk);
            bytes += chunk.len() as u64;
            match &mut to {
                ExportSink::File(f) => f.write_all(chunk),
                ExportSink::Artifact(a) => a.write_all(chunk),
            }
            .map_err(io)?;
        }
        let stored = match to {
            ExportSink::File(mut f) => {
                f.flush()
                    .and_then(|()| f.get_ref().sync_all())
                    .map_err(io)?;
                None
            }
            ExportSink::Artifact(a) => Some(a.finish().map_err(io)?),
        };
        drop(reader);
        tx.commit()
            .map_err(|e| conn::db_error(&e, "finishing the export"))?;
        let rows = if format == "jsonl" {
            lines
        } else {
            csv.records.saturating_sub(u64::from(header))
        };
        // an artifact is stored redacted: its own count and digest are what a reader gets
        Ok(match stored {
            Some(a) => (rows, a.bytes, a.sha256, Some(a.uri)),
            None => (rows, bytes, dsl::analyze::hex(&hasher.finalize()), None),
        })
    });
    let (rows, bytes, sha, uri) = match result {
        Ok(v) => v,
        Err(e) => {
            // nothing half-written is left behind
            match &tmp {
                Some(t) => {
                    let _ = std::fs::remove_file(t);
                }
                None => {
                    let _ = std::fs::remove_file(call.dir.join(&name));
                }
            }
            return Err(e);
        }
    };
    let mut out = json!({
        "format": format,
        "rows": rows,
        "bytes": bytes,
        "sha256": sha,
        "database": r.label,
        "duration_ms": started.elapsed().as_millis() as u64,
        "ok": true,
    });
    match (file_path, &tmp, uri) {
        (Some(p), Some(t), _) => {
            std::fs::rename(t, p).map_err(|e| {
                let _ = std::fs::remove_file(t);
                ActionError::new(ErrorKind::Failed, format!("cannot write `{p}`: {e}"))
            })?;
            out["file_path"] = p.into();
            out["artifacts"] = json!([]);
        }
        (_, _, Some(uri)) => {
            out["uri"] = uri.clone().into();
            out["artifacts"] =
                json!([{"uri": uri, "bytes": out["bytes"], "sha256": out["sha256"]}]);
        }
        _ => out["artifacts"] = json!([]),
    }
    Ok(out)
}

/// The `COPY … TO STDOUT` of a table or of one read-only query (CSV, with a header when `header`, or
/// JSON Lines), and the query alone, to check before the copy. A query must be one statement, read
/// only and enclosable in parentheses; `who` begins the refusal (`an export runs`). Exports and
/// pipelines read through this one check.
pub(super) fn copy_out<'q>(
    table: Option<&str>,
    query: Option<&'q str>,
    jsonl: bool,
    header: bool,
    who: &str,
) -> Result<(String, Option<&'q str>), ActionError> {
    let (source, whole) = match (table, query) {
        (Some(t), None) => (format!("TABLE {}", qualified(t)?), None),
        (None, Some(q)) => {
            one_statement(q)?;
            let q = q
                .trim()
                .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
            match sql::classify(q) {
                Ok((Effect::Read, _)) => {}
                Ok((e, why)) => {
                    return Err(ActionError::new(
                        ErrorKind::Refused,
                        format!(
                            "{who} a read-only query, and this one is `{e}` ({why}); nothing was sent"
                        ),
                    ));
                }
                Err(e) => return Err(invalid(format!("`query` cannot be read: {e}"))),
            }
            sql::enclosable(q).map_err(|e| {
                ActionError::new(
                    ErrorKind::Refused,
                    format!("`query` must be one whole query ({e}); nothing was sent"),
                )
                .hint(
                    "give one SELECT, VALUES, TABLE or WITH … SELECT, with its parentheses closed",
                )
            })?;
            (q.to_owned(), Some(q))
        }
        _ => return Err(invalid("give exactly one of `table` and `query`")),
    };
    // the query stands on lines of its own, so a trailing `--` comment ends before the `)`
    let copy = if jsonl {
        format!("COPY (SELECT row_to_json(t) FROM (\n{source}\n) t) TO STDOUT")
    } else {
        format!(
            "COPY (\n{source}\n) TO STDOUT WITH (FORMAT csv{})",
            if header { ", HEADER true" } else { "" }
        )
    };
    Ok((copy, whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_are_undone_across_chunks() {
        // COPY's text form of the JSON `{"a":"x\"y\\z"}` doubles each backslash; a chunk may end
        // in the middle of an escape
        let mut u = Unescape::default();
        let mut out = Vec::new();
        u.feed(b"{\"a\":\"x\\", &mut out);
        u.feed(b"\\\"y\\\\\\\\z\"}\n", &mut out);
        assert_eq!(out, b"{\"a\":\"x\\\"y\\\\z\"}\n");
        let mut c = CsvCount::default();
        c.feed(b"id,text\n1,\"two\nlines\"\n2,x\n");
        assert_eq!(c.records, 3);
    }
}
