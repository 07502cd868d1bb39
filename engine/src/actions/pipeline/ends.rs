//! A pipeline's ends: each source writes its bytes into the pipe, each sink reads them to the end and
//! only then commits (a transaction, a rename, a finished artifact); a sink that fails leaves its
//! destination as it was.

use std::io::{BufReader, Cursor, Read, Write};

use serde_json::{Value, json};

use super::chan::{CHUNK, Rx};
use super::records::{CsvToText, JsonlToText, read_header};
use super::{Columns, Format, Sink, Source};
use crate::actions::psql::stream::{At, Load, copy_in, copy_out};
use crate::actions::{ActionError, Call, http, ssh};
use crate::error::ErrorKind;
use crate::record::artifacts::ArtifactWriter;

/// Copies `from` into `to` in chunks, checking for a cancel between them.
fn pump(call: &Call<'_>, from: &mut dyn Read, to: &mut dyn Write) -> Result<(), ActionError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if call.cancel.is_cancelled() {
            return Err(ActionError::new(ErrorKind::Cancelled, "cancelled"));
        }
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ActionError::new(
                    ErrorKind::Failed,
                    format!("reading the stream: {e}"),
                ));
            }
        };
        to.write_all(&buf[..n])
            .map_err(|e| ActionError::new(ErrorKind::Failed, format!("writing: {e}")))?;
    }
}

/// Streams the source into `to`; returns what the result says of it.
pub(super) fn read(
    call: &Call<'_>,
    from: &Source,
    format: Format,
    to: &mut dyn Write,
) -> Result<Value, ActionError> {
    match from {
        Source::Psql {
            target,
            connection,
            table,
            query,
        } => {
            let at = At {
                target: target.as_deref(),
                connection: connection.as_deref(),
            };
            let label = copy_out(
                call,
                at,
                table.as_deref(),
                query.as_deref(),
                format == Format::Jsonl,
                to,
            )?;
            Ok(json!({"database": label}))
        }
        Source::Http {
            url,
            target,
            path,
            headers,
        } => {
            let get = http::Get {
                url: url.as_deref(),
                target: target.as_deref(),
                path: path.as_deref(),
                headers: headers.as_ref(),
            };
            let (mut body, url) = http::get_stream(call, get)?;
            pump(call, &mut body, to).map_err(|mut e| {
                e.message = format!("{url}: {}", e.message);
                e
            })?;
            Ok(json!({"url": url}))
        }
        Source::Sftp { target, path } => {
            ssh::stream::download(call, target, path, to)?;
            Ok(json!({"source_target": target, "source_path": path}))
        }
        Source::Artifact { uri } => {
            let mut f = crate::record::artifacts::open(&call.host.config().artifacts_root, uri)
                .map_err(|e| ActionError::new(ErrorKind::NotFound, e.to_string()))?;
            pump(call, &mut f, to)?;
            Ok(json!({"source_uri": uri}))
        }
        Source::File { path } => {
            let mut f = std::fs::File::open(path).map_err(|e| {
                ActionError::new(ErrorKind::NotFound, format!("cannot read `{path}`: {e}"))
            })?;
            pump(call, &mut f, to)?;
            Ok(json!({"source_path": path}))
        }
    }
}

/// Streams the pipe into the sink and commits; returns the records written when the sink counts
/// them, and what the result says of it.
pub(super) fn write(
    call: &Call<'_>,
    to: &Sink,
    format: Format,
    rx: &mut Rx<'_>,
) -> Result<(Option<u64>, Value), ActionError> {
    match to {
        Sink::Psql {
            target,
            connection,
            table,
            columns,
            truncate_first,
        } => {
            let at = At {
                target: target.as_deref(),
                connection: connection.as_deref(),
            };
            let (rows, label) = load(
                call,
                at,
                table,
                columns.as_ref(),
                truncate_first.unwrap_or(false),
                format,
                rx,
            )?;
            Ok((
                Some(rows),
                json!({"table": table, "database": label, "truncated_first": truncate_first.unwrap_or(false)}),
            ))
        }
        Sink::Sftp { target, path, mode } => {
            let mode = mode.unwrap_or(0o644) as i32;
            ssh::stream::upload(call, target, rx, path, mode)?;
            Ok((None, json!({"target": target, "remote_path": path})))
        }
        Sink::Artifact { name } => {
            let name = match name.as_deref() {
                Some(n) => {
                    if n.is_empty() || n.starts_with('.') || n.contains(['/', '\\']) {
                        return Err(ActionError::new(
                            ErrorKind::InvalidArgs,
                            format!("artifact `name` `{n}` must be a plain file name"),
                        ));
                    }
                    n.to_owned()
                }
                None => format!(
                    "pipeline.{}",
                    match format {
                        Format::Csv => "csv",
                        Format::Jsonl => "jsonl",
                        Format::Raw => "bin",
                    }
                ),
            };
            let io = |e: std::io::Error| {
                ActionError::new(ErrorKind::Failed, format!("writing the artifact: {e}"))
            };
            let mut w = ArtifactWriter::create(
                &call.dir,
                &call.uri_base,
                &name,
                call.host.redactor().clone(),
            )
            .map_err(io)?;
            let done = pump(call, rx, &mut w).and_then(|()| w.finish().map_err(io));
            match done {
                Ok(a) => Ok((None, json!({"uri": a.uri, "artifacts": [a.to_json()]}))),
                Err(e) => {
                    // no partial artifact is left behind
                    let _ = std::fs::remove_file(call.dir.join(&name));
                    Err(e)
                }
            }
        }
        Sink::File { path } => {
            let p = std::path::Path::new(path);
            let tmp = crate::actions::temp_sibling(p);
            let done = (|| {
                let mut f = std::fs::File::create(&tmp).map_err(|e| {
                    ActionError::new(ErrorKind::Failed, format!("cannot write `{path}`: {e}"))
                })?;
                pump(call, rx, &mut f)?;
                f.sync_all()
                    .map_err(|e| ActionError::new(ErrorKind::Failed, e.to_string()))?;
                std::fs::rename(&tmp, p).map_err(|e| {
                    ActionError::new(ErrorKind::Failed, format!("cannot replace `{path}`: {e}"))
                })
            })();
            if let Err(e) = done {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            Ok((None, json!({"path": path})))
        }
    }
}

/// The column list of a load: CSV headers (or JSON keys) renamed through a map, or a list given.
fn mapped(names: Vec<String>, columns: Option<&Columns>) -> Vec<String> {
    match columns {
        None => names,
        Some(Columns::List(l)) => l.clone(),
        Some(Columns::Map(m)) => names
            .into_iter()
            .map(|n| m.get(&n).cloned().unwrap_or(n))
            .collect(),
    }
}

/// Loads CSV (header first) or JSON Lines into a table, naming the bad record when one is refused.
fn load(
    call: &Call<'_>,
    at: At<'_>,
    table: &str,
    columns: Option<&Columns>,
    truncate_first: bool,
    format: Format,
    rx: &mut Rx<'_>,
) -> Result<(u64, String), ActionError> {
    let stream_err =
        |e: std::io::Error| ActionError::new(ErrorKind::Failed, format!("reading the stream: {e}"));
    let with_record = |e: ActionError, bad: Option<super::records::Bad>| match bad {
        Some(b) => ActionError::new(
            ErrorKind::InvalidArgs,
            format!("{}; nothing was loaded", b.message),
        )
        .with_result(json!({"record": b.record, "committed": false})),
        None => e,
    };
    match format {
        Format::Csv => {
            let (header, rest) = read_header(rx).map_err(stream_err)?.unwrap_or_default();
            let cols = mapped(header, columns);
            let mut body = CsvToText::new(Cursor::new(rest).chain(&mut *rx));
            let l = Load {
                table,
                columns: &cols,
                truncate_first,
            };
            copy_in(call, at, &l, &mut body).map_err(|e| with_record(e, body.bad.take()))
        }
        Format::Jsonl => {
            let reader = BufReader::with_capacity(CHUNK, &mut *rx);
            let (keys, cols) = match columns {
                Some(Columns::List(l)) => (l.clone(), l.clone()),
                Some(Columns::Map(m)) => {
                    (m.keys().cloned().collect(), m.values().cloned().collect())
                }
                None => (Vec::new(), Vec::new()),
            };
            let mut conv = JsonlToText::new(reader, keys);
            let cols = if columns.is_none() {
                conv.keys_from_first()
                    .map_err(|e| with_record(stream_err(e), conv.bad.take()))?
            } else {
                cols
            };
            let l = Load {
                table,
                columns: &cols,
                truncate_first,
            };
            copy_in(call, at, &l, &mut conv).map_err(|e| with_record(e, conv.bad.take()))
        }
        Format::Raw => Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "a table takes `csv` or `jsonl` records, not `raw` bytes",
        )),
    }
}
