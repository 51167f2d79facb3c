//! The wire format of the kiln bridge protocol, version 1: the hello line,
//! the requests, and the replies (docs/bridge-protocol.md).
//!
//! Parsing is strict about shape and lenient about extras: a reply must be a
//! JSON object with a boolean `ok`, a state reply must carry every field the
//! protocol names, and unknown fields are ignored so that bridges can add
//! their own. Every failure is a sentence that says what was expected and
//! quotes (a clipped copy of) what came instead.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::env::Split;

/// The protocol version this kiln speaks; a bridge must announce the same.
pub const PROTOCOL_VERSION: u64 = 1;

/// How much of a bad line an error message quotes.
const QUOTE_CHARS: usize = 200;

/// What a bridge says about itself in its first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The environment family, e.g. `twx`; the first part of every task id.
    pub env: String,
    /// What the bridge can serve (games, levels), for messages and listings.
    pub games: Vec<String>,
}

/// A request, one JSON line on the bridge's stdin.
#[derive(Clone, Debug, PartialEq)]
pub enum Request<'a> {
    Reset {
        task: &'a str,
        seed: u64,
    },
    Step {
        action: &'a str,
    },
    Tasks {
        split: Split,
    },
    /// An op without arguments outside the core protocol (`gold`, `bot_step`).
    Extra {
        op: &'a str,
    },
    Close,
}

impl Request<'_> {
    /// The op's name, for messages.
    pub fn op(&self) -> &str {
        match self {
            Request::Reset { .. } => "reset",
            Request::Step { .. } => "step",
            Request::Tasks { .. } => "tasks",
            Request::Extra { op } => op,
            Request::Close => "close",
        }
    }

    /// The request as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        let value = match self {
            Request::Reset { task, seed } => json!({ "op": "reset", "task": task, "seed": seed }),
            Request::Step { action } => json!({ "op": "step", "action": action }),
            Request::Tasks { split } => json!({ "op": "tasks", "split": split }),
            Request::Extra { op } => json!({ "op": op }),
            Request::Close => json!({ "op": "close" }),
        };
        value.to_string()
    }
}

/// A reply line, once it is known to be protocol JSON.
#[derive(Debug)]
pub enum Reply {
    /// `ok: true` and the other fields.
    Ok(Map<String, Value>),
    /// `ok: false`: the bridge refused, saying why.
    Refused(String),
}

/// The state of an episode after `reset` or `step`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct State {
    pub obs: String,
    /// The task description; required in a reply to `reset`.
    #[serde(default)]
    pub goal: Option<String>,
    /// The admissible actions, sorted.
    pub actions: Vec<String>,
    pub score: f64,
    pub done: bool,
    pub won: bool,
    pub lost: bool,
    /// The step budget; only read from a reply to `reset`.
    #[serde(default)]
    pub max_steps: Option<u32>,
}

/// `line`, clipped for quoting in an error message.
pub fn quote(line: &str) -> String {
    let line = line.trim_end();
    match line.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// Parse the first line a bridge prints. The error completes the sentence
/// "the bridge ...".
pub fn parse_hello(line: &str) -> Result<Hello, String> {
    let not_hello = || {
        format!(
            "did not start with a kiln bridge hello line (expected {{\"kiln_bridge\": {PROTOCOL_VERSION}, \"env\": ..., \
             \"games\": [...]}}); its first line was: {}",
            quote(line)
        )
    };
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else { return Err(not_hello()) };
    let Some(version) = fields.get("kiln_bridge") else { return Err(not_hello()) };
    match version.as_u64() {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return Err(format!(
                "speaks kiln bridge protocol version {other}, but this kiln speaks version {PROTOCOL_VERSION}; \
                 use a bridge written for version {PROTOCOL_VERSION}"
            ))
        }
        None => return Err(format!("announced `kiln_bridge: {version}`, which is not a protocol version number")),
    }
    let env = match fields.get("env") {
        Some(Value::String(env)) if !env.is_empty() && !env.contains('/') => env.clone(),
        _ => {
            return Err(format!(
                "has no `env` name (a non-empty string without `/`) in its hello line: {}",
                quote(line)
            ))
        }
    };
    let games = match fields.get("games") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(|g| g.as_str().map(str::to_string)).collect()
        }
        Some(_) => {
            return Err(format!("has a `games` field that is not a list of strings in its hello line: {}", quote(line)))
        }
    };
    Ok(Hello { env, games })
}

/// Parse a reply line. The error completes the sentence "the bridge ...".
pub fn parse_reply(line: &str, op: &str) -> Result<Reply, String> {
    let garbage = || format!("printed a line that is not a protocol reply in answer to `{op}`: {}", quote(line));
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(line) else { return Err(garbage()) };
    match fields.remove("ok") {
        Some(Value::Bool(true)) => Ok(Reply::Ok(fields)),
        Some(Value::Bool(false)) => {
            let error = match fields.get("error") {
                Some(Value::String(message)) => message.clone(),
                Some(other) => other.to_string(),
                None => "(no `error` given)".to_string(),
            };
            Ok(Reply::Refused(error))
        }
        _ => Err(garbage()),
    }
}

/// Decode the fields of an `ok` reply into `T`. The error completes the
/// sentence "the bridge ...".
pub fn decode<T: serde::de::DeserializeOwned>(fields: Map<String, Value>, op: &str) -> Result<T, String> {
    let text = Value::Object(fields.clone()).to_string();
    serde_json::from_value(Value::Object(fields))
        .map_err(|err| format!("sent a reply to `{op}` that does not fit the protocol ({err}): {}", quote(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_hello_is_accepted() {
        let hello = parse_hello(r#"{"kiln_bridge": 1, "env": "twx", "games": ["coin", "twc"]}"#).unwrap();
        assert_eq!(hello, Hello { env: "twx".into(), games: vec!["coin".into(), "twc".into()] });
        let bare = parse_hello(r#"{"kiln_bridge": 1, "env": "x"}"#).unwrap();
        assert!(bare.games.is_empty());
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let err = parse_hello(r#"{"kiln_bridge": 2, "env": "twx", "games": []}"#).unwrap_err();
        assert!(err.contains("protocol version 2") && err.contains("speaks version 1"), "{err}");
    }

    #[test]
    fn a_first_line_that_is_not_a_hello_is_quoted() {
        for line in ["Welcome to pygame!", r#"{"ok": true}"#, "[1, 2]"] {
            let err = parse_hello(line).unwrap_err();
            assert!(err.contains("did not start with a kiln bridge hello line") && err.contains(line), "{err}");
        }
        let err = parse_hello(r#"{"kiln_bridge": 1, "games": []}"#).unwrap_err();
        assert!(err.contains("no `env`"), "{err}");
        let err = parse_hello(r#"{"kiln_bridge": "one", "env": "x"}"#).unwrap_err();
        assert!(err.contains("not a protocol version number"), "{err}");
    }

    #[test]
    fn replies_are_ok_refused_or_garbage() {
        assert!(matches!(parse_reply(r#"{"ok": true, "obs": "hi"}"#, "step"), Ok(Reply::Ok(f)) if f["obs"] == "hi"));
        assert!(
            matches!(parse_reply(r#"{"ok": false, "error": "no such task"}"#, "reset"), Ok(Reply::Refused(e)) if e == "no such task")
        );
        let err = parse_reply("Traceback (most recent call last):", "step").unwrap_err();
        assert!(err.contains("in answer to `step`") && err.contains("Traceback"), "{err}");
        assert!(parse_reply(r#"{"ok": "yes"}"#, "step").is_err());
    }

    #[test]
    fn a_state_reply_must_have_every_field() {
        let Reply::Ok(fields) =
            parse_reply(r#"{"ok": true, "obs": "o", "score": 0, "done": false, "won": false, "lost": false}"#, "step")
                .unwrap()
        else {
            panic!("not ok")
        };
        let err = decode::<State>(fields, "step").unwrap_err();
        assert!(err.contains("missing field `actions`") && err.contains("`step`"), "{err}");
    }

    #[test]
    fn requests_are_one_json_line() {
        let parsed = |r: Request| serde_json::from_str::<Value>(&r.to_line()).unwrap();
        assert_eq!(
            parsed(Request::Reset { task: "coin/train/1", seed: 7 }),
            json!({"op": "reset", "task": "coin/train/1", "seed": 7})
        );
        assert_eq!(parsed(Request::Step { action: "take \"coin\"" }), json!({"op": "step", "action": "take \"coin\""}));
        assert_eq!(parsed(Request::Tasks { split: Split::Test }), json!({"op": "tasks", "split": "test"}));
        assert_eq!(parsed(Request::Extra { op: "gold" }), json!({"op": "gold"}));
        assert!(!Request::Step { action: "a\nb" }.to_line().contains('\n'));
    }

    #[test]
    fn long_lines_are_clipped_in_messages() {
        let long = "x".repeat(1000);
        assert_eq!(quote(&long).chars().count(), QUOTE_CHARS + 1);
    }
}
