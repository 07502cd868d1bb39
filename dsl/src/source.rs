//! Source text and byte spans.

use std::fmt;
use std::sync::Arc;

/// A half-open byte range `[start, end)` into one [`SourceFile`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start,
            end: end.max(start),
        }
    }

    /// The smallest span that covers both.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn len(self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// A one-based line and column (columns count characters, as editors do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for LineCol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The text of one runbook file, with its name (a path, or `<builtin>/x.yaml`, or `<inline>`).
///
/// Cheap to clone: the text is shared.
#[derive(Clone, Debug)]
pub struct SourceFile {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            inner: Arc::new(Inner {
                name: name.into(),
                text,
                line_starts,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn text(&self) -> &str {
        &self.inner.text
    }

    /// The one-based line and column of a byte offset (clamped to the text).
    pub fn line_col(&self, offset: usize) -> LineCol {
        let text = &self.inner.text;
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let line = match self.inner.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.inner.line_starts[line];
        LineCol {
            line: line + 1,
            col: text[start..offset].chars().count() + 1,
        }
    }

    /// The byte offset of a zero-based line and character column, clamped to the text.
    pub fn offset_of(&self, line0: usize, col0: usize) -> usize {
        let text = &self.inner.text;
        let Some(&start) = self.inner.line_starts.get(line0) else {
            return text.len();
        };
        let rest = &text[start..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        rest[..line_end]
            .char_indices()
            .nth(col0)
            .map_or(start + line_end, |(i, _)| start + i)
    }

    /// The whole lines that hold `[start, end)`: their byte range and the one-based number of the
    /// first. What a snippet shows of a large file, so showing one costs its lines, not the file.
    pub fn lines_around(&self, start: usize, end: usize) -> (std::ops::Range<usize>, usize) {
        let text = &self.inner.text;
        let starts = &self.inner.line_starts;
        let end = end.min(text.len());
        let start = start.min(end);
        let first = match starts.binary_search(&start) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let from = starts[first];
        let to = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
        (from..to, first + 1)
    }

    /// Whether two handles point at the same file.
    pub fn same(&self, other: &SourceFile) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_by_chars() {
        let f = SourceFile::new("x", "ab\nçd\n");
        assert_eq!(f.line_col(0), LineCol { line: 1, col: 1 });
        assert_eq!(f.line_col(3), LineCol { line: 2, col: 1 });
        assert_eq!(f.line_col(5), LineCol { line: 2, col: 2 });
        assert_eq!(f.offset_of(1, 1), 5);
        assert_eq!(f.offset_of(9, 0), f.text().len());
    }

    #[test]
    fn lines_around_are_whole_lines() {
        let f = SourceFile::new("x", "ab\ncd\nef");
        assert_eq!(f.lines_around(4, 5), (3..6, 2));
        assert_eq!(f.lines_around(1, 4), (0..6, 1));
        assert_eq!(f.lines_around(7, 8), (6..8, 3));
        assert_eq!(f.lines_around(99, 99), (6..8, 3));
    }
}
