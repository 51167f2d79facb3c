//! `notes`: a notebook the model can write to and read from.
//!
//! It provides two tools, backed by the task's slots so that other
//! processors can read the notes too:
//!
//! * `note_write {"key": string, "text": string}` stores `text` under
//!   slot `notes/<key>` and answers `saved note `<key>` (N chars)`;
//! * `note_read {"key": string}` answers the note's text, or an error that
//!   lists the keys there are.
//!
//! The list of keys lives in the slot `notes/.index` (a JSON array), which
//! is why keys may not start with a dot. At task-start, when `announce` is
//! on and the tools are offered, it adds one sentence about them to the
//! system prompt.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `announce` | true | mention the notebook in the system prompt |
//! | `max_note_chars` | 4000 | longest note accepted |

use std::collections::BTreeSet;

use kiln_guest::{config, slots, Conversation, Hook, Info, Processor, ToolSpec, Toolset, Verdict};
use serde::Deserialize;

/// The processor's name, as in its [`Info`].
pub const NAME: &str = "notes";
/// The prefix of every slot this processor writes.
pub const SLOT_PREFIX: &str = "notes/";
/// The slot that lists the keys.
pub const INDEX_SLOT: &str = "notes/.index";
/// The longest key accepted, in characters.
pub const MAX_KEY_CHARS: usize = 64;

/// The sentence added to the system prompt.
pub const ANNOUNCEMENT: &str =
    "You have a notebook: call note_write with {\"key\", \"text\"} to save a note \
     and note_read with {\"key\"} to read it back.";

/// The processor's config; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Mention the notebook in the system prompt.
    pub announce: bool,
    /// Longest note accepted, in characters.
    pub max_note_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            announce: true,
            max_note_chars: 4000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArguments {
    key: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArguments {
    key: String,
}

fn index() -> BTreeSet<String> {
    slots::get(INDEX_SLOT)
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn checked_key(key: &str) -> Result<&str, String> {
    let key = key.trim();
    if key.is_empty() {
        return Err("the note key is empty; give a short name such as \"plan\"".to_owned());
    }
    if key.starts_with('.') {
        return Err(format!("the note key `{key}` may not start with a dot"));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(format!(
            "the note key is longer than {MAX_KEY_CHARS} characters"
        ));
    }
    Ok(key)
}

/// The component.
#[derive(Default)]
pub struct Notes {
    config: Config,
}

impl Notes {
    fn write(&self, arguments: &str) -> Result<String, String> {
        let arguments: WriteArguments = serde_json::from_str(arguments).map_err(|error| {
            format!("note_write takes {{\"key\": string, \"text\": string}}: {error}")
        })?;
        let key = checked_key(&arguments.key)?;
        let chars = arguments.text.chars().count();
        if chars > self.config.max_note_chars {
            return Err(format!(
                "the note is {chars} characters long; the limit is {}. Shorten it or split it over several keys",
                self.config.max_note_chars
            ));
        }
        slots::set(&format!("{SLOT_PREFIX}{key}"), &arguments.text);
        let mut keys = index();
        if keys.insert(key.to_owned()) {
            slots::set(
                INDEX_SLOT,
                &serde_json::to_string(&keys).expect("strings always serialize"),
            );
        }
        Ok(format!("saved note `{key}` ({chars} chars)"))
    }

    fn read(&self, arguments: &str) -> Result<String, String> {
        let arguments: ReadArguments = serde_json::from_str(arguments)
            .map_err(|error| format!("note_read takes {{\"key\": string}}: {error}"))?;
        let key = checked_key(&arguments.key)?;
        slots::get(&format!("{SLOT_PREFIX}{key}")).ok_or_else(|| {
            let keys = index();
            if keys.is_empty() {
                format!("no note named `{key}`; there are no notes yet")
            } else {
                let keys: Vec<String> = keys.into_iter().collect();
                format!("no note named `{key}`; the notes are: {}", keys.join(", "))
            }
        })
    }
}

impl Processor for Notes {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION"))
            .hooks([Hook::TaskStart])
            .group("notes")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        let config: Config = config::parse(NAME, text)?;
        if config.max_note_chars == 0 {
            return Err(format!(
                "config for `{NAME}` is invalid: `max_note_chars` must be at least 1"
            ));
        }
        self.config = config;
        Ok(())
    }

    fn list_tools(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec::new(
                "note_write",
                "Save a note under a key (overwrites a note with the same key).",
                r#"{"type":"object","properties":{"key":{"type":"string","description":"a short name for the note"},"text":{"type":"string","description":"what to remember"}},"required":["key","text"],"additionalProperties":false}"#,
            ),
            ToolSpec::new(
                "note_read",
                "Read the note saved under a key.",
                r#"{"type":"object","properties":{"key":{"type":"string","description":"the note's name"}},"required":["key"],"additionalProperties":false}"#,
            ),
        ]
    }

    fn call_tool(&mut self, name: &str, arguments: &str) -> Result<String, String> {
        match name {
            "note_write" => self.write(arguments),
            "note_read" => self.read(arguments),
            other => Err(format!(
                "`{NAME}` provides note_write and note_read, not `{other}`"
            )),
        }
    }

    fn on_task_start(&mut self, conv: &Conversation<'_>, tools: &Toolset<'_>) -> Verdict {
        if self.config.announce && tools.all().iter().any(|tool| tool.name == "note_write") {
            let prompt = conv.system_prompt();
            if !prompt.contains(ANNOUNCEMENT) {
                let separator = if prompt.trim().is_empty() { "" } else { "\n\n" };
                conv.set_system_prompt(&format!("{}{separator}{ANNOUNCEMENT}", prompt.trim_end()));
            }
        }
        Verdict::Pass
    }
}

kiln_guest::export!(Notes);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_guest::testing::TestHost;

    #[test]
    fn writes_and_reads_notes_through_slots() {
        let mut host = TestHost::new();
        let mut notes = Notes::default();
        assert_eq!(
            host.call_tool(
                &mut notes,
                "note_write",
                r#"{"key": "plan", "text": "search, then buy"}"#
            ),
            Ok("saved note `plan` (16 chars)".to_owned())
        );
        assert_eq!(host.slot("notes/plan").as_deref(), Some("search, then buy"));
        assert_eq!(
            host.call_tool(&mut notes, "note_read", r#"{"key": " plan "}"#),
            Ok("search, then buy".to_owned())
        );
        host.call_tool(
            &mut notes,
            "note_write",
            r#"{"key": "budget", "text": "$50"}"#,
        )
        .unwrap();
        assert_eq!(
            host.slot(INDEX_SLOT).as_deref(),
            Some(r#"["budget","plan"]"#)
        );
        assert_eq!(
            host.call_tool(&mut notes, "note_read", r#"{"key": "size"}"#),
            Err("no note named `size`; the notes are: budget, plan".to_owned())
        );
        // Another processor's slot write is visible too.
        host.set_slot("notes/shared", "from elsewhere");
        assert_eq!(
            host.call_tool(&mut notes, "note_read", r#"{"key": "shared"}"#),
            Ok("from elsewhere".to_owned())
        );
    }

    #[test]
    fn bad_calls_get_errors_that_say_what_to_send() {
        let host = TestHost::new();
        let mut notes = Notes::default();
        let error = host
            .call_tool(&mut notes, "note_write", r#"{"key": "a"}"#)
            .unwrap_err();
        assert!(
            error.starts_with("note_write takes {\"key\": string, \"text\": string}"),
            "{error}"
        );
        let error = host
            .call_tool(&mut notes, "note_read", r#"{"key": ".index"}"#)
            .unwrap_err();
        assert!(error.contains("may not start with a dot"), "{error}");
        assert!(host
            .call_tool(&mut notes, "note_read", r#"{"key": ""}"#)
            .unwrap_err()
            .contains("empty"));
        assert_eq!(
            host.call_tool(&mut notes, "note_read", r#"{"key": "x"}"#)
                .unwrap_err(),
            "no note named `x`; there are no notes yet"
        );
        assert!(host
            .call_tool(&mut notes, "note_erase", "{}")
            .unwrap_err()
            .contains("not `note_erase`"));
    }

    #[test]
    fn long_notes_are_refused() {
        let host = TestHost::new();
        let mut notes = Notes::default();
        host.configure(&mut notes, r#"{"max_note_chars": 5}"#)
            .unwrap();
        let error = host
            .call_tool(
                &mut notes,
                "note_write",
                r#"{"key": "a", "text": "too long"}"#,
            )
            .unwrap_err();
        assert!(
            error.contains("8 characters long; the limit is 5"),
            "{error}"
        );
    }

    #[test]
    fn announces_itself_once_when_its_tools_are_offered() {
        let mut host = TestHost::new();
        let mut notes = Notes::default();
        let tools = host.list_tools(&notes);
        assert_eq!(
            tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["note_write", "note_read"]
        );
        for tool in &tools {
            serde_json::from_str::<serde_json::Value>(&tool.parameters)
                .expect("the schema is JSON");
        }
        host.system_prompt("You shop.").set_tools(tools);
        host.task_start(&mut notes);
        host.task_start(&mut notes);
        assert_eq!(
            host.current_system_prompt(),
            format!("You shop.\n\n{ANNOUNCEMENT}")
        );

        let mut quiet = TestHost::new();
        quiet.system_prompt("You shop.");
        quiet.task_start(&mut notes);
        assert_eq!(
            quiet.current_system_prompt(),
            "You shop.",
            "no tools offered, nothing announced"
        );
    }

    #[test]
    fn config_is_checked() {
        let host = TestHost::new();
        let mut notes = Notes::default();
        assert!(host
            .configure(&mut notes, r#"{"announce": "yes"}"#)
            .is_err());
        assert!(host
            .configure(&mut notes, r#"{"anounce": true}"#)
            .unwrap_err()
            .contains("unknown field `anounce`"));
    }
}
