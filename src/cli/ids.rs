//! Run and job ids as people type them: a whole id or any unique prefix of one.

use engine::store::{IdKind, Store};

/// How many candidates an ambiguous prefix names.
const SHOWN: usize = 10;

/// The whole id `arg` names: itself, or the one id it is a prefix of. The error says what went wrong
/// and what to type instead (no such id; a prefix shared by several, with them listed).
pub fn resolve(store: &Store, kind: IdKind, arg: &str) -> Result<String, String> {
    let (noun, list) = match kind {
        IdKind::Run => ("run", "infra runs list"),
        IdKind::Job => ("job", "infra jobs list"),
    };
    if arg.is_empty() {
        return Err(format!("an empty {noun} id; see `{list}` for the ids"));
    }
    let found = store
        .ids_with_prefix(kind, arg, SHOWN + 1)
        .map_err(|e| format!("cannot read the store: {e}"))?;
    match found.as_slice() {
        [] => Err(format!(
            "no {noun} has an id starting with `{arg}`; see `{list}` for the ids"
        )),
        [(id, ..)] => Ok(id.clone()),
        many => {
            if let Some((id, ..)) = many.iter().find(|(id, ..)| id == arg) {
                return Ok(id.clone());
            }
            let mut msg = format!(
                "the {noun} id prefix `{arg}` is ambiguous; give more characters of one of these:\n"
            );
            for (id, what, when) in many.iter().take(SHOWN) {
                msg.push_str(&format!("  {id}  {what}  {when}\n"));
            }
            if many.len() > SHOWN {
                msg.push_str("  …\n");
            }
            Err(msg.trim_end().to_owned())
        }
    }
}

/// The run index's row of the run `arg` names (an id or a unique prefix), or the exit code after the
/// error is printed: a usage error for an unknown or ambiguous id, a failure when the store fails.
pub fn run_row(store: &Store, arg: &str) -> Result<serde_json::Value, u8> {
    let id = resolve(store, IdKind::Run, arg).map_err(|msg| {
        crate::render::err(&format!("error: {msg}\n"));
        super::USAGE
    })?;
    match store.run(&id) {
        Ok(Some(row)) => Ok(row),
        Ok(None) => {
            crate::render::err(&format!("error: the run `{id}` is gone from the store\n"));
            Err(super::FAILED)
        }
        Err(e) => {
            crate::render::err(&format!("error: cannot read the store: {e}\n"));
            Err(super::FAILED)
        }
    }
}
