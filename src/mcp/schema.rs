//! What a tool takes: `ToolDesc` (a listed tool in plain data, which `mod.rs` turns into rmcp's `Tool`)
//! and `compact`, which keeps a property's schema small in the listing.

use serde_json::Value;

/// One listed tool.
#[derive(Debug, Clone)]
pub struct ToolDesc {
    pub name: String,
    pub title: String,
    pub description: String,
    pub input_schema: Value,
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

/// Keeps a property schema small in the tool list: its type (with item and value types) and enum.
/// Descriptions, bounds and formats are in the action's own schema (`help` shows it), which every call
/// is validated against.
pub fn compact(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "type" | "enum" | "const" | "items" | "additionalProperties"
                    )
                })
                .map(|(k, x)| match (k.as_str(), x) {
                    // an optional argument: `["string", "null"]` is listed as `"string"`
                    ("type", Value::Array(ts)) => {
                        let real: Vec<&Value> = ts.iter().filter(|t| *t != "null").collect();
                        match real.as_slice() {
                            [one] => (k.clone(), (*one).clone()),
                            _ => (k.clone(), x.clone()),
                        }
                    }
                    _ => (k.clone(), compact(x)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}
