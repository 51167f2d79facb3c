//! Canonical JSON: the bytes a harness id is the hash of.
//!
//! Object keys are sorted (by their UTF-8 bytes) at every depth, there is no
//! whitespace, and strings and numbers are written the way `serde_json`
//! writes them (shortest round-trip floats). The writer sorts by itself, so
//! the bytes do not depend on whether `serde_json` was built with
//! `preserve_order`.

use serde_json::{Map, Value};

use super::{ProcessorEntry, ToolPolicy};
use crate::sandbox::{FailurePolicy, Grants, Limits};
use crate::store::ObjectId;

/// The `format` field of a stored harness.
pub const HARNESS_FORMAT: &str = "kiln.harness/1";
/// The `format` field of a stored lineage record.
pub const LINEAGE_FORMAT: &str = "kiln.lineage/1";

/// Write `value` as canonical JSON.
pub fn to_canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(key).expect("a string always serializes"));
                out.push(b':');
                write(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("a JSON scalar always serializes")),
    }
}

/// A processor entry as JSON, every default written out.
pub fn entry_to_json(entry: &ProcessorEntry) -> Value {
    let limits = serde_json::to_value(&entry.limits).expect("limits serialize");
    let grants = serde_json::json!({
        "read": entry.grants.read.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "net": entry.grants.net,
    });
    let mut map = Map::new();
    map.insert("component".into(), Value::String(entry.component.to_hex()));
    map.insert("config".into(), Value::Object(entry.config.clone()));
    map.insert("limits".into(), limits);
    map.insert("grants".into(), grants);
    match entry.on_fault {
        FailurePolicy::Skip => {
            map.insert("on-fault".into(), "skip".into());
        }
        FailurePolicy::Abort => {
            map.insert("on-fault".into(), "abort".into());
        }
        FailurePolicy::Disable { after } => {
            map.insert("on-fault".into(), "disable".into());
            map.insert("after".into(), after.into());
        }
    }
    Value::Object(map)
}

/// Read a processor entry back from [`entry_to_json`]'s form. Missing fields
/// take their defaults, so hand-written JSON (an edit) may leave them out.
pub fn entry_from_json(value: &Value) -> Result<ProcessorEntry, String> {
    let map = value.as_object().ok_or("a processor entry must be a JSON object")?;
    for key in map.keys() {
        if !["component", "config", "limits", "grants", "on-fault", "after"].contains(&key.as_str()) {
            return Err(format!("unknown key `{key}` in a processor entry"));
        }
    }
    let component = map
        .get("component")
        .and_then(Value::as_str)
        .ok_or("a processor entry needs `component`, a 64-digit component id")?
        .parse::<ObjectId>()
        .map_err(|e| e.to_string())?;
    let config = match map.get("config") {
        None => Map::new(),
        Some(Value::Object(c)) => c.clone(),
        Some(_) => return Err("`config` must be a JSON object".into()),
    };
    let limits: Limits = match map.get("limits") {
        None => Limits::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("`limits`: {e}"))?,
    };
    let grants: Grants = match map.get("grants") {
        None => Grants::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("`grants`: {e}"))?,
    };
    let after = match map.get("after") {
        None => None,
        Some(v) => Some(v.as_u64().filter(|n| (1..=u32::MAX as u64).contains(n)).ok_or("`after` must be a whole number of at least 1")? as u32),
    };
    let on_fault = match (map.get("on-fault").map(|v| v.as_str()), after) {
        (None | Some(Some("skip")), None) => FailurePolicy::Skip,
        (Some(Some("abort")), None) => FailurePolicy::Abort,
        (Some(Some("disable")), Some(after)) => FailurePolicy::Disable { after },
        (Some(Some("disable")), None) => return Err("`on-fault` = \"disable\" needs `after`".into()),
        (_, Some(_)) => return Err("`after` applies only with `on-fault` = \"disable\"".into()),
        (Some(other), None) => return Err(format!("`on-fault` must be \"skip\", \"abort\" or \"disable\", not {}", other.map(|s| format!("`{s}`")).unwrap_or("a non-string".into()))),
    };
    limits.validate().map_err(|e| e.to_string())?;
    let mut entry = ProcessorEntry { component, config, limits, grants, on_fault };
    entry.normalize();
    Ok(entry)
}

/// The whole harness as a JSON value (see [`to_canonical`] for the bytes).
pub fn harness_to_json<'a>(system: &str, tools: &ToolPolicy, processors: impl IntoIterator<Item = &'a ProcessorEntry>) -> Value {
    serde_json::json!({
        "format": HARNESS_FORMAT,
        "system": system,
        "tools": { "deny": tools.deny, "text_actions": tools.text_actions },
        "processors": processors.into_iter().map(entry_to_json).collect::<Vec<_>>(),
    })
}

/// The parts of a stored harness, in stored (pipeline) order.
pub struct Parts {
    pub system: String,
    pub tools: ToolPolicy,
    pub entries: Vec<ProcessorEntry>,
}

/// Read a stored harness back.
pub fn harness_from_json(bytes: &[u8]) -> Result<Parts, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let map = value.as_object().ok_or("not a JSON object")?;
    match map.get("format").and_then(Value::as_str) {
        Some(HARNESS_FORMAT) => {}
        Some(other) => return Err(format!("its format is `{other}`, not `{HARNESS_FORMAT}`")),
        None => return Err(format!("it has no `format` field (a harness has `\"format\":\"{HARNESS_FORMAT}\"`)")),
    }
    let system = map.get("system").and_then(Value::as_str).ok_or("`system` is missing or not a string")?.to_string();
    let tools = map.get("tools").and_then(Value::as_object).ok_or("`tools` is missing or not an object")?;
    let deny = tools
        .get("deny")
        .and_then(Value::as_array)
        .ok_or("`tools.deny` is missing or not an array")?
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or("`tools.deny` holds a non-string"))
        .collect::<Result<Vec<_>, _>>()?;
    let text_actions = tools.get("text_actions").and_then(Value::as_bool).ok_or("`tools.text_actions` is missing or not a boolean")?;
    let entries = map
        .get("processors")
        .and_then(Value::as_array)
        .ok_or("`processors` is missing or not an array")?
        .iter()
        .enumerate()
        .map(|(i, v)| entry_from_json(v).map_err(|e| format!("processor {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Parts { system, tools: ToolPolicy::new(deny, text_actions), entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_at_every_depth_and_there_is_no_whitespace() {
        let v = serde_json::json!({"b": {"z": 1, "a": [true, null, {"y": "x", "c": 1.5}]}, "a": "q\"uote"});
        assert_eq!(String::from_utf8(to_canonical(&v)).unwrap(), r#"{"a":"q\"uote","b":{"a":[true,null,{"c":1.5,"y":"x"}],"z":1}}"#);
    }

    #[test]
    fn entry_round_trips_with_defaults_written_out() {
        let entry = ProcessorEntry::new(ObjectId::of(b"c"));
        let json = entry_to_json(&entry);
        let text = String::from_utf8(to_canonical(&json)).unwrap();
        assert!(text.contains(r#""on-fault":"skip""#), "{text}");
        assert!(text.contains(r#""fuel":10000000"#), "{text}");
        assert_eq!(entry_from_json(&json).unwrap(), entry);
    }

    #[test]
    fn entry_from_json_refuses_what_it_cannot_mean() {
        let id = ObjectId::of(b"c").to_hex();
        let bad = |v: Value| entry_from_json(&v).unwrap_err();
        assert!(bad(serde_json::json!({"component": id, "on-fault": "disable"})).contains("needs `after`"));
        assert!(bad(serde_json::json!({"component": id, "after": 2})).contains("only with"));
        assert!(bad(serde_json::json!({"component": id, "limits": {"fuel": 1}})).contains("fuel"));
        assert!(bad(serde_json::json!({"component": id, "confg": {}})).contains("unknown key `confg`"));
    }
}
