//! Per-call options every tool takes, as the original product had them: `output` shapes a result before
//! it is returned, `store_as` keeps the shaped result in `state`.
//!
//! `output: {path, pick, omit, map, missing, default}`, applied to the call's `result` in this order:
//! `path` selects a value (`a.b[0].c`: keys by `.`, array indexes as `[n]` or `.n`); `pick` keeps only
//! the named keys of an object, `omit` drops them; `map` (itself an `output`) shapes every element of an
//! array. When `path` is not there (or `map` meets no array), `missing` decides: `error` (the default:
//! the call answers `invalid_args`), `null` (or `undefined`), `empty` (`[]` under `map`, else `{}`), or
//! `default`, the value of `default`. Giving `default` without `missing` means `missing: "default"`
//! (the original then failed; this is the one difference).
//!
//! `store_as: "<key>"` or `{key, scope}` (with `store_scope` as the scope's other spelling) saves the
//! shaped, redacted result with `state set` (a run of its own, audited), `persistent` by default as
//! `state set` is. Only a call that succeeded is stored.

use serde_json::{Map, Value, json};

use super::reply::Reply;

/// What `output` and `store_as` do, in a sentence each (`help` and the server instructions say it).
pub const OPTIONS: [(&str, &str); 2] = [
    (
        "output",
        "{path, pick, omit, map, missing, default}: shapes `result` before it is returned. `path` selects (`a.b[0]`), `pick`/`omit` keep/drop keys, `map` shapes each array element; when `path` is missing, `missing` decides: `error` (default), `null`, `empty`, or `default` (the value of `default`).",
    ),
    (
        "store_as",
        "\"<key>\" or {key, scope}: saves the shaped, masked result with `state set` (scope `persistent` by default, or `session`; also `store_scope`), when the call succeeded.",
    ),
];

/// What `missing` says to do when `path` (or `map`'s array) is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    Error,
    Null,
    Empty,
    Default,
}

/// A checked `output` option.
#[derive(Debug, Clone)]
pub struct Output {
    path: Option<String>,
    pick: Option<Vec<String>>,
    omit: Option<Vec<String>>,
    map: Option<Box<Output>>,
    missing: Missing,
    default: Option<Value>,
}

const KEYS: [&str; 6] = ["path", "pick", "omit", "map", "missing", "default"];

fn bad(at: &str, message: String, hint: &str) -> Reply {
    Reply::error("invalid_args", message, Some(hint.into()), Some(at.into()))
}

fn names(v: &Value, at: &str) -> Result<Vec<String>, Reply> {
    v.as_array()
        .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| {
            bad(
                at,
                format!("`{at}` must be a list of key names"),
                "for example `[\"id\", \"name\"]`",
            )
        })
}

impl Output {
    /// Checks an `output` option given at JSON path `at`.
    pub fn parse(v: &Value, at: &str) -> Result<Self, Reply> {
        let Some(o) = v.as_object() else {
            return Err(bad(
                at,
                format!("`{at}` must be an object"),
                "`output` takes `path`, `pick`, `omit`, `map`, `missing`, `default`",
            ));
        };
        if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
            let hint = dsl::diagnostic::suggestion(k, KEYS)
                .map(|s| format!("{s} "))
                .unwrap_or_default()
                + "`output` takes: path, pick, omit, map, missing, default";
            return Err(bad(
                &format!("{at}/{k}"),
                format!("unknown key `{k}`"),
                &hint,
            ));
        }
        let path = match o.get("path") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(bad(
                    &format!("{at}/path"),
                    "`path` must be a string".into(),
                    "for example `\"result.rows[0].id\"`",
                ));
            }
        };
        let missing = match o.get("missing").map(|m| m.as_str()) {
            None if o.contains_key("default") => Missing::Default,
            None | Some(Some("error")) => Missing::Error,
            Some(Some("null" | "undefined")) => Missing::Null,
            Some(Some("empty")) => Missing::Empty,
            Some(Some("default")) => Missing::Default,
            Some(_) => {
                return Err(bad(
                    &format!("{at}/missing"),
                    "`missing` must be one of `error`, `null`, `empty`, `default`".into(),
                    "`error` (the default) refuses a missing path; the others put a value there",
                ));
            }
        };
        Ok(Output {
            path,
            pick: o
                .get("pick")
                .map(|p| names(p, &format!("{at}/pick")))
                .transpose()?,
            omit: o
                .get("omit")
                .map(|p| names(p, &format!("{at}/omit")))
                .transpose()?,
            map: o
                .get("map")
                .map(|m| Output::parse(m, &format!("{at}/map")).map(Box::new))
                .transpose()?,
            missing,
            default: o.get("default").cloned(),
        })
    }

    /// The value put where something is missing (when `missing` is not `error`).
    fn fallback(&self) -> Value {
        if let Some(d) = &self.default {
            return d.clone();
        }
        match self.missing {
            Missing::Empty if self.map.is_some() => json!([]),
            Missing::Empty => json!({}),
            _ => Value::Null,
        }
    }

    /// `v` shaped; `Err` says what was missing.
    pub fn apply(&self, v: &Value) -> Result<Value, String> {
        let mut cur = v.clone();
        if let Some(path) = self.path.as_deref().filter(|p| !p.trim().is_empty()) {
            cur = match get_path(&cur, path) {
                Some(x) => x.clone(),
                None if self.missing == Missing::Error => {
                    return Err(format!("the result has nothing at `{path}`"));
                }
                None => self.fallback(),
            };
        }
        if let (Some(keys), Value::Object(o)) = (&self.pick, &cur) {
            let picked: Map<String, Value> = keys
                .iter()
                .filter_map(|k| o.get(k).map(|x| (k.clone(), x.clone())))
                .collect();
            cur = Value::Object(picked);
        }
        if let (Some(keys), Value::Object(o)) = (&self.omit, &mut cur) {
            for k in keys {
                o.shift_remove(k);
            }
        }
        if let Some(map) = &self.map {
            cur = match &cur {
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|i| map.apply(i))
                        .collect::<Result<_, _>>()?,
                ),
                _ if self.missing == Missing::Error => {
                    return Err("`map` needs an array there".into());
                }
                _ => self.fallback(),
            };
        }
        Ok(cur)
    }
}

/// The value at `path` (`a.b[0].c`, or `a.b.0.c`) in `v`.
fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path
        .split(['.', '[', ']'])
        .map(|s| s.trim().trim_matches(['"', '\'']))
        .filter(|s| !s.is_empty())
    {
        cur = match (cur, seg.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i)?,
            (Value::Object(o), _) => o.get(seg)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// A checked `store_as`: the state key and scope the shaped result goes to.
#[derive(Debug, Clone)]
pub struct StoreAs {
    pub key: String,
    pub scope: String,
}

impl StoreAs {
    /// Checks `store_as` (a key, or `{key, scope}`) and `store_scope`.
    pub fn parse(v: &Value, store_scope: Option<&Value>) -> Result<Self, Reply> {
        let hint = "`store_as` is a state key, or `{key, scope}` with scope `persistent` (the default) or `session`";
        let (key, scope) = match v {
            Value::String(k) => (Some(k.clone()), store_scope),
            Value::Object(o) => {
                if let Some(k) = o.keys().find(|k| *k != "key" && *k != "scope") {
                    return Err(bad(
                        &format!("/store_as/{k}"),
                        format!("unknown key `{k}`"),
                        hint,
                    ));
                }
                (
                    o.get("key").and_then(Value::as_str).map(str::to_owned),
                    o.get("scope").or(store_scope),
                )
            }
            _ => (None, None),
        };
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(bad("/store_as", "`store_as` needs a key".into(), hint));
        };
        let scope = match scope.map(Value::as_str) {
            None | Some(Some("persistent")) => "persistent",
            Some(Some("session")) => "session",
            Some(_) => {
                return Err(bad(
                    "/store_scope",
                    "the scope of `store_as` must be `persistent` or `session`".into(),
                    hint,
                ));
            }
        };
        Ok(StoreAs {
            key,
            scope: scope.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(spec: Value) -> Output {
        Output::parse(&spec, "/output").expect("spec")
    }

    #[test]
    fn path_pick_omit_and_map() {
        let v = json!({"rows": [{"id": 1, "name": "a", "x": 0}, {"id": 2, "name": "b", "x": 0}], "n": 2});
        assert_eq!(
            out(json!({"path": "rows[1].name"})).apply(&v),
            Ok(json!("b"))
        );
        assert_eq!(out(json!({"path": "rows.0.id"})).apply(&v), Ok(json!(1)));
        assert_eq!(
            out(json!({"path": "rows", "map": {"pick": ["id"]}})).apply(&v),
            Ok(json!([{"id": 1}, {"id": 2}]))
        );
        assert_eq!(
            out(json!({"omit": ["rows"]})).apply(&v),
            Ok(json!({"n": 2}))
        );
        assert!(out(json!({"path": "nope"})).apply(&v).is_err());
        assert_eq!(
            out(json!({"path": "nope", "missing": "null"})).apply(&v),
            Ok(Value::Null)
        );
        assert_eq!(
            out(json!({"path": "nope", "missing": "empty"})).apply(&v),
            Ok(json!({}))
        );
        assert_eq!(
            out(json!({"path": "nope", "default": 7})).apply(&v),
            Ok(json!(7))
        );
        assert!(out(json!({"path": "n", "map": {}})).apply(&v).is_err());
        assert_eq!(
            out(json!({"path": "n", "map": {}, "missing": "empty"})).apply(&v),
            Ok(json!([]))
        );
    }

    #[test]
    fn bad_specs_are_refused_with_their_path() {
        for (spec, path) in [
            (json!({"pik": ["a"]}), "/output/pik"),
            (json!({"pick": "a"}), "/output/pick"),
            (json!({"missing": "skip"}), "/output/missing"),
            (json!({"map": {"path": 1}}), "/output/map/path"),
        ] {
            let e = Output::parse(&spec, "/output").expect_err("refused");
            assert_eq!(e.body["error"]["path"], path, "{spec}");
        }
        let s = StoreAs::parse(&json!("k"), None).expect("ok");
        assert_eq!((s.key.as_str(), s.scope.as_str()), ("k", "persistent"));
        let s = StoreAs::parse(&json!({"key": "k", "scope": "session"}), None).expect("ok");
        assert_eq!(s.scope, "session");
        assert!(StoreAs::parse(&json!("k"), Some(&json!("forever"))).is_err());
    }
}
