//! A pipeline's ends: each source writes its bytes into the pipe, each sink reads them to the end and
//! only then commits (a transaction, a rename, a finished artifact); a sink that fails leaves its
//! destination as it was. An HTTP sink cannot take back what it sent: a streamed POST is aborted
//! mid-body when the stream fails (the server never sees it end), and `batch` requests go out only
//! after the whole stream was read into a spool file beside the step's artifacts (removed after), so
//! a failed source sends nothing; a batch the server refuses stops the rest and says how many were
//! accepted. `json` arrays are split into lines at the source and joined again at a byte sink.

use std::io::{BufReader, Cursor, Read, Write};

use serde_json::{Value, json};

use super::chan::{CHUNK, Rx};
use super::json::{ArrayToLines, LinesToArray};
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
                format.lines(),
                to,
            )?;
            Ok(json!({"database": label}))
        }
        Source::Http {
            url,
            target,
            path,
            headers,
            paginate: Some(p),
        } => {
            let at = http::Get {
                url: url.as_deref(),
                target: target.as_deref(),
                path: path.as_deref(),
                headers: headers.as_ref(),
            };
            let mut line = Vec::new();
            let walked = http::walk_pages(call, at, p, &mut |items| {
                for item in items {
                    line.clear();
                    serde_json::to_writer(&mut line, &item).map_err(|e| {
                        ActionError::new(ErrorKind::Failed, format!("an item: {e}"))
                    })?;
                    line.push(b'\n');
                    to.write_all(&line).map_err(|e| {
                        ActionError::new(ErrorKind::Failed, format!("passing items on: {e}"))
                    })?;
                }
                Ok(())
            })?;
            if !walked.complete {
                return Err(ActionError::new(
                    ErrorKind::TooLarge,
                    format!(
                        "more pages remain after `max_pages` ({} pages, {} items)",
                        walked.pages, walked.items
                    ),
                )
                .hint("raise `paginate.max_pages` (at most 10000)"));
            }
            Ok(json!({"pages": walked.pages}))
        }
        Source::Http {
            url,
            target,
            path,
            headers,
            paginate: None,
        } => {
            let get = http::Get {
                url: url.as_deref(),
                target: target.as_deref(),
                path: path.as_deref(),
                headers: headers.as_ref(),
            };
            let (mut body, url) = http::get_stream(call, get)?;
            pump_source(call, format, &mut body, to).map_err(|mut e| {
                e.message = format!("{url}: {}", e.message);
                e
            })?;
            Ok(json!({"url": url}))
        }
        Source::Sftp { target, path } => {
            if format == Format::Json {
                let mut split = ArrayToLines::new(to);
                ssh::stream::download(call, target, path, &mut split)?;
                split.finish().map_err(not_array)?;
            } else {
                ssh::stream::download(call, target, path, to)?;
            }
            Ok(json!({"source_target": target, "source_path": path}))
        }
        Source::Artifact { uri } => {
            let mut f = crate::record::artifacts::open(&call.host.config().artifacts_root, uri)
                .map_err(|e| ActionError::new(ErrorKind::NotFound, e.to_string()))?;
            pump_source(call, format, &mut f, to)?;
            Ok(json!({"source_uri": uri}))
        }
        Source::File { path } => {
            let mut f = std::fs::File::open(path).map_err(|e| {
                ActionError::new(ErrorKind::NotFound, format!("cannot read `{path}`: {e}"))
            })?;
            pump_source(call, format, &mut f, to)?;
            Ok(json!({"source_path": path}))
        }
    }
}

fn not_array(e: std::io::Error) -> ActionError {
    ActionError::new(ErrorKind::InvalidArgs, e.to_string())
}

/// A source's bytes into the pipe: a `json` array split into lines on the way.
fn pump_source(
    call: &Call<'_>,
    format: Format,
    from: &mut dyn Read,
    to: &mut dyn Write,
) -> Result<(), ActionError> {
    if format != Format::Json {
        return pump(call, from, to);
    }
    let mut split = ArrayToLines::new(to);
    pump(call, from, &mut split).map_err(|e| {
        if e.message.contains("not a JSON array") {
            ActionError::new(ErrorKind::InvalidArgs, e.message)
        } else {
            e
        }
    })?;
    split.finish().map_err(not_array)?;
    Ok(())
}

/// The pipe as a sink reads it: JSON Lines joined into one array for `json`.
fn sink_reader<'r>(format: Format, rx: &'r mut Rx<'_>) -> Box<dyn Read + 'r> {
    if format == Format::Json {
        Box::new(LinesToArray::new(rx))
    } else {
        Box::new(rx)
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
            ssh::stream::upload(call, target, &mut sink_reader(format, rx), path, mode)?;
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
                        Format::Raw => "bin",
                        f => f.name(),
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
            let done = pump(call, &mut sink_reader(format, rx), &mut w)
                .and_then(|()| w.finish().map_err(io));
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
                pump(call, &mut sink_reader(format, rx), &mut f)?;
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
        Sink::Http {
            url,
            target,
            path,
            headers,
            method,
            batch,
        } => {
            let method = method.as_deref().unwrap_or("POST").to_ascii_uppercase();
            let at = http::Put {
                url: url.as_deref(),
                target: target.as_deref(),
                path: path.as_deref(),
                headers: headers.as_ref(),
                method: &method,
            };
            match batch {
                None => {
                    let ctype = match format {
                        Format::Csv => "text/csv",
                        Format::Jsonl => "application/x-ndjson",
                        Format::Json => "application/json",
                        Format::Raw => "application/octet-stream",
                    };
                    let (status, url) =
                        http::send_stream(call, at, ctype, &mut sink_reader(format, rx))?;
                    Ok((
                        None,
                        json!({"url": url, "method": method, "status": status}),
                    ))
                }
                Some(n) => {
                    let (batches, records, url) = batches(call, at, *n, rx)?;
                    Ok((
                        Some(records),
                        json!({"url": url, "method": method, "batches": batches}),
                    ))
                }
            }
        }
    }
}

/// The most bytes one batch request carries: a batch is sent early when the next record would pass it.
const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Spools the whole stream (records are lines), then sends it as JSON arrays of `n` records.
fn batches(
    call: &Call<'_>,
    at: http::Put<'_>,
    n: u64,
    rx: &mut Rx<'_>,
) -> Result<(u64, u64, String), ActionError> {
    use std::io::{BufRead, Seek};
    let io = |e: std::io::Error| ActionError::new(ErrorKind::Failed, format!("the spool: {e}"));
    std::fs::create_dir_all(&call.dir).map_err(io)?;
    let spool_path = call
        .dir
        .join(format!(".spool-{}", &crate::ctx::new_id()[..12]));
    let mut spool = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&spool_path)
        .map_err(io)?;
    let sent = (|| {
        pump(call, rx, &mut spool)?;
        spool.rewind().map_err(io)?;
        let mut lines = BufReader::with_capacity(CHUNK, &spool).lines();
        let mut carried: Option<String> = None;
        let mut records = 0u64;
        let mut next = || -> Result<Option<(Vec<u8>, u64)>, ActionError> {
            let mut body = b"[".to_vec();
            let mut k = 0u64;
            while k < n {
                let line = match carried.take() {
                    Some(l) => l,
                    None => match lines.next() {
                        Some(l) => l.map_err(io)?,
                        None => break,
                    },
                };
                if line.trim().is_empty() {
                    continue;
                }
                if k > 0 && body.len() + line.len() + 2 > BATCH_BYTES {
                    carried = Some(line);
                    break;
                }
                if k > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(line.as_bytes());
                k += 1;
            }
            if k == 0 {
                return Ok(None);
            }
            body.push(b']');
            records += k;
            Ok(Some((body, k)))
        };
        let (batches, url) = http::send_batches(call, at, &mut next)?;
        Ok((batches, records, url))
    })();
    let _ = std::fs::remove_file(&spool_path);
    sent
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
        Format::Jsonl | Format::Json => {
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
