//! `pipeline`: data streamed from a source (a PostgreSQL query or table, an HTTP GET or a paginated
//! list API, a remote file over SFTP, an artifact, a host file) to a sink (a table, a remote file, an
//! artifact, a host file, an HTTP endpoint) in bounded memory, all or nothing where the sink allows.
//!
//! The source runs on a thread of its own and writes into a bounded pipe (`chan`: at most a few
//! chunks of 256 KiB wait); the sink reads from it on the calling thread, so the sink's speed paces
//! the source. `chan` counts records, hashes every byte and applies `max_bytes` and `max_records`;
//! the stream only ends well when the source finished, so a sink commits nothing a failed source cut
//! short. The sink's end tells the step's progress (records and bytes read) at the first chunk and
//! then at most once a second. A table is loaded with one `COPY … FROM STDIN` in one transaction
//! (`records` maps CSV headers or JSON Lines keys to columns); a remote or host file is written to a
//! temporary sibling renamed over it; an artifact is removed on failure; an HTTP sink is one streamed
//! request, or `batch` requests sent after the whole stream was spooled (`ends.rs`). `json` arrays
//! travel as JSON Lines inside the pipe (`json.rs`); `transform` reshapes each JSON record on its way
//! from the source (`transform.rs`). The effect is the sink's: a table, file or HTTP
//! endpoint is `write`, `truncate_first` is `destructive`, an artifact is `read`.

mod chan;
mod ends;
mod json;
mod records;
mod transform;

pub(crate) use records::text_row;

use std::time::Instant;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ActionError, ActionSpec, Call, ToolSpec, args_schema};
use crate::error::ErrorKind;
use dsl::Effect;

/// Where the data comes from, by `type`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// A table, or one read-only query, streamed with `COPY … TO STDOUT` (csv or jsonl).
    Psql {
        /// A target with a `postgres` section.
        target: Option<String>,
        /// A connection URL (prefer a target).
        connection: Option<String>,
        /// `table` or `schema.table`.
        table: Option<String>,
        /// One read-only statement.
        query: Option<String>,
    },
    /// The body of a GET: `url`, or a target's `base_url` + `path`; with `paginate`, every page's
    /// items as JSON Lines.
    Http {
        url: Option<String>,
        target: Option<String>,
        path: Option<String>,
        headers: Option<IndexMap<String, String>>,
        paginate: Option<Box<super::http::Paginate>>,
    },
    /// A file on an ssh target.
    Sftp { target: String, path: String },
    /// An `artifact://` URI.
    Artifact { uri: String },
    /// A path on the infra host (needs INFRA_UNSAFE_LOCAL=1).
    File { path: String },
}

/// Which columns the records fill: a list (CSV fields in order, or JSON keys that are column names),
/// or a map from CSV header or JSON key to column.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Columns {
    List(Vec<String>),
    Map(IndexMap<String, String>),
}

/// Where the data goes, by `type`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Sink {
    /// A table, loaded with `COPY … FROM STDIN` in one transaction: every row or none.
    Psql {
        target: Option<String>,
        connection: Option<String>,
        /// `table` or `schema.table`.
        table: String,
        /// Default: the CSV header's names, or the first JSON line's keys.
        columns: Option<Columns>,
        /// Empty the table first, in the same transaction (destructive).
        truncate_first: Option<bool>,
    },
    /// A file on an ssh target, written beside it and renamed over it.
    Sftp {
        target: String,
        path: String,
        /// Permission bits of a new file (default 0644).
        mode: Option<u32>,
    },
    /// An artifact of this step (`name`, default `pipeline.<format>`).
    Artifact { name: Option<String> },
    /// A path on the infra host (needs INFRA_UNSAFE_LOCAL=1), written beside it and renamed.
    File { path: String },
    /// A POST (or PUT) of the stream as one request; with `batch`, of JSON arrays of that many records,
    /// one request each, sent only once the whole stream was read.
    Http {
        url: Option<String>,
        target: Option<String>,
        path: Option<String>,
        headers: Option<IndexMap<String, String>>,
        /// `POST` (default) or `PUT`.
        #[schemars(regex(pattern = "^(?i)(POST|PUT)$"))]
        method: Option<String>,
        /// Records per request, as a JSON array (jsonl or json records).
        #[schemars(range(min = 1, max = 100000))]
        batch: Option<u64>,
    },
}

/// One pipeline.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    pub from: Source,
    pub to: Sink,
    /// `csv` (with a header; default), `jsonl` (one JSON object per line), `json` (one array,
    /// streamed) or `raw` (bytes).
    #[schemars(regex(pattern = "^(csv|jsonl|json|raw)$"))]
    pub format: Option<String>,
    /// Stop with nothing written past this many bytes read.
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
    /// Stop with nothing written past this many records read.
    #[schemars(range(min = 1))]
    pub max_records: Option<u64>,
    /// Reshape each JSON record: `select`, `drop`, `rename`, `set` (jsonl or json).
    pub transform: Option<transform::Transform>,
}

/// How the stream's records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    /// A JSON array at the ends; JSON Lines inside the pipe (`json.rs`).
    Json,
    Raw,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Json => "json",
            Format::Raw => "raw",
        }
    }

    /// Whether the stream is JSON records, one per line inside the pipe.
    fn lines(self) -> bool {
        matches!(self, Format::Jsonl | Format::Json)
    }
}

const DESCRIPTION: &str = "Streams `from` a source (psql, http with optional paginate, sftp, artifact, file) `to` a sink (psql, sftp, artifact, file, http) in bounded memory, all or nothing; counts and SHA-256 in the result. Formats csv (header), jsonl, json (array), raw. A table load is one COPY in one transaction; a file is written beside and renamed; http posts the stream, or `batch` records per request once all was read.";

/// The sink's effect: a table or a file is written, `truncate_first` (or a templated one) destroys,
/// an artifact only reads. `None` (the worst) when `to` is not literal.
fn classify(args: &Map<String, Value>) -> Option<Effect> {
    let to = args.get("to")?.as_object()?;
    match to.get("type")?.as_str()? {
        "psql" => Some(match to.get("truncate_first") {
            None | Some(Value::Bool(false)) => Effect::Write,
            _ => Effect::Destructive,
        }),
        "sftp" | "file" | "http" => Some(Effect::Write),
        "artifact" => Some(Effect::Read),
        _ => None,
    }
}

/// Connection URLs (and their passwords) of either end, and credential headers of an HTTP source.
fn secrets(args: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for end in ["from", "to"] {
        if let Some(e) = args.get(end).and_then(Value::as_object) {
            out.extend(super::http::header_secrets(e));
        }
    }
    for end in ["from", "to"] {
        let Some(c) = args
            .get(end)
            .and_then(|e| e.get("connection"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        out.push(c.to_owned());
        if let Ok(cfg) = c.parse::<postgres::Config>()
            && let Some(pw) = cfg.get_password()
        {
            out.push(String::from_utf8_lossy(pw).into_owned());
        }
    }
    out
}

pub(super) fn tool() -> ToolSpec {
    ToolSpec {
        name: "pipeline",
        title: "Pipelines",
        description: "Streams data between PostgreSQL, HTTP, SFTP, artifacts and files in bounded memory, all or nothing.",
        aliases: &["mcp_pipeline"],
        open_world: true,
        actions: vec![ActionSpec {
            tool: "pipeline",
            name: "run",
            title: "Run a pipeline",
            description: DESCRIPTION,
            effect: Effect::Destructive,
            unsafe_local: false,
            schema_fn: || args_schema::<RunArgs>("pipeline", "run", DESCRIPTION),
            modes: super::no_modes,
            classify: Some(classify),
            secret_args: Some(secrets),
            example: || {
                json!({"action": "run", "from": {"type": "psql", "target": "db", "query": "select * from events"},
                       "to": {"type": "sftp", "target": "web1", "path": "/srv/exports/events.csv"}, "format": "csv"})
            },
        }],
    }
}

fn refuse_host_path(call: &Call<'_>, end: &str) -> Result<(), ActionError> {
    if call.host.config().unsafe_local {
        return Ok(());
    }
    Err(ActionError::new(
        ErrorKind::Refused,
        format!("a `file` {end} is a path on the infra host, which needs INFRA_UNSAFE_LOCAL=1"),
    )
    .hint("use an artifact instead, or start infra with INFRA_UNSAFE_LOCAL=1"))
}

fn kind_of_source(s: &Source) -> &'static str {
    match s {
        Source::Psql { .. } => "psql",
        Source::Http { .. } => "http",
        Source::Sftp { .. } => "sftp",
        Source::Artifact { .. } => "artifact",
        Source::File { .. } => "file",
    }
}

fn kind_of_sink(s: &Sink) -> &'static str {
    match s {
        Sink::Psql { .. } => "psql",
        Sink::Sftp { .. } => "sftp",
        Sink::Artifact { .. } => "artifact",
        Sink::File { .. } => "file",
        Sink::Http { .. } => "http",
    }
}

fn run(call: &Call<'_>) -> Result<Value, ActionError> {
    let args: RunArgs = call.parse()?;
    let format = match args.format.as_deref().unwrap_or("csv") {
        "jsonl" => Format::Jsonl,
        "json" => Format::Json,
        "raw" => Format::Raw,
        _ => Format::Csv,
    };
    let paginated = matches!(
        args.from,
        Source::Http {
            paginate: Some(_),
            ..
        }
    );
    if paginated && !format.lines() {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "a paginated http source gives JSON records: use `format: jsonl` or `json`",
        ));
    }
    if args.transform.is_some() && !format.lines() {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "`transform` reshapes JSON records: use `format: jsonl` or `json`",
        ));
    }
    if matches!(args.to, Sink::Http { batch: Some(_), .. }) && !format.lines() {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "an http sink's `batch` sends JSON arrays of records: use `format: jsonl` or `json`",
        ));
    }
    if matches!(args.from, Source::File { .. }) {
        refuse_host_path(call, "source")?;
    }
    if matches!(args.to, Sink::File { .. }) {
        refuse_host_path(call, "sink")?;
    }
    if format == Format::Raw
        && (matches!(args.from, Source::Psql { .. }) || matches!(args.to, Sink::Psql { .. }))
    {
        return Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "a `psql` end reads or writes records: use `format: csv` or `jsonl`, not `raw`",
        ));
    }
    let started = Instant::now();
    let counter = match format {
        Format::Csv => chan::Counter::Csv,
        Format::Jsonl | Format::Json => chan::Counter::Lines,
        Format::Raw => chan::Counter::Raw,
    };
    let limits = chan::Limits {
        max_bytes: args.max_bytes,
        max_records: args.max_records,
    };
    let (tx, mut rx) = chan::pipe(counter, limits, call.cancel, call.deadline);
    rx.report_to(call.progress);
    let (from, reshape) = (&args.from, args.transform.as_ref());
    let (sunk, source, stats) = std::thread::scope(|s| {
        let src = s.spawn(move || {
            let mut tx = tx;
            let read = match reshape {
                None => ends::read(call, from, format, &mut tx),
                Some(t) => {
                    let mut w = transform::Reshape::new(&mut tx, t);
                    ends::read(call, from, format, &mut w).and_then(|v| {
                        w.finish()
                            .map(|_| v)
                            .map_err(|e| ActionError::new(ErrorKind::InvalidArgs, e.to_string()))
                    })
                }
            };
            match read {
                Ok(v) => tx.finish().map(|()| v).map_err(|e| {
                    ActionError::new(ErrorKind::Failed, format!("passing the end on: {e}"))
                }),
                Err(e) => {
                    tx.fail(e.message.clone());
                    Err(e)
                }
            }
        });
        let sunk = ends::write(call, &args.to, format, &mut rx);
        let stats = rx.into_stats();
        let source = src.join().unwrap_or_else(|_| {
            Err(ActionError::new(
                ErrorKind::Failed,
                "the source's thread panicked",
            ))
        });
        (sunk, source, stats)
    });
    let read =
        json!({"records_read": stats.records(), "bytes_read": stats.bytes, "committed": false});
    let ((written, sink_info), source_info) = match (sunk, source) {
        (Ok(w), Ok(s)) => (w, s),
        (Err(e), source) => {
            let e = if let Some((kind, why)) = &stats.stopped {
                let e = ActionError::new(*kind, format!("{why}; nothing was written"));
                if *kind == ErrorKind::TooLarge {
                    e.hint("raise the limit, or narrow the source")
                } else {
                    e
                }
            } else if let (Some(_), Err(se)) = (&stats.source_failed, source) {
                let mut se = se;
                se.message = format!(
                    "the source failed: {}; nothing was written to the sink",
                    se.message
                );
                se
            } else {
                e
            };
            let mut result = e.result.clone().unwrap_or_else(|| json!({}));
            if let (Value::Object(r), Value::Object(more)) = (&mut result, read) {
                for (k, v) in more {
                    r.entry(k).or_insert(v);
                }
            }
            return Err(e.with_result(result));
        }
        (Ok(_), Err(e)) => return Err(e),
    };
    let mut out = json!({
        "from": kind_of_source(&args.from),
        "to": kind_of_sink(&args.to),
        "format": format.name(),
        "records_read": stats.records(),
        "records_written": written.or(stats.records()),
        "bytes": stats.bytes,
        "sha256": stats.sha256(),
        "committed": true,
        "duration_ms": started.elapsed().as_millis() as u64,
        "ok": true,
    });
    if let (Value::Object(o), Value::Object(more)) = (&mut out, sink_info) {
        o.extend(more);
    }
    // what the source says of itself (pages walked), where the sink did not say the same
    if let (Value::Object(o), Value::Object(more)) = (&mut out, source_info) {
        for (k, v) in more {
            if k == "pages" {
                o.entry(k).or_insert(v);
            }
        }
    }
    if out.get("artifacts").is_none() {
        out["artifacts"] = json!([]);
    }
    Ok(out)
}

pub(super) fn invoke(action: &str, call: &Call<'_>) -> Result<Value, ActionError> {
    match action {
        "run" => run(call),
        other => Err(ActionError::new(
            ErrorKind::NotAvailable,
            format!("pipeline has no action `{other}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effect_is_the_sinks() {
        let e = |v: Value| classify(v.as_object().expect("object"));
        assert_eq!(
            e(json!({"to": {"type": "psql", "table": "t"}})),
            Some(Effect::Write)
        );
        assert_eq!(
            e(json!({"to": {"type": "psql", "table": "t", "truncate_first": true}})),
            Some(Effect::Destructive)
        );
        assert_eq!(
            e(json!({"to": {"type": "psql", "table": "t", "truncate_first": null}})),
            Some(Effect::Destructive)
        );
        assert_eq!(e(json!({"to": {"type": "artifact"}})), Some(Effect::Read));
        assert_eq!(e(json!({"to": null})), None);
        super::super::examples_parse(tool(), |_, a| {
            super::super::parse_args::<RunArgs>(a).map(drop)
        });
    }
}
