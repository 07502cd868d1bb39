//! Where a value lands in a POSIX shell command. A value written into a shell field is quoted as one
//! word (`'…'`); that is only safe where the shell reads a new word. Inside the author's own quotes,
//! backquotes, `$'…'`, `$((…))` or a here-document, the quotes infra adds are taken literally or end
//! the author's quotes, and the value becomes code. [`places`] tells, for offsets into a command, which
//! of them fall in such a region; the template checks use it on the template text (at compile time)
//! and on the rendered command (at render time).

/// A quoting region a value must not be written into, or `None` where the shell reads a word.
pub type Place = Option<&'static str>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// Words: the top level, or inside `$( … )` (`depth` counts the `(` still open inside it).
    Words {
        depth: usize,
    },
    Double,
    Backquote,
    Arith {
        depth: usize,
    },
}

impl Frame {
    fn place(self) -> Place {
        match self {
            Frame::Words { .. } => None,
            Frame::Double => Some("inside double quotes"),
            Frame::Backquote => Some("inside backquotes"),
            Frame::Arith { .. } => Some("inside $((…))"),
        }
    }
}

/// The place of each offset in `text` (`offsets` ascending). An offset past the end, or in an
/// unterminated region, gets that region.
pub fn places(text: &str, offsets: &[usize]) -> Vec<Place> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(offsets.len());
    let mut next = offsets.iter().copied().peekable();
    let mut stack = vec![Frame::Words { depth: 0 }];
    // here-documents whose bodies start at the next newline: (delimiter, strip leading tabs)
    let mut pending_heredocs: Vec<(String, bool)> = Vec::new();
    let mut i = 0;
    // marks every offset below `upto` with `place`
    let mut mark = |upto: usize, place: Place, out: &mut Vec<Place>| {
        while let Some(&o) = next.peek() {
            if o >= upto {
                break;
            }
            out.push(place);
            next.next();
        }
    };
    while i < b.len() {
        let top = *stack.last().unwrap_or(&Frame::Words { depth: 0 });
        mark(i + 1, top.place(), &mut out);
        let c = b[i];
        match top {
            Frame::Words { depth } => match c {
                b'\\' => {
                    mark(i + 2, None, &mut out);
                    i += 2;
                    continue;
                }
                b'\'' => {
                    let end = find_byte(b, i + 1, b'\'');
                    mark(end + 1, Some("inside single quotes"), &mut out);
                    i = end + 1;
                    continue;
                }
                b'"' => stack.push(Frame::Double),
                b'`' => stack.push(Frame::Backquote),
                b'$' if b.get(i + 1) == Some(&b'\'') => {
                    let end = find_ansi_end(b, i + 2);
                    mark(end + 1, Some("inside $'…'"), &mut out);
                    i = end + 1;
                    continue;
                }
                b'$' if let Some((frame, len)) = substitution(&b[i..]) => {
                    stack.push(frame);
                    i += len;
                    continue;
                }
                b'(' if stack.len() > 1 => {
                    if let Some(Frame::Words { depth }) = stack.last_mut() {
                        *depth += 1;
                    }
                }
                b')' if stack.len() > 1 => {
                    if depth == 0 {
                        stack.pop();
                    } else if let Some(Frame::Words { depth }) = stack.last_mut() {
                        *depth -= 1;
                    }
                }
                b'#' if i == 0 || b[i - 1].is_ascii_whitespace() || b[i - 1] == b';' => {
                    // a comment: nothing in it runs
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b'<' if b[i + 1..].starts_with(b"<") && !b[i + 2..].starts_with(b"<") => {
                    let (delim, strip, after) = heredoc_delimiter(text, i + 2);
                    if !delim.is_empty() {
                        pending_heredocs.push((delim, strip));
                    }
                    i = after;
                    continue;
                }
                b'\n' if !pending_heredocs.is_empty() => {
                    let mut at = i + 1;
                    for (delim, strip) in std::mem::take(&mut pending_heredocs) {
                        let end = heredoc_end(text, at, &delim, strip);
                        mark(end, Some("inside a here-document"), &mut out);
                        at = end;
                    }
                    i = at;
                    continue;
                }
                _ => {}
            },
            Frame::Double => match c {
                b'\\' => {
                    mark(i + 2, top.place(), &mut out);
                    i += 2;
                    continue;
                }
                b'"' => {
                    stack.pop();
                }
                b'`' => stack.push(Frame::Backquote),
                b'$' if let Some((frame, len)) = substitution(&b[i..]) => {
                    stack.push(frame);
                    i += len;
                    continue;
                }
                _ => {}
            },
            Frame::Backquote => match c {
                b'\\' => {
                    mark(i + 2, top.place(), &mut out);
                    i += 2;
                    continue;
                }
                b'`' => {
                    stack.pop();
                }
                _ => {}
            },
            Frame::Arith { depth } => match c {
                b'(' => {
                    if let Some(Frame::Arith { depth }) = stack.last_mut() {
                        *depth += 1;
                    }
                }
                b')' if depth == 0 && b.get(i + 1) == Some(&b')') => {
                    stack.pop();
                    i += 2;
                    continue;
                }
                b')' => {
                    if let Some(Frame::Arith { depth }) = stack.last_mut() {
                        *depth = depth.saturating_sub(1);
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    let top = *stack.last().unwrap_or(&Frame::Words { depth: 0 });
    mark(usize::MAX, top.place(), &mut out);
    out
}

/// A `$((` or `$(` at the start of `b`: the frame it opens and its length.
fn substitution(b: &[u8]) -> Option<(Frame, usize)> {
    if b.starts_with(b"$((") {
        Some((Frame::Arith { depth: 0 }, 3))
    } else if b.starts_with(b"$(") {
        Some((Frame::Words { depth: 0 }, 2))
    } else {
        None
    }
}

fn find_byte(b: &[u8], from: usize, what: u8) -> usize {
    b[from.min(b.len())..]
        .iter()
        .position(|&c| c == what)
        .map_or(b.len(), |p| from + p)
}

/// The closing `'` of `$'…'`, where `\'` does not close.
fn find_ansi_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'\'' => return i,
            _ => i += 1,
        }
    }
    b.len()
}

/// After `<<`: the delimiter word (quotes removed), whether tabs are stripped (`<<-`), and where the
/// word ends.
fn heredoc_delimiter(text: &str, mut i: usize) -> (String, bool, usize) {
    let b = text.as_bytes();
    let strip = b.get(i) == Some(&b'-');
    if strip {
        i += 1;
    }
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    let mut word = String::new();
    while i < b.len() && !b[i].is_ascii_whitespace() && !b";|&<>()".contains(&b[i]) {
        match b[i] {
            q @ (b'\'' | b'"') => {
                let end = find_byte(b, i + 1, q);
                word.push_str(&text[i + 1..end.min(b.len())]);
                i = end + 1;
            }
            b'\\' => {
                if let Some(c) = text[i + 1..].chars().next() {
                    word.push(c);
                    i += 1 + c.len_utf8();
                } else {
                    i += 1;
                }
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or(' ');
                word.push(c);
                i += c.len_utf8();
            }
        }
    }
    (word, strip, i.min(b.len()))
}

/// Where a here-document's body that starts at `at` ends: past its delimiter line, or the end.
fn heredoc_end(text: &str, at: usize, delim: &str, strip: bool) -> usize {
    let mut pos = at;
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |p| pos + p);
        let line = &text[pos..line_end];
        let line = if strip {
            line.trim_start_matches('\t')
        } else {
            line
        };
        if line == delim {
            return line_end;
        }
        pos = line_end + 1;
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The place of the `@` in `text`.
    fn at(text: &str) -> Place {
        let o = text.find('@').expect("a marker");
        places(text, &[o])[0]
    }

    #[test]
    fn words_are_safe_and_quoted_regions_are_not() {
        for safe in [
            "echo @",
            "echo a @ b",
            "echo \"a\" @ 'b'",
            "echo $(printf %s @)",
            "echo \"$(printf %s @)\"",
            "echo \\' @",
            "echo ${x:-y} @",
            "cat <<EOF\nbody\nEOF\necho @",
            "echo '#' @",
            "echo $((1 + 2)) @",
            "echo `true` @",
            "a && b || echo @; c | d",
        ] {
            assert_eq!(at(safe), None, "{safe}");
        }
        for (unsafe_, why) in [
            ("echo 'hello @'", "single"),
            ("echo \"hello @\"", "double"),
            ("echo \"${x:-@}\"", "double"),
            ("echo `echo @`", "backquotes"),
            ("echo $'a @'", "$'"),
            ("echo $((1 + @))", "$(("),
            ("cat <<EOF\nhello @\nEOF", "here-document"),
            ("cat <<-'EOF'\n\thello @\n\tEOF", "here-document"),
            ("echo \"$(echo \"@\")\"", "double"),
            ("echo 'open @", "single"),
            ("echo \"a\\\"@\"", "double"),
        ] {
            let p = at(unsafe_);
            assert!(p.is_some_and(|p| p.contains(why)), "{unsafe_}: {p:?}");
        }
    }

    #[test]
    fn many_offsets_in_one_pass() {
        let text = "echo @ '@' \"@\" @";
        let offs: Vec<usize> = text.match_indices('@').map(|(i, _)| i).collect();
        let got = places(text, &offs);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], None);
        assert!(got[1].is_some());
        assert!(got[2].is_some());
        assert_eq!(got[3], None);
    }
}
