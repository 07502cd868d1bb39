//! What an SQL text is: how many statements, and the effect of each. A small lexer skips strings
//! (`'…'`, `E'…'`), quoted identifiers, dollar quotes and comments, so a `;` or a keyword inside
//! them counts for nothing.
//!
//! `classify` gives each statement's effect and why: writable CTEs, `SELECT … INTO`/`FOR UPDATE`,
//! `EXPLAIN ANALYZE` of a write, `DELETE`/`UPDATE` without `WHERE`, `ALTER … DROP`, `COPY …
//! PROGRAM`, calls of the side-effecting built-ins in `SIDE_EFFECTS`; unknown statements are
//! destructive. It is lexical, not a parse: a user function that calls a side-effecting built-in
//! reads as `read`, so a call judged a read runs in a read-only transaction (the server refuses the
//! write), and a read-only target's role is checked. `enclosable` says whether a query may be put
//! inside `COPY (…)` for an export.

use dsl::Effect;

/// A word or punctuation of an SQL text, outside strings and comments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A keyword or identifier, lowercased.
    Word(String),
    Open,
    Close,
    Semi,
    /// `E` right before a quote: the string takes backslash escapes.
    EscapePrefix,
    /// A quoted identifier's name, as written (case kept, `""` undone).
    Quoted(String),
    /// A `U&"…"` identifier: its name is not spelled out in the text.
    UnicodeQuoted,
    Other,
}

/// The tokens of `sql`, or an error for an unterminated string, identifier or comment.
fn lex(sql: &str) -> Result<Vec<Tok>, String> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                loop {
                    if i + 1 >= b.len() {
                        return Err("an unterminated /* comment".into());
                    }
                    if b[i] == b'/' && b[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' => {
                // E'…' strings take backslash escapes; plain ones only ''
                let escapes = out.last() == Some(&Tok::EscapePrefix);
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("an unterminated string".into()),
                        Some(b'\\') if escapes => i += 2,
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => break,
                        Some(_) => i += 1,
                    }
                }
                out.push(Tok::Other);
            }
            b'"' => {
                // U&"…" spells its name with escapes: kept apart, never compared by name
                let unicode = i >= 2 && b[i - 1] == b'&' && b[i - 2].eq_ignore_ascii_case(&b'u');
                i += 1;
                let start = i;
                loop {
                    match b.get(i) {
                        None => return Err("an unterminated quoted identifier".into()),
                        Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                out.push(if unicode {
                    Tok::UnicodeQuoted
                } else {
                    Tok::Quoted(sql[start..i].replace("\"\"", "\""))
                });
            }
            b'$' => {
                // $tag$ … $tag$, or a parameter ($1)
                let start = i;
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if b.get(j) == Some(&b'$')
                    && !b[start + 1..j].first().is_some_and(u8::is_ascii_digit)
                {
                    let tag = &sql[start..=j];
                    match sql[j + 1..].find(tag) {
                        Some(end) => i = j + 1 + end + tag.len() - 1,
                        None => return Err("an unterminated dollar-quoted string".into()),
                    }
                } else {
                    i = j - 1;
                }
                out.push(Tok::Other);
            }
            b'(' => out.push(Tok::Open),
            b')' => out.push(Tok::Close),
            b';' => out.push(Tok::Semi),
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] >= 0x80
                        || b[i] == b'$')
                {
                    i += 1;
                }
                // a string prefix (E'…', B'…', X'…', N'…'): one letter, the quote right after it
                let w = &sql[start..i];
                if b.get(i) == Some(&b'\'') && w.eq_ignore_ascii_case("e") {
                    out.push(Tok::EscapePrefix);
                } else if b.get(i) == Some(&b'\'') && w.len() == 1 {
                    out.push(Tok::Other);
                } else {
                    out.push(Tok::Word(w.to_ascii_lowercase()));
                }
                continue;
            }
            c if c.is_ascii_whitespace() => {}
            _ => out.push(Tok::Other),
        }
        i += 1;
    }
    Ok(out)
}

/// The statements of `sql` as token lists (empty statements dropped).
fn statements(sql: &str) -> Result<Vec<Vec<Tok>>, String> {
    let mut all = Vec::new();
    let mut cur = Vec::new();
    for t in lex(sql)? {
        if t == Tok::Semi {
            if !cur.is_empty() {
                all.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(t);
        }
    }
    if !cur.is_empty() {
        all.push(cur);
    }
    Ok(all)
}

/// How many statements `sql` holds.
pub fn count(sql: &str) -> Result<usize, String> {
    Ok(statements(sql)?.len())
}

fn word(t: &Tok) -> Option<&str> {
    match t {
        Tok::Word(w) => Some(w),
        _ => None,
    }
}

/// Whether `w` appears as a word at parenthesis depth 0.
fn top_level(toks: &[Tok], w: &str) -> bool {
    let mut depth = 0i32;
    toks.iter().any(|t| {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => depth -= 1,
            _ => {}
        }
        depth == 0 && word(t) == Some(w)
    })
}

fn any_word(toks: &[Tok], ws: &[&str]) -> bool {
    toks.iter()
        .any(|t| word(t).is_some_and(|x| ws.contains(&x)))
}

/// The words that start the statement an EXPLAIN explains.
const EXPLAINABLE: &[&str] = &[
    "select", "insert", "update", "delete", "merge", "with", "values", "table", "create", "execute",
];

/// The effect of one statement, and why.
fn classify_one(toks: &[Tok]) -> (Effect, String) {
    let Some(first) = toks.first().and_then(word) else {
        return (Effect::Destructive, "an unrecognised statement".into());
    };
    let writes_inside = any_word(toks, &["insert", "update", "delete", "merge"]);
    match first {
        "select" | "values" | "table" => {
            if top_level(toks, "into") {
                (Effect::Write, "SELECT … INTO creates a table".into())
            } else if any_word(toks, &["update", "share"]) && top_level(toks, "for") {
                (Effect::Write, "SELECT … FOR UPDATE/SHARE locks rows".into())
            } else if writes_inside {
                (Effect::Write, "a data-modifying statement inside".into())
            } else {
                (Effect::Read, first.to_ascii_uppercase())
            }
        }
        "with" => {
            // a data-modifying CTE makes the whole statement write
            let truncating = any_word(toks, &["truncate", "drop"]);
            if truncating {
                (
                    Effect::Destructive,
                    "WITH … containing DROP/TRUNCATE".into(),
                )
            } else if any_word(toks, &["delete", "update"]) {
                // which WHERE belongs to which statement is not told apart here: counted at its worst
                (
                    Effect::Destructive,
                    "WITH … containing DELETE or UPDATE".into(),
                )
            } else if writes_inside {
                (
                    Effect::Write,
                    "WITH … containing a data-modifying statement".into(),
                )
            } else {
                (Effect::Read, "WITH … SELECT".into())
            }
        }
        "show" => (Effect::Read, "SHOW".into()),
        "explain" => {
            // EXPLAIN ANALYZE runs the statement: it has that statement's effect
            let start = toks
                .iter()
                .position(|t| word(t).is_some_and(|w| EXPLAINABLE.contains(&w)))
                .unwrap_or(toks.len());
            let analyze = toks[..start]
                .iter()
                .any(|t| matches!(word(t), Some("analyze" | "analyse")));
            if analyze {
                let inner = &toks[start..];
                let (e, why) = classify_one(inner);
                (e, format!("EXPLAIN ANALYZE runs it: {why}"))
            } else {
                (Effect::Read, "EXPLAIN".into())
            }
        }
        "delete" => {
            if top_level(toks, "where") {
                (Effect::Write, "DELETE … WHERE".into())
            } else {
                (Effect::Destructive, "DELETE without WHERE".into())
            }
        }
        "update" => {
            if top_level(toks, "where") {
                (Effect::Write, "UPDATE … WHERE".into())
            } else {
                (Effect::Destructive, "UPDATE without WHERE".into())
            }
        }
        "drop" | "truncate" => (Effect::Destructive, first.to_ascii_uppercase()),
        "alter" => {
            if any_word(toks, &["drop", "rename"]) {
                (Effect::Destructive, "ALTER … DROP/RENAME".into())
            } else {
                (Effect::Write, "ALTER".into())
            }
        }
        "copy" => {
            if any_word(toks, &["program"]) {
                (
                    Effect::Destructive,
                    "COPY … PROGRAM runs a program on the server".into(),
                )
            } else if top_level(toks, "from") && !toks.contains(&Tok::Open) {
                (Effect::Write, "COPY … FROM".into())
            } else if any_word(toks, &["stdout"]) {
                (Effect::Read, "COPY … TO STDOUT".into())
            } else {
                (Effect::Write, "COPY to or from a server file".into())
            }
        }
        "insert" | "merge" | "create" | "grant" | "revoke" | "comment" | "lock" | "refresh"
        | "reindex" | "vacuum" | "analyze" | "analyse" | "cluster" | "call" | "do" | "set"
        | "reset" | "discard" | "begin" | "start" | "commit" | "end" | "rollback" | "abort"
        | "savepoint" | "release" | "prepare" | "execute" | "deallocate" | "listen" | "notify"
        | "unlisten" | "security" | "import" | "load" | "checkpoint" => {
            (Effect::Write, first.to_ascii_uppercase())
        }
        other => (
            Effect::Destructive,
            format!(
                "`{}` is not a statement infra knows to be safe",
                other.to_ascii_uppercase()
            ),
        ),
    }
}

/// Functions whose effect a read-only transaction does not stop: large objects, files on the server,
/// other sessions, locks and settings that outlive the call, notifications, SQL run from a string, and
/// connections to other servers. A name ending in `*` is a prefix.
const SIDE_EFFECTS: &[(&str, Effect)] = &[
    ("lo_unlink", Effect::Destructive),
    ("lo_truncate*", Effect::Destructive),
    ("pg_terminate_backend", Effect::Destructive),
    ("pg_drop_replication_slot", Effect::Destructive),
    ("pg_promote", Effect::Destructive),
    ("lo_create", Effect::Write),
    ("lo_creat", Effect::Write),
    ("lo_import", Effect::Write),
    ("lo_export", Effect::Write),
    ("lo_from_bytea", Effect::Write),
    ("lo_put", Effect::Write),
    ("lo_open", Effect::Write),
    ("lowrite", Effect::Write),
    ("dblink*", Effect::Write),
    ("query_to_xml*", Effect::Write),
    ("cursor_to_xml*", Effect::Write),
    ("pg_cancel_backend", Effect::Write),
    ("pg_advisory*", Effect::Write),
    ("pg_try_advisory*", Effect::Write),
    ("set_config", Effect::Write),
    ("nextval", Effect::Write),
    ("setval", Effect::Write),
    ("pg_notify", Effect::Write),
    ("pg_reload_conf", Effect::Write),
    ("pg_rotate_logfile", Effect::Write),
    ("pg_switch_wal", Effect::Write),
    ("pg_create_*", Effect::Write),
    ("pg_replication_slot_advance", Effect::Write),
    ("pg_logical_slot_get_*", Effect::Write),
    ("pg_backup_*", Effect::Write),
    ("pg_start_backup", Effect::Write),
    ("pg_stop_backup", Effect::Write),
    ("pg_stat_reset*", Effect::Write),
    ("pg_file_*", Effect::Write),
    ("pg_log_backend_memory_contexts", Effect::Write),
    ("pg_import_system_collations", Effect::Write),
    ("pg_wal_replay_*", Effect::Write),
];

fn side_effect_of(name: &str) -> Option<Effect> {
    SIDE_EFFECTS.iter().find_map(|(n, e)| {
        let hit = match n.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *n,
        };
        hit.then_some(*e)
    })
}

/// The strongest side effect a statement's function names carry, and why. Names are matched wherever
/// they appear (called, qualified or quoted); an identifier spelled with `U&"…"` escapes cannot be
/// matched and counts as a write.
fn side_effects(toks: &[Tok]) -> Option<(Effect, String)> {
    let mut worst: Option<(Effect, String)> = None;
    for t in toks {
        let found = match t {
            Tok::Word(w) | Tok::Quoted(w) => side_effect_of(w).map(|e| {
                (
                    e,
                    format!("it calls `{w}`, which a read-only transaction does not stop"),
                )
            }),
            Tok::UnicodeQuoted => Some((
                Effect::Write,
                "a U&\"…\" identifier hides which function it names".to_owned(),
            )),
            _ => None,
        };
        if let Some(f) = found
            && worst.as_ref().is_none_or(|(e, _)| f.0 > *e)
        {
            worst = Some(f);
        }
    }
    worst
}

/// The effect of `sql` (the highest of its statements) and why, or why it cannot be read.
pub fn classify(sql: &str) -> Result<(Effect, String), String> {
    let stmts = statements(sql)?;
    if stmts.is_empty() {
        return Err("no statement".into());
    }
    Ok(stmts
        .iter()
        .map(|s| {
            let own = classify_one(s);
            match side_effects(s) {
                Some(side) if side.0 > own.0 => side,
                _ => own,
            }
        })
        .max_by_key(|(e, _)| *e)
        .unwrap_or((Effect::Destructive, String::new())))
}

/// Checks that `sql` is one whole query that can be put inside parentheses: its parentheses balance
/// (none closes what it did not open) and it holds no `;`. Comments and strings are skipped as the
/// server skips them; a trailing `--` comment is the caller's to end with a newline.
pub fn enclosable(sql: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for t in lex(sql)? {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("a `)` closes a parenthesis the query did not open")?;
            }
            Tok::Semi => return Err("a `;` inside the query".into()),
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{depth} parenthesis(es) left open"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(sql: &str) -> Effect {
        classify(sql).expect("classifies").0
    }

    #[test]
    fn statements_are_counted_outside_strings_and_comments() {
        assert_eq!(count("select 1").ok(), Some(1));
        assert_eq!(count("select 1;").ok(), Some(1));
        assert_eq!(count("select 1; commit; drop table t").ok(), Some(3));
        assert_eq!(count("select ';' -- ; \n /* ; /* ; */ */").ok(), Some(1));
        assert_eq!(
            count("select $$;$$, $tag$ ; $x$ $tag$, E'\\';', \"a;b\"").ok(),
            Some(1)
        );
        assert_eq!(count("select $1, $2").ok(), Some(1));
        // a standard string ends at its quote whatever precedes it; a backslash is only an escape in E''
        assert_eq!(
            count("select 1 where x like'a\\'; drop table t; --'").ok(),
            Some(2)
        );
        assert_eq!(count("select E'a\\'; b'").ok(), Some(1));
        assert!(count("select 'open").is_err());
        assert!(count("select $$ open").is_err());
    }

    #[test]
    fn functions_a_read_only_transaction_does_not_stop_make_a_query_write() {
        for (sql, want) in [
            ("select lo_unlink(16400)", Effect::Destructive),
            ("select pg_catalog.lo_unlink(16400)", Effect::Destructive),
            ("select \"lo_unlink\"(16400)", Effect::Destructive),
            ("select pg_terminate_backend(1)", Effect::Destructive),
            ("select lo_export(1, '/tmp/x')", Effect::Write),
            ("select * from dblink_exec('x', 'y')", Effect::Write),
            ("select pg_advisory_lock(1)", Effect::Write),
            ("select set_config('role', 'x', false)", Effect::Write),
            (
                "select query_to_xml('delete from t', true, false, '')",
                Effect::Write,
            ),
            ("select U&\"lo\\005funlink\"(1)", Effect::Write),
            (
                "with a as (select lo_from_bytea(0, 'x')) select * from a",
                Effect::Write,
            ),
        ] {
            assert_eq!(e(sql), want, "{sql}");
        }
        // a quoted name keeps its case, and a string is not a call
        assert_eq!(e("select \"LO_UNLINK\"(1)"), Effect::Read);
        assert_eq!(e("select 'lo_unlink(1)'"), Effect::Read);
    }

    #[test]
    fn only_a_whole_balanced_query_is_enclosable() {
        for ok in [
            "select 1",
            "select (1), ((2))",
            "select ')' as x",
            "select $q$)$q$",
            "select 1 -- )",
            "select 1 /* ) */",
            "select \"a)\" from t",
        ] {
            assert_eq!(enclosable(ok), Ok(()), "{ok}");
        }
        for bad in [
            "select 1) to program 'x' --",
            "select (1",
            "select 1); copy t to program 'x'; --",
            "select (1)) to '/tmp/x'",
            "select 1; select 2",
            "select 1 /* ",
        ] {
            assert!(enclosable(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn effects_come_from_the_statement() {
        for read in [
            "select now()",
            "SELECT * FROM t WHERE x = 'drop table t'",
            "with a as (select 1) select * from a",
            "explain select * from t",
            "show work_mem",
            "values (1), (2)",
            "copy (select 1) to stdout",
        ] {
            assert_eq!(e(read), Effect::Read, "{read}");
        }
        for write in [
            "insert into t values (1)",
            "update t set x = 1 where id = 2",
            "delete from t where id = 1",
            "create table t (x int)",
            "with d as (insert into t values (1) returning *) select * from d",
            "select * from t for update",
            "select * into t2 from t",
            "set default_transaction_read_only = off",
            "explain analyze insert into t values (1)",
            "alter table t add column y int",
            "copy t from stdin",
        ] {
            assert_eq!(e(write), Effect::Write, "{write}");
        }
        for destructive in [
            "drop table t",
            "truncate t",
            "delete from t",
            "update t set x = 1",
            "alter table t drop column x",
            "copy t to program 'rm -rf /'",
            "explain analyze delete from t",
            "with d as (delete from t returning *) select * from d",
            "with d as (delete from t where x = 1 returning *) select * from d",
            "select 1; drop table t",
            "frobnicate everything",
        ] {
            assert_eq!(e(destructive), Effect::Destructive, "{destructive}");
        }
    }
}
