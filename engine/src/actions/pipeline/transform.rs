//! A pipeline's `transform`: each JSON record reshaped on its way from the source, one line at a
//! time. In order: `select` keeps only the keys named (in that order), `drop` removes keys, `rename`
//! renames keys, `set` adds or replaces keys with constant values. It takes JSON records (`jsonl` or
//! `json`); a line that is not a JSON object fails the pipeline, naming its record, with nothing
//! written.

use std::io::{self, Write};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::records::MAX_RECORD;

/// How each record is reshaped.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// Keep only these keys, in this order (a missing one is `null`).
    pub select: Option<Vec<String>>,
    /// Remove these keys.
    pub drop: Option<Vec<String>>,
    /// Rename keys: old → new.
    pub rename: Option<IndexMap<String, String>>,
    /// Add or replace keys with these values.
    pub set: Option<Map<String, Value>>,
}

impl Transform {
    /// One record reshaped.
    pub fn apply(&self, mut rec: Map<String, Value>) -> Map<String, Value> {
        if let Some(keys) = &self.select {
            let mut kept = Map::new();
            for k in keys {
                kept.insert(k.clone(), rec.remove(k).unwrap_or(Value::Null));
            }
            rec = kept;
        }
        if let Some(keys) = &self.drop {
            for k in keys {
                rec.remove(k);
            }
        }
        if let Some(names) = &self.rename {
            rec = rec
                .into_iter()
                .map(|(k, v)| (names.get(&k).cloned().unwrap_or(k), v))
                .collect();
        }
        if let Some(set) = &self.set {
            for (k, v) in set {
                rec.insert(k.clone(), v.clone());
            }
        }
        rec
    }
}

/// A writer of JSON Lines that writes each record reshaped to `out`.
pub struct Reshape<'t, W: Write> {
    out: W,
    t: &'t Transform,
    line: Vec<u8>,
    record: u64,
}

impl<'t, W: Write> Reshape<'t, W> {
    pub fn new(out: W, t: &'t Transform) -> Self {
        Reshape {
            out,
            t,
            line: Vec::new(),
            record: 0,
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.line.iter().all(u8::is_ascii_whitespace) {
            self.line.clear();
            return Ok(());
        }
        self.record += 1;
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("transform: record {}: {why}", self.record),
            )
        };
        let rec = match serde_json::from_slice::<Value>(&self.line) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(bad("not a JSON object".into())),
            Err(e) => return Err(bad(format!("not JSON: {e}"))),
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &Value::Object(self.t.apply(rec)))
            .map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.line.clear();
        Ok(())
    }

    /// Ends the stream: a last record without a line end is written too.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.line.is_empty() {
            self.emit()?;
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for Reshape<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&rest[..i]);
            self.emit()?;
            rest = &rest[i + 1..];
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "transform: record {} is over {MAX_RECORD} bytes",
                    self.record + 1
                ),
            ));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reshape(t: &Transform, input: &[u8], step: usize) -> io::Result<String> {
        let mut w = Reshape::new(Vec::new(), t);
        for c in input.chunks(step) {
            w.write_all(c)?;
        }
        Ok(String::from_utf8(w.finish()?).expect("utf-8"))
    }

    #[test]
    fn records_are_reshaped_in_order_select_drop_rename_set() {
        let t: Transform = serde_json::from_value(json!({
            "select": ["id", "name", "gone"], "drop": ["gone"],
            "rename": {"name": "title"}, "set": {"source": "api", "id": 0},
        }))
        .expect("transform");
        let input = b"{\"id\":1,\"name\":\"a\\nb\",\"x\":true}\n\n{\"name\":\"c\"}";
        for step in [1, 4, 100] {
            assert_eq!(
                reshape(&t, input, step).expect("ok"),
                "{\"id\":0,\"title\":\"a\\nb\",\"source\":\"api\"}\n{\"id\":0,\"title\":\"c\",\"source\":\"api\"}\n"
            );
        }
    }

    #[test]
    fn a_line_that_is_not_an_object_is_named() {
        let t = Transform::default();
        let e = reshape(&t, b"{\"a\":1}\n[1]\n", 3).expect_err("refused");
        assert!(e.to_string().contains("record 2: not a JSON object"), "{e}");
        let e = reshape(&t, b"{\"a\":1}\n{\"a\":\n", 3).expect_err("refused");
        assert!(e.to_string().contains("record 2: not JSON"), "{e}");
    }
}
