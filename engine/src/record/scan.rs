//! A multi-pattern search for the redactor: every occurrence of any of a set of byte strings, leftmost
//! first and the longest at each place, found by skipping (Wu-Manber).
//!
//! The text is read through a window as long as the shortest pattern (`m`). The last two bytes of the
//! window index `shift`: how far the window may move before a pattern could end where those bytes are.
//! Only where that is 0 is anything compared: the patterns whose first `m` bytes end in those two bytes
//! (`ends`, longest first) are checked in full at the window's start. With secrets of a few dozen bytes
//! and their encodings, most windows move by most of their length, so text is skipped, not read
//! byte by byte (an automaton steps once per byte, and is several times slower here).

use std::ops::Range;

/// The patterns and their tables. At least one pattern, none shorter than 2 bytes.
#[derive(Debug)]
pub(crate) struct Scanner {
    patterns: Vec<Vec<u8>>,
    /// The shortest pattern's length: the window.
    m: usize,
    /// The longest pattern's length.
    longest: usize,
    /// Per two-byte block (`b0 | b1 << 8`): how far the window may move when it ends with it.
    shift: Vec<u16>,
    /// Per two-byte block with shift 0: the patterns whose window ends with it, longest first.
    ends: Vec<Vec<u32>>,
    /// Which blocks have an `ends` list (its index), `u32::MAX` for none.
    ends_at: Vec<u32>,
}

fn block(a: u8, b: u8) -> usize {
    usize::from(a) | (usize::from(b) << 8)
}

impl Scanner {
    /// `None` without a pattern, or with one shorter than 2 bytes.
    pub(crate) fn new(patterns: &[String]) -> Option<Scanner> {
        let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| p.as_bytes().to_vec()).collect();
        let m = patterns.iter().map(Vec::len).min()?;
        if m < 2 {
            return None;
        }
        let most = u16::try_from(m - 1).unwrap_or(u16::MAX);
        let mut shift = vec![most; 1 << 16];
        let mut ends_at = vec![u32::MAX; 1 << 16];
        let mut ends: Vec<Vec<u32>> = Vec::new();
        for (id, p) in patterns.iter().enumerate() {
            // block ending at q (0-based, within the first m bytes): the window may move m-1-q
            for q in 1..m {
                let b = block(p[q - 1], p[q]);
                let s = u16::try_from(m - 1 - q).unwrap_or(u16::MAX);
                shift[b] = shift[b].min(s);
            }
            let b = block(p[m - 2], p[m - 1]);
            if ends_at[b] == u32::MAX {
                ends_at[b] = u32::try_from(ends.len()).ok()?;
                ends.push(Vec::new());
            }
            ends[ends_at[b] as usize].push(u32::try_from(id).ok()?);
        }
        for list in &mut ends {
            list.sort_by_key(|&id| std::cmp::Reverse(patterns[id as usize].len()));
        }
        Some(Scanner {
            longest: patterns.iter().map(Vec::len).max()?,
            patterns,
            m,
            shift,
            ends,
            ends_at,
        })
    }

    /// The first match starting at or after `from`: the leftmost, and the longest there.
    fn next(&self, hay: &[u8], from: usize) -> Option<Range<usize>> {
        let m = self.m;
        // `end` is the index of the window's last byte
        let mut end = from.checked_add(m - 1)?;
        while end < hay.len() {
            let b = block(hay[end - 1], hay[end]);
            let s = usize::from(self.shift[b]);
            if s > 0 {
                end += s;
                continue;
            }
            let start = end + 1 - m;
            let list = &self.ends[self.ends_at[b] as usize];
            for &id in list {
                let p = &self.patterns[id as usize];
                if hay[start..].starts_with(p) {
                    return Some(start..start + p.len());
                }
            }
            end += 1;
        }
        None
    }

    /// Every stretch the patterns cover, left to right: matches that overlap are joined into one
    /// (with `admin-user` and `user-pass1`, `admin-user-pass1` is one stretch), so no part of a
    /// pattern is left out because another one took its first bytes.
    pub(crate) fn spans<'h>(&'h self, hay: &'h [u8]) -> impl Iterator<Item = Range<usize>> + 'h {
        let mut at = 0;
        std::iter::from_fn(move || {
            let first = self.next(hay, at)?;
            let (start, mut end) = (first.start, first.end);
            // a match starting inside the stretch ends before `end - 1 + longest`: only that far
            // is searched
            let mut from = start + 1;
            while from < end {
                let reach = (end - 1 + self.longest).min(hay.len());
                match self.next(&hay[..reach], from) {
                    Some(m) if m.start < end => {
                        end = end.max(m.end);
                        from = m.start + 1;
                    }
                    _ => break,
                }
            }
            at = end;
            Some(start..end)
        })
    }

    /// Every match, left to right, not overlapping.
    #[cfg(test)]
    pub(crate) fn find_iter<'h>(
        &'h self,
        hay: &'h [u8],
    ) -> impl Iterator<Item = Range<usize>> + 'h {
        let mut at = 0;
        std::iter::from_fn(move || {
            let r = self.next(hay, at)?;
            at = r.end;
            Some(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same search, the slow obvious way.
    fn naive(patterns: &[String], hay: &[u8]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < hay.len() {
            let best = patterns
                .iter()
                .filter(|p| hay[i..].starts_with(p.as_bytes()))
                .map(String::len)
                .max();
            match best {
                Some(n) => {
                    out.push(i..i + n);
                    i += n;
                }
                None => i += 1,
            }
        }
        out
    }

    #[test]
    fn spans_are_what_every_match_covers_joined() {
        let mut next = crate::record::below(0x2545_f491_4f6c_dd1du64);
        let alphabet = b"abc";
        for _ in 0..400 {
            let patterns: Vec<String> = (0..1 + next(5))
                .map(|_| {
                    (0..2 + next(4))
                        .map(|_| alphabet[next(alphabet.len())] as char)
                        .collect()
                })
                .collect();
            let hay: Vec<u8> = (0..next(60))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            // covered bytes, the obvious way: every match at every place
            let mut covered = vec![false; hay.len()];
            for i in 0..hay.len() {
                for p in &patterns {
                    if hay[i..].starts_with(p.as_bytes()) {
                        covered[i..i + p.len()].iter_mut().for_each(|c| *c = true);
                    }
                }
            }
            let mut want = Vec::new();
            let mut i = 0;
            while i < hay.len() {
                if covered[i] {
                    let s = i;
                    while i < hay.len() && covered[i] {
                        i += 1;
                    }
                    want.push(s..i);
                } else {
                    i += 1;
                }
            }
            let s = Scanner::new(&patterns).expect("scanner");
            let got: Vec<_> = s.spans(&hay).collect();
            // adjacent stretches that only touch are two spans in `got`, one run in `want`
            let mut joined: Vec<Range<usize>> = Vec::new();
            for r in got {
                match joined.last_mut() {
                    Some(l) if l.end == r.start => l.end = r.end,
                    _ => joined.push(r),
                }
            }
            assert_eq!(
                joined,
                want,
                "{patterns:?} in {:?}",
                String::from_utf8_lossy(&hay)
            );
        }
    }

    #[test]
    fn finds_what_a_plain_search_finds_leftmost_and_longest() {
        let mut next = crate::record::below(0x9e37_79b9_7f4a_7c15u64);
        // a small alphabet, so patterns overlap, nest, share prefixes and suffixes
        let alphabet = b"abca%2F";
        for round in 0..400 {
            let patterns: Vec<String> = (0..1 + next(8))
                .map(|_| {
                    (0..2 + next(9))
                        .map(|_| alphabet[next(alphabet.len())] as char)
                        .collect()
                })
                .collect();
            let hay: Vec<u8> = (0..next(300))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let s = Scanner::new(&patterns).expect("patterns");
            let got: Vec<Range<usize>> = s.find_iter(&hay).collect();
            assert_eq!(
                got,
                naive(&patterns, &hay),
                "round {round}: {patterns:?} in {}",
                String::from_utf8_lossy(&hay)
            );
        }
    }

    #[test]
    fn no_pattern_or_a_one_byte_one_is_no_scanner() {
        assert!(Scanner::new(&[]).is_none());
        assert!(Scanner::new(&["ab".into(), "x".into()]).is_none());
        let s = Scanner::new(&["ab".into()]).expect("ab");
        assert_eq!(s.find_iter(b"xabab").collect::<Vec<_>>(), vec![1..3, 3..5]);
        assert_eq!(s.find_iter(b"a").count(), 0);
    }
}
