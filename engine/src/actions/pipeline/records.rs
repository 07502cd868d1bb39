//! Records on their way into a table: a CSV stream's header read off, and its body or JSON Lines
//! (for the columns asked for) turned into COPY's text format, one record per line, so the line the
//! server names in an error is the record's number (CSV may hold line breaks inside a field, which
//! the server counts as lines). Both hold one chunk and one record at most, whatever the stream's size.

use std::io::{self, BufRead, Read};

use serde_json::{Map, Value};

/// The longest header or JSON line taken.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Why a record cannot be loaded, and which.
#[derive(Debug, Clone)]
pub struct Bad {
    pub record: u64,
    pub message: String,
}

fn bad(b: &mut Option<Bad>, record: u64, message: String) -> io::Error {
    *b = Some(Bad {
        record,
        message: message.clone(),
    });
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The fields of one CSV record (no line end).
pub fn csv_fields(line: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        match (quoted, b) {
            (true, b'"') if line.get(i + 1) == Some(&b'"') => {
                cur.push(b'"');
                i += 1;
            }
            (true, b'"') => quoted = false,
            (false, b'"') => quoted = true,
            (false, b',') => out.push(String::from_utf8_lossy(&std::mem::take(&mut cur)).into()),
            _ => cur.push(b),
        }
        i += 1;
    }
    out.push(String::from_utf8_lossy(&cur).into_owned());
    out
}

/// Reads the header record of a CSV stream: its fields, and the bytes read past it.
pub fn read_header(r: &mut dyn Read) -> io::Result<Option<(Vec<String>, Vec<u8>)>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut quoted = false;
    let mut scanned = 0;
    loop {
        for (i, &b) in got.iter().enumerate().skip(scanned) {
            match b {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => {
                    let mut line = &got[..i];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
                    return Ok(Some((csv_fields(line), got[i + 1..].to_vec())));
                }
                _ => {}
            }
        }
        scanned = got.len();
        if got.len() > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the CSV header is longer than 16 MiB",
            ));
        }
        let n = r.read(&mut buf)?;
        if n == 0 {
            if got.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            let line = got.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&got);
            return Ok(Some((csv_fields(line.trim_ascii_end()), Vec::new())));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Appends `s` in COPY's text format: backslash, newline, carriage return and tab escaped, so one
/// record is one line and the server's line number is the record's number.
fn escape_text(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Csv {
    /// At the start of a field.
    Start,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: its end, or the first of a doubled quote.
    QuoteInQuoted,
}

/// A CSV body (after its header) turned into COPY's text format, one record per line: an unquoted
/// empty field is NULL (`\N`), as COPY's CSV reader takes it; a quoted one is the empty string.
pub struct CsvToText<R> {
    inner: R,
    state: Csv,
    /// An unquoted carriage return not yet known to end the line.
    cr: bool,
    /// Bytes of the current field so far.
    field_len: usize,
    quoted_field: bool,
    /// The current record has bytes.
    in_record: bool,
    buf: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
    pub records: u64,
    pub bad: Option<Bad>,
}

impl<R: Read> CsvToText<R> {
    pub fn new(inner: R) -> Self {
        CsvToText {
            inner,
            state: Csv::Start,
            cr: false,
            field_len: 0,
            quoted_field: false,
            in_record: false,
            buf: vec![0; 64 * 1024],
            out: Vec::new(),
            pos: 0,
            done: false,
            records: 0,
            bad: None,
        }
    }

    fn end_field(&mut self) {
        if self.field_len == 0 && !self.quoted_field {
            self.out.extend_from_slice(b"\\N");
        }
        self.field_len = 0;
        self.quoted_field = false;
    }

    fn flush_cr(&mut self) {
        if self.cr {
            self.cr = false;
            self.field_len += 1;
            self.out.extend_from_slice(b"\\r");
        }
    }

    fn byte(&mut self, b: u8) {
        self.in_record = true;
        match (self.state, b) {
            (Csv::Quoted, b'"') => self.state = Csv::QuoteInQuoted,
            (Csv::Quoted, _) => {
                self.field_len += 1;
                escape_text(&[b], &mut self.out);
            }
            (Csv::QuoteInQuoted, b'"') => {
                self.state = Csv::Quoted;
                self.field_len += 1;
                self.out.push(b'"');
            }
            (Csv::Start, b'"') => {
                self.state = Csv::Quoted;
                self.quoted_field = true;
            }
            (_, b',') => {
                self.flush_cr();
                self.end_field();
                self.out.push(b'\t');
                self.state = Csv::Start;
            }
            (_, b'\n') => {
                // a carriage return just before the line end belongs to the line end
                self.cr = false;
                self.end_field();
                self.out.push(b'\n');
                self.records += 1;
                self.in_record = false;
                self.state = Csv::Start;
            }
            (_, b'\r') => {
                self.flush_cr();
                self.cr = true;
                self.state = Csv::Unquoted;
            }
            (_, b) => {
                // bytes after a closing quote are kept, as COPY's CSV reader keeps them
                self.flush_cr();
                self.field_len += 1;
                escape_text(&[b], &mut self.out);
                self.state = Csv::Unquoted;
            }
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.state == Csv::Quoted {
            let r = self.records + 1;
            return Err(bad(
                &mut self.bad,
                r,
                format!("record {r} ends inside a quoted field"),
            ));
        }
        if self.in_record {
            self.byte(b'\n');
        }
        Ok(())
    }
}

impl<R: Read> Read for CsvToText<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            let mut chunk = std::mem::take(&mut self.buf);
            let n = match self.inner.read(&mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    self.buf = chunk;
                    return Err(e);
                }
            };
            if n == 0 {
                self.done = true;
                self.buf = chunk;
                self.finish()?;
                continue;
            }
            for &b in &chunk[..n] {
                self.byte(b);
            }
            self.buf = chunk;
        }
        let n = out.len().min(self.out.len() - self.pos);
        out[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// One JSON value as a field of COPY's text format: `null` (or missing) is `\N`, strings as they
/// are, objects and arrays as their JSON text.
fn field(v: Option<&Value>, out: &mut Vec<u8>) {
    match v {
        None | Some(Value::Null) => out.extend_from_slice(b"\\N"),
        Some(Value::String(s)) => escape_text(s.as_bytes(), out),
        Some(Value::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Value::Number(n)) => out.extend_from_slice(n.to_string().as_bytes()),
        Some(v) => escape_text(v.to_string().as_bytes(), out),
    }
}

/// One row of COPY's text format: the values of `keys` in `m`, in order.
pub fn text_row(m: &Map<String, Value>, keys: &[String], out: &mut Vec<u8>) {
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        field(m.get(k), out);
    }
    out.push(b'\n');
}

/// JSON Lines as rows of COPY's text format: for each record (a JSON object per line; blank lines are skipped), the
/// values of `keys` in order.
pub struct JsonlToText<R> {
    inner: R,
    keys: Vec<String>,
    line: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    pub records: u64,
    pub bad: Option<Bad>,
}

impl<R: BufRead> JsonlToText<R> {
    pub fn new(inner: R, keys: Vec<String>) -> Self {
        JsonlToText {
            inner,
            keys,
            line: Vec::new(),
            out: Vec::new(),
            pos: 0,
            records: 0,
            bad: None,
        }
    }

    /// The next non-blank line, or `None` at the end.
    fn next_line(&mut self) -> io::Result<Option<Map<String, Value>>> {
        loop {
            self.line.clear();
            let n = (&mut self.inner)
                .take(MAX_RECORD as u64 + 1)
                .read_until(b'\n', &mut self.line)?;
            if n == 0 {
                return Ok(None);
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.records += 1;
            let r = self.records;
            if self.line.len() > MAX_RECORD {
                return Err(bad(
                    &mut self.bad,
                    r,
                    format!("record {r} is longer than 16 MiB"),
                ));
            }
            return match serde_json::from_slice::<Value>(&self.line) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                Ok(_) => Err(bad(
                    &mut self.bad,
                    r,
                    format!("record {r} is not a JSON object"),
                )),
                Err(e) => Err(bad(
                    &mut self.bad,
                    r,
                    format!("record {r} is not JSON: {e}"),
                )),
            };
        }
    }

    /// The keys of the first record, which it keeps for reading (when no columns were given).
    pub fn keys_from_first(&mut self) -> io::Result<Vec<String>> {
        let Some(m) = self.next_line()? else {
            return Ok(Vec::new());
        };
        let keys: Vec<String> = m.keys().cloned().collect();
        self.keys = keys.clone();
        self.emit(&m);
        Ok(keys)
    }

    fn emit(&mut self, m: &Map<String, Value>) {
        text_row(m, &self.keys, &mut self.out);
    }
}

impl<R: BufRead> Read for JsonlToText<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.out.len() {
            self.out.clear();
            self.pos = 0;
            match self.next_line()? {
                Some(m) => self.emit(&m),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_fields_and_hostile_values() {
        let mut src: &[u8] = b"\xEF\xBB\xBFid,\"we\"\"ird, name\"\r\n1,x\n";
        let (h, rest) = read_header(&mut src).expect("read").expect("a header");
        assert_eq!(h, vec!["id", "we\"ird, name"]);
        assert_eq!(rest, b"1,x\n");
        let mut empty: &[u8] = b"";
        assert!(read_header(&mut empty).expect("read").is_none());

        let input = r#"{"a": "x\"y,\n\\.\t", "b": null, "c": [1], "d": 2.5}

{"a": ""}
"#;
        let mut j = JsonlToText::new(input.as_bytes(), Vec::new());
        assert_eq!(j.keys_from_first().expect("keys"), vec!["a", "b", "c", "d"]);
        let mut out = String::new();
        j.read_to_string(&mut out).expect("read");
        assert_eq!(out, "x\"y,\\n\\\\.\\t\t\\N\t[1]\t2.5\n\t\\N\t\\N\t\\N\n");
        assert_eq!(j.records, 2);

        let mut j = JsonlToText::new(&b"{}\n[1]\n"[..], vec!["a".into()]);
        let mut out = String::new();
        assert!(j.read_to_string(&mut out).is_err());
        assert_eq!(j.bad.expect("bad").record, 2);
    }

    #[test]
    fn csv_becomes_one_line_per_record() {
        let mut c = CsvToText::new(&b"1,\"a\nb\",,\"\"\r\n2,\\.,\"q\"\"\",x\ry\n3,\tz,,"[..]);
        let mut out = String::new();
        c.read_to_string(&mut out).expect("read");
        assert_eq!(
            out,
            "1\ta\\nb\t\\N\t\n2\t\\\\.\tq\"\tx\\ry\n3\t\\tz\t\\N\t\\N\n"
        );
        assert_eq!(c.records, 3);
        let mut c = CsvToText::new(&b"1,\"open\n"[..]);
        assert!(c.read_to_string(&mut out).is_err());
        assert_eq!(c.bad.expect("bad").record, 1);
    }
}
