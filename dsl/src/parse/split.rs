//! A large runbook parsed in two pieces at once, on two threads, for the same tree as one parse.
//!
//! A block sequence entry at the indentation of `steps`' entries, at the start of a line, starts a
//! token afresh: every scalar of the entry before has ended (a block or plain scalar at a smaller
//! indentation, and a quoted scalar or a flow collection left open is an error in the piece before).
//! So the file splits at such a line `L` into `head` (from the start: the runbook's keys and the
//! first entries), `middle` (the later entries, up to `E`, the next key at column 0) and `tail` (`E`
//! to the end: the keys after `steps`). `middle` is parsed on a scoped thread while `head` and
//! `tail` are parsed here, each as a document of its own, with spans offset to the file's; then
//! `middle`'s items are appended to `steps` and `tail`'s entries to the top mapping.
//!
//! This is used only when each piece vouches for itself: no piece has an error (an alias to an
//! anchor of another piece is one), `head` ends in its `steps` list, `middle` is one sequence and
//! `tail` one mapping, no key of `tail` is a key of `head`, no top-level `<<`, the summed budgets
//! hold and no piece nests near [`MAX_DEPTH`]. The text must have no `\r`, no line starting `---` or
//! `...` (a document marker) past its first line, and `E` must start with a letter, `_` or a quote.
//! Otherwise `None`, and the caller parses the file whole, which makes every diagnostic.

use super::{Built, MAX_ALIAS_REPLAY, MAX_DEPTH, MAX_NODES, Node, NodeValue, build};
use crate::source::SourceFile;

/// Files smaller than this are parsed whole (a thread is not worth it).
pub(super) const MIN_BYTES: usize = 256 * 1024;

/// Where a file splits: `head` is `..line`, `middle` `line..end`, `tail` `end..`.
#[derive(Debug, PartialEq, Eq)]
struct Cut {
    line: usize,
    end: usize,
}

/// The file's tree from its pieces, or `None` when the pieces do not vouch for it (see the module).
/// (Whatever the processors: asking how many there are reads files, which dsl does not, and on
/// one the pieces cost about what the whole does.)
pub(super) fn parse(file: &SourceFile) -> Option<Node> {
    parse_at(file, cut(file.text())?)
}

fn parse_at(file: &SourceFile, cut: Cut) -> Option<Node> {
    let text = file.text();
    let (head, middle, tail) = std::thread::scope(|s| {
        let middle = s.spawn(|| build(file, cut.line, &text[cut.line..cut.end]).ok());
        let head = build(file, 0, &text[..cut.line]).ok();
        // the keys after `steps`, when there are any (`Some(None)`: they do not parse alone)
        let tail = (head.is_some() && cut.end < text.len())
            .then(|| build(file, cut.end, &text[cut.end..]).ok());
        (head, middle.join().ok().flatten(), tail)
    });
    let (head, middle) = (head?, middle?);
    // keys after `steps` that do not parse alone: the whole file is parsed, for its errors
    let tail = match tail {
        Some(None) => return None,
        tail => tail.flatten(),
    };
    // a node that reaches the end of its piece might reach further in the file
    if head.end >= cut.line || middle.end >= cut.end {
        return None;
    }
    join(head, middle, tail)
}

/// `middle`'s items appended to `head`'s `steps`, `tail`'s entries to `head`'s top mapping.
fn join(head: Built, middle: Built, tail: Option<Built>) -> Option<Node> {
    let pieces = [Some(&head), Some(&middle), tail.as_ref()];
    let (mut nodes, mut replayed) = (0, 0);
    for b in pieces.into_iter().flatten() {
        if b.root_merges || b.depth + 4 > MAX_DEPTH {
            return None;
        }
        nodes += b.nodes;
        replayed += b.replayed;
    }
    // the top collections of `middle` and `tail` are not nodes of the file
    nodes -= 1 + usize::from(tail.is_some());
    if nodes > MAX_NODES || replayed > MAX_ALIAS_REPLAY {
        return None;
    }
    let mut root = head.root;
    let NodeValue::Seq(items) = middle.root.value else {
        return None;
    };
    let NodeValue::Map(entries) = &mut root.value else {
        return None;
    };
    let more = match tail.map(|t| t.root.value) {
        None => Vec::new(),
        Some(NodeValue::Map(more)) => more,
        Some(_) => return None,
    };
    if more
        .iter()
        .any(|(k, _)| entries.iter().any(|(e, _)| e.name == k.name))
    {
        return None;
    }
    match entries.last_mut() {
        Some((
            k,
            Node {
                value: NodeValue::Seq(steps),
                ..
            },
        )) if k.name == "steps" => steps.extend(items),
        _ => return None,
    }
    entries.extend(more);
    Some(root)
}

/// Where to split `text`, or `None` when it has no place this module can vouch for.
fn cut(text: &str) -> Option<Cut> {
    if text.contains('\r') {
        return None;
    }
    // document markers past the first line
    if text.contains("\n---") || text.contains("\n...") {
        return None;
    }
    let key = if text.starts_with("steps:") {
        0
    } else {
        text.find("\nsteps:")? + 1
    };
    // `steps:` alone on its line, a comment at most after it
    let rest = &text[key + "steps:".len()..];
    let eol = rest.find('\n')?;
    let after = rest[..eol].trim_start_matches(' ');
    if !(after.is_empty() || after.starts_with('#')) {
        return None;
    }
    let first = key + "steps:".len() + eol + 1;
    // the indentation of the first entry; every line up to it blank or a comment
    let mut indent = None;
    let mut at = first;
    for line in text[first..].split_inclusive('\n') {
        let body = line.trim_start_matches(' ');
        if body.starts_with("- ") {
            indent = Some(line.len() - body.len());
            break;
        }
        if !(body.starts_with('#') || body == "\n") {
            return None;
        }
        at += line.len();
    }
    let indent = indent?;
    // `end`: the first line past the entries, which starts at column 0 with anything else than a
    // space or a comment (or, for entries at column 0, a `- `)
    let mut end = text.len();
    let mut pos = at;
    for line in text[at..].split_inclusive('\n') {
        let b = line.as_bytes()[0];
        let entry = indent == 0 && line.starts_with("- ");
        if !(b == b' ' || b == b'#' || b == b'\n' || entry) {
            if !(b.is_ascii_alphabetic() || b == b'_' || b == b'"' || b == b'\'') {
                return None;
            }
            end = pos;
            break;
        }
        pos += line.len();
    }
    // the entry line nearest past the point that leaves `middle` half the file
    let target = end.saturating_sub(text.len() / 2).max(at + 1);
    let mut line = text[target..end].find('\n')? + target + 1;
    while line < end {
        let l = &text[line..end];
        let body = l.trim_start_matches(' ');
        if l.len() - body.len() == indent && body.starts_with("- ") {
            return Some(Cut { line, end });
        }
        line += l.find('\n')? + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::build;

    /// For each cut at an entry line of `steps` (the indentation `cut` finds), the tree of the
    /// pieces (`None`: they do not vouch for it) and the tree of the whole (or its error).
    fn runs(text: &str) -> Vec<(Option<Node>, Result<Node, String>)> {
        let file = SourceFile::new("t.yaml", text);
        let whole = build(&file, 0, text)
            .map(|b| b.root)
            .map_err(|d| d.message.clone());
        let Some(c) = cut(text) else {
            return Vec::new();
        };
        let indent = |l: usize| text[l..].len() - text[l..].trim_start_matches(' ').len();
        let entry = indent(c.line);
        let steps = text.find("steps:").unwrap_or(0);
        text.match_indices('\n')
            .map(|(i, _)| i + 1)
            .filter(|&l| l > steps && l < c.end && indent(l) == entry)
            .filter(|&l| text[l + entry..].starts_with("- "))
            .map(|line| (parse_at(&file, Cut { line, end: c.end }), whole.clone()))
            .collect()
    }

    #[test]
    fn pieces_make_the_tree_of_the_whole_or_nothing() {
        let texts = [
            // plain, with keys after `steps`, entries at column 0, comments and blank lines
            "name: a\nsteps:\n  - id: x\n    tool: t\n  - id: y\n    tool: u\n  - id: z\nfinally:\n  - id: f\n",
            "name: a\nsteps: # the steps\n- id: x\n  args: {a: 1}\n- id: y\n\n# c\n- id: z\noutputs: {o: 1}\n",
            // scalars that end at the cut: block, plain on lines, empty
            "steps:\n  - id: x\n    run: |\n      a\n\n  - id: y\n    run: >+\n      b\n\n\n  - id: z\n    d: a\n      b\n  - id: w\n    e:\n  - id: u\n    f: !!str\n  - id: t\n  -\n  - id: v\n",
            // a quoted scalar or a flow collection across the cut: an error in a piece
            "steps:\n  - id: x\n    d: \"a\n  - b\"\n  - id: y\n",
            "steps:\n  - id: x\n    d: [a,\n  - b]\n  - id: y\n",
            "steps:\n  - id: x\n    d: 'a\n  - b'\n  - id: y\n",
            // anchors: within a piece, and across (an error in the later piece)
            "steps:\n  - &s {id: x, tool: t}\n  - *s\n  - id: y\n    <<: {tool: t}\n  - *s\n",
            "base: &b {tool: t}\nsteps:\n  - id: x\n    <<: *b\n  - id: y\n    <<: *b\nend: *b\n",
            // top-level merge keys, duplicate top keys across pieces
            "<<: {x: 1}\nsteps:\n  - id: x\n  - id: y\nx: 2\n",
            "name: a\nsteps:\n  - id: x\n  - id: y\nname: b\n",
            "steps:\n  - id: x\n  - id: y\nsteps:\n  - id: z\n",
            // a document end or start; a second document
            "steps:\n  - id: x\n  - id: y\n...\n",
            "---\nsteps:\n  - id: x\n  - id: y\n---\nsteps: []\n",
            // tabs, under-indented lines, nested sequences at other indentations
            "steps:\n  - id: x\n\t- id: y\n  - id: z\n",
            "steps:\n  - id: x\n needs: [a]\n  - id: y\n",
            "steps:\n  - id: x\n    needs:\n    - a\n    - b\n  - - n\n    - m\n  - id: y\n    needs:\n      - c\n",
            // tags, explicit keys, a key that is no letter
            "steps:\n  - !!map {id: x}\n  - ? id\n    : y\n  - id: !!str 5\n1: x\n",
            "%YAML 1.2\n---\nsteps:\n  - id: x\n  - id: y\n",
            "steps:\n  - id: x\n  - id: y\n\"quoted\": 1\n'single': 2\n_u: 3\n",
            // errors after `steps`: a syntax error, an unknown anchor, a duplicate key
            "steps:\n  - id: x\n  - id: y\noutputs: {x: [1, 2}\n",
            "steps:\n  - id: x\n  - id: y\noutputs: {x: *nope}\n",
            "steps:\n  - id: x\n  - id: y\noutputs: {}\noutputs: {}\n",
            "a: &b 1\nsteps:\n  - id: x\n  - id: y\nz: *b\n",
        ];
        for text in texts {
            for (pieces, whole) in &runs(text) {
                if let Some(p) = pieces {
                    assert_eq!(Ok(p), whole.as_ref(), "{text:?}");
                }
            }
        }
        // the plain shapes are joined at every entry but the first (`steps` is empty before it)
        for text in &texts[..2] {
            let runs = runs(text);
            assert!(runs.len() >= 3, "{text:?}");
            assert!(runs[0].0.is_none(), "{text:?}");
            assert!(runs[1..].iter().all(|(p, _)| p.is_some()), "{text:?}");
        }
        // past a block scalar, whose span ends at the next entry, not at the piece's end: not
        // joined; past the other scalars: joined
        let joined: Vec<bool> = runs(texts[2]).iter().map(|(p, _)| p.is_some()).collect();
        assert_eq!(joined, [false, false, false, true, true, true, true]);
    }

    #[test]
    fn pieces_of_every_runbook_of_the_repository_make_its_tree() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut dirs = vec![std::path::PathBuf::from(root).join("runbooks")];
        dirs.push(std::path::PathBuf::from(root).join("tests/data"));
        let (mut files, mut joined) = (0, 0);
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).expect("a directory").flatten() {
                let path = e.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|x| x != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("text");
                files += 1;
                for (pieces, whole) in runs(&text) {
                    if let Some(p) = pieces {
                        assert_eq!(Ok(&p), whole.as_ref(), "{}", path.display());
                        joined += 1;
                    }
                }
            }
        }
        assert!(files > 30 && joined > 30, "{files} files, {joined} joined");
    }

    #[test]
    fn the_cut_is_an_entry_line_of_steps_and_the_end_the_next_key() {
        let mut text = String::from("name: a\nsteps:\n");
        for i in 0..100 {
            text.push_str(&format!("  - id: s{i}\n    tool: t\n"));
        }
        text.push_str("finally:\n  - id: f\n");
        let c = cut(&text).expect("a cut");
        assert!(text[c.line..].starts_with("  - id: s"));
        assert_eq!(&text[c.end..], "finally:\n  - id: f\n");
        let file = SourceFile::new("t.yaml", text.clone());
        let whole = build(&file, 0, &text).expect("parse").root;
        assert_eq!(parse_at(&file, c), Some(whole));
        // no cut: markers, `\r`, `steps` in flow style or quoted, a tab before the next key
        for bad in [
            text.replace("finally:", "---\nfinally:"),
            text.replace('\n', "\r\n"),
            "steps: [a, b]\n".to_owned(),
            "\"steps\":\n  - a\n  - b\n".to_owned(),
            text.replace("finally:", "\tfinally:"),
        ] {
            assert_eq!(cut(&bad), None, "{bad:?}");
        }
    }

    /// `n` entries of `steps` at `indent`, each made by `entry(i, indentation)`.
    fn entries(n: usize, indent: usize, entry: impl Fn(usize, &str) -> String) -> String {
        let p = " ".repeat(indent);
        (0..n).map(|i| entry(i, &p)).collect()
    }

    #[test]
    fn large_files_parse_as_one_parse_does_errors_included() {
        let plain = |i: usize, p: &str| {
            format!(
                "{p}- id: s{i}\n{p}  tool: state\n{p}  args: {{action: set, key: k{i}, value: \"{{{{ input.n }}}}\"}}\n"
            )
        };
        let head = "name: big\ninputs:\n  n: {type: integer, default: 3}\n";
        let steps = |n: usize| entries(n, 2, plain);
        let n = 3600;
        let texts = [
            format!("{head}steps:\n{}", steps(n)),
            format!("{head}steps:\n{}", entries(n, 0, plain)),
            format!(
                "{head}steps:\n{}outputs:\n  x: \"{{{{ steps.s1.ok }}}}\"\ndescription: after\n",
                steps(n)
            ),
            format!(
                "{head}description: one\nsteps:\n{}description: two\n",
                steps(n)
            ),
            format!(
                "{head}steps:\n  - {{id: a0, tool: state, args: &A {{action: set, key: ka, value: x}}}}\n{}  - {{id: a1, tool: state, args: *A}}\n",
                steps(n)
            ),
            format!("{head}<<: {{description: merged}}\nsteps:\n{}", steps(n)),
            format!(
                "{head}steps:\n{}",
                entries(n, 2, |i, p| format!(
                    "{p}- id: s{i}\n{p}  tool: local\n{p}  args:\n{p}    command: |\n{p}      echo\n{p}      - id: fake{i}\n{p}    # - id: c\n"
                ))
            ),
            format!(
                "{head}steps:\n{}",
                entries(n, 2, |i, p| format!(
                    "{p}- id: s{i}\n{p}  args: {{command: \"echo a\n{p}    - id: q{i} b\"}}\n"
                ))
            ),
            format!(
                "{head}steps:\n{}",
                entries(4800, 2, |i, p| format!(
                    "{p}- {{id: s{i}, tool: state,\n{p}   args: {{key: k{i},\n{p}   value: x}}}}\n"
                ))
            ),
            format!("{head}steps:\n{}...\n", steps(n)),
            format!("{head}steps:\n{}---\nname: other\n", steps(n)),
            format!("\u{feff}{head}steps:\n{}", steps(n)),
            format!(
                "{head}steps:\n{}  - id: t\n\ttool: state\n{}",
                steps(n / 2),
                steps(n / 2)
            ),
            format!(
                "{head}steps: # the steps\n{}",
                entries(n, 2, |i, p| format!(
                    "# c {i}\n{p}# - id: x{i}\n{}",
                    plain(i, p)
                ))
            ),
            format!(
                "{head}description: |\n  steps:\n  - id: no\nsteps:\n{}",
                steps(n)
            ),
            format!(
                "name: big\ndescription: \"a\nsteps:\n  - id: fake\"\nsteps:\n{}",
                steps(n)
            ),
            format!(
                "{head}steps:\n{}  - id: deep\n    args: {{v: {}1{}}}\n{}",
                steps(n / 2),
                "[".repeat(60),
                "]".repeat(60),
                steps(n / 2)
            ),
            format!(
                "{head}x: &a [1, 1, 1, 1]\ny: &b [*a, *a, *a, *a]\nsteps:\n{}z: [*b, *b, *b, *b]\n",
                steps(n)
            ),
            format!("{head}steps:\n{}finally:\n{}", steps(n), steps(n)),
            format!("{head}? steps\n:\n{}", steps(n)),
            format!(
                "{head}steps:\n{}",
                entries(n, 2, |i, p| format!(
                    "{p}- id: s{i}\n{p}  args:\n{p}    command: >-\n{p}      echo {i}\n\n\n"
                ))
            ),
            // errors, in each piece
            format!("{head}steps:\n{}outputs: {{x: [1, 2}}\n", steps(n)),
            format!("{head}steps:\n{}outputs: {{x: *nope}}\n", steps(n)),
            format!("{head}steps:\n{}outputs: {{}}\noutputs: {{}}\n", steps(n)),
            format!("{head}steps:\n{}- x\n", steps(n)),
            format!(
                "{head}steps:\n{}  - id: bad\n    tool: [state\n{}",
                steps(n),
                steps(n)
            ),
            format!(
                "{head}steps:\n{}  - {{id: bad, args: *nope}}\n{}",
                steps(n),
                steps(n)
            ),
            format!("{head}description: \"open\nsteps:\n{}", steps(n)),
            format!(
                "{head}steps:\n{}  - {{id: d, id: e}}\n{}",
                steps(n),
                steps(n)
            ),
        ];
        let mut split = 0;
        for text in &texts {
            let file = SourceFile::new("big.yaml", text.as_str());
            let one = build(&file, 0, text).map(|b| b.root);
            split += usize::from(parse(&file).is_some());
            match (crate::parse::parse(&file), one) {
                (Ok(a), Ok(b)) => assert!(a == b, "{}", &text[..200]),
                (Err(a), Err(b)) => {
                    assert_eq!((a.message, a.span), (b.message, b.span), "{}", &text[..200])
                }
                (a, b) => panic!("{:?} against {:?}: {}", a.err(), b.err(), &text[..200]),
            }
        }
        // most of them were read in pieces
        assert!(split >= 10, "{split}");
    }
}
