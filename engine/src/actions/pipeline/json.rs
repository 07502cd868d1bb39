//! The `json` format: a JSON array streamed, never loaded whole. Inside a pipeline the records travel
//! as JSON Lines: [`ArrayToLines`] turns a source's array into one compact element per line as the
//! bytes arrive (whitespace outside strings dropped, so a pretty-printed array works), and
//! [`LinesToArray`] turns the lines back into an array for a sink that writes bytes. Each holds one
//! byte of state per nesting level, whatever the size of the array or its elements.

use std::io::{self, Read, Write};

/// Where the splitter is in the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the opening `[`.
    Start,
    /// Just after the opening `[`.
    Open,
    /// After a `,`, before the next element.
    Between,
    /// Inside an element.
    Element,
    /// After an element, before `,` or `]`.
    After,
    /// After the closing `]`.
    Done,
}

/// A writer that takes the bytes of one JSON array and writes its elements to `out`, one per line.
pub struct ArrayToLines<W: Write> {
    out: W,
    at: At,
    /// Open brackets and braces inside the current element.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Whether the current element is a bare scalar (a number, `true`, …), which ends at a delimiter.
    scalar: bool,
    /// Bytes taken so far, for the position in an error.
    offset: u64,
    line: Vec<u8>,
}

fn invalid(offset: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a JSON array at byte {offset}: {what}"),
    )
}

impl<W: Write> ArrayToLines<W> {
    pub fn new(out: W) -> Self {
        ArrayToLines {
            out,
            at: At::Start,
            depth: 0,
            in_string: false,
            escaped: false,
            scalar: false,
            offset: 0,
            line: Vec::with_capacity(4096),
        }
    }

    /// Ends the array: an error unless it was whole. Answers the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.at == At::Element && self.scalar {
            self.end_element()?;
            self.at = At::After;
        }
        if self.at != At::Done {
            return Err(invalid(
                self.offset,
                "the array ended early (no closing `]`)",
            ));
        }
        Ok(self.out)
    }

    fn end_element(&mut self) -> io::Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.line.clear();
        Ok(())
    }

    fn take(&mut self, b: u8) -> io::Result<()> {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.at {
            At::Start => match b {
                _ if ws => {}
                b'[' => self.at = At::Open,
                _ => return Err(invalid(self.offset, "it does not start with `[`")),
            },
            At::Done => {
                if !ws {
                    return Err(invalid(self.offset, "something follows the closing `]`"));
                }
            }
            At::After => match b {
                _ if ws => {}
                b',' => self.at = At::Between,
                b']' => self.at = At::Done,
                _ => return Err(invalid(self.offset, "expected `,` or `]` after an element")),
            },
            At::Open | At::Between => match b {
                _ if ws => {}
                b']' if self.at == At::Open => self.at = At::Done,
                b',' | b']' => return Err(invalid(self.offset, "an empty element")),
                _ => {
                    self.at = At::Element;
                    self.scalar = !matches!(b, b'{' | b'[' | b'"');
                    self.in_string = b == b'"';
                    self.depth = usize::from(matches!(b, b'{' | b'['));
                    self.line.push(b);
                }
            },
            At::Element => {
                if self.in_string {
                    self.line.push(b);
                    if self.escaped {
                        self.escaped = false;
                    } else if b == b'\\' {
                        self.escaped = true;
                    } else if b == b'"' {
                        self.in_string = false;
                        if self.depth == 0 {
                            self.end_element()?;
                            self.at = At::After;
                        }
                    }
                    return Ok(());
                }
                if self.scalar {
                    if ws || b == b',' || b == b']' {
                        self.end_element()?;
                        self.at = At::After;
                        return self.take(b);
                    }
                    self.line.push(b);
                    return Ok(());
                }
                if ws {
                    return Ok(());
                }
                self.line.push(b);
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            self.end_element()?;
                            self.at = At::After;
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl<W: Write> Write for ArrayToLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            self.take(b)?;
            self.offset += 1;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A reader of JSON Lines that reads as one JSON array: `[`, the lines joined by `,`, `]`. Empty lines
/// are skipped.
pub struct LinesToArray<R: Read> {
    inner: R,
    started: bool,
    ended: bool,
    /// A line ended: a `,` goes before the next byte that is not a line end.
    pending: bool,
    /// Whether the current line has a byte yet.
    in_line: bool,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> LinesToArray<R> {
    pub fn new(inner: R) -> Self {
        LinesToArray {
            inner,
            started: false,
            ended: false,
            pending: false,
            in_line: false,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl<R: Read> Read for LinesToArray<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.buf.len() {
                let n = (self.buf.len() - self.pos).min(out.len());
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            if !self.started {
                self.started = true;
                self.buf.push(b'[');
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = loop {
                match self.inner.read(&mut chunk) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r?,
                }
            };
            if n == 0 {
                self.ended = true;
                self.buf.push(b']');
                continue;
            }
            for &b in &chunk[..n] {
                match b {
                    b'\n' | b'\r' => {
                        if self.in_line {
                            self.pending = true;
                            self.in_line = false;
                        }
                    }
                    _ => {
                        if self.pending {
                            self.buf.push(b',');
                            self.pending = false;
                        }
                        self.in_line = true;
                        self.buf.push(b);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], step: usize) -> io::Result<String> {
        let mut w = ArrayToLines::new(Vec::new());
        for c in input.chunks(step.max(1)) {
            w.write_all(c)?;
        }
        Ok(String::from_utf8(w.finish()?).expect("utf-8"))
    }

    #[test]
    fn an_array_becomes_one_compact_element_per_line_however_it_is_cut() {
        let input = br#" [ {"a": 1, "b": [1, 2, {"c": "x, ]\" }"}]},
            "s\\", 12.5e3 ,true,null,[ ],{}
            , "\u00e9 ]" ] "#;
        let want = "{\"a\":1,\"b\":[1,2,{\"c\":\"x, ]\\\" }\"}]}\n\"s\\\\\"\n12.5e3\ntrue\nnull\n[]\n{}\n\"\\u00e9 ]\"\n";
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(split(input, step).expect("split"), want, "step {step}");
        }
        assert_eq!(split(b"[]", 1).expect("empty"), "");
        assert_eq!(split(b"[1]", 1).expect("one"), "1\n");
    }

    #[test]
    fn what_is_not_one_whole_array_is_refused_with_its_place() {
        for (bad, part) in [
            (&b"{\"a\": 1}"[..], "does not start"),
            (b"[1, 2", "ended early"),
            (b"[{\"a\": 1}", "ended early"),
            (b"[1,,2]", "empty element"),
            (b"[1 2]", "expected `,`"),
            (b"[1] x", "follows"),
            (b"[,1]", "empty element"),
            (b"[1,]", "empty element"),
        ] {
            let e = split(bad, 1).expect_err("refused");
            assert!(e.to_string().contains(part), "{e} for {bad:?}");
            assert!(e.to_string().contains("at byte"), "{e}");
        }
    }

    #[test]
    fn lines_read_back_as_the_same_array() {
        let lines = b"{\"a\":1}\n\n{\"b\":\"x\\ny\"}\r\n3\n";
        let mut s = String::new();
        LinesToArray::new(&lines[..])
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "[{\"a\":1},{\"b\":\"x\\ny\"},3]");
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(3));
        let mut e = String::new();
        LinesToArray::new(&b""[..])
            .read_to_string(&mut e)
            .expect("read");
        assert_eq!(e, "[]");
        // round trip
        let back = split(s.as_bytes(), 5).expect("split");
        assert_eq!(back, "{\"a\":1}\n{\"b\":\"x\\ny\"}\n3\n");
    }
}
