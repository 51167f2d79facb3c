//! Tool calling in plain text, for models without native tool calling.
//!
//! The format is a line protocol a model can follow from instructions alone:
//!
//! ```text
//! I will look it up.
//! Action: search {"query": "wasm components"}
//! Action: open {"path": "README.md"}
//! ```
//!
//! - **Prompt.** [`render_appendix`] lists the tools (name, description,
//!   JSON Schema) and explains the format; it is appended to the system
//!   prompt.
//! - **Reply.** [`parse_reply`] finds every line that starts with `Action:`
//!   (after optional indentation), takes the next word as the tool name and
//!   the JSON value that follows as the arguments. The value may span lines.
//!   If it is not valid JSON, the rest of the line is kept verbatim as the
//!   arguments: [`ToolCall::arguments`] may be malformed, and processors
//!   repair it rather than the parser guessing. No arguments means `{}`.
//!   Everything that is not an action is the reply's text.
//! - **History.** Earlier calls and their results must be shown to the model
//!   in the same format: [`lower_request`] rewrites assistant messages with
//!   calls into `Action:` lines and tool messages into user messages that
//!   start with `Observation`, and drops the native tool list.
//! - **Ids.** Parsed calls get ids derived from a hash of the reply and the
//!   call's position (`act-1a2b3c4d-0`), so they are deterministic and do not
//!   repeat across steps.
//!
//! [`TextActions`] wraps any [`Model`] with this protocol; a backend config
//! that says `tools = "text"` is built with this wrapper.

use std::collections::HashMap;

use super::{BoxFuture, Model, ModelError, ModelRequest, ModelResponse};
use crate::chat::{Message, Role, ToolCall, ToolSpec};

/// The marker that starts an action line.
pub const ACTION_PREFIX: &str = "Action:";

/// The system prompt appendix that teaches the format and lists `tools`.
/// Empty when there are no tools.
pub fn render_appendix(tools: &[ToolSpec]) -> String {
    if tools.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "# Tools\n\n\
         You can call the tools listed below. To call one, write a line that starts with \
         `Action:`, then the tool's name, then its arguments as one JSON object, for example:\n\n",
    );
    let example = &tools[0].name;
    out.push_str(&format!("Action: {example} {{\"argument\": \"value\"}}\n\n"));
    out.push_str(
        "Write one `Action:` line per call; you may make several calls in one reply. \
         Each result comes back in the next message as an `Observation`. \
         When you need no tool, answer in plain text with no `Action:` line.\n\n\
         Available tools:\n",
    );
    for tool in tools {
        out.push_str(&format!("\n## {}\n", tool.name));
        if !tool.description.trim().is_empty() {
            out.push_str(tool.description.trim());
            out.push('\n');
        }
        out.push_str(&format!("Arguments (JSON Schema): {}\n", tool.parameters));
    }
    out
}

/// A reply split into its prose and its actions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedReply {
    /// The reply without its action lines, trimmed.
    pub text: String,
    /// The actions, in order.
    pub calls: Vec<ToolCall>,
}

/// Split a model's reply into prose and tool calls (see the module docs for
/// the rules).
pub fn parse_reply(reply: &str) -> ParsedReply {
    let id_stem = blake3::hash(reply.as_bytes()).to_hex();
    let id_stem = &id_stem.as_str()[..8];
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut rest = reply;
    while !rest.is_empty() {
        let line_end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let line = &rest[..line_end];
        let Some(after_prefix) = line.trim_start().strip_prefix(ACTION_PREFIX) else {
            text.push_str(line);
            rest = &rest[line_end..];
            continue;
        };
        let after_prefix = after_prefix.trim_start_matches([' ', '\t']);
        let name_len =
            after_prefix.find(|c: char| c.is_whitespace() || c == '{' || c == '[').unwrap_or(after_prefix.len());
        let name = &after_prefix[..name_len];
        if name.is_empty() {
            // "Action:" with no tool name is prose, not a call.
            text.push_str(line);
            rest = &rest[line_end..];
            continue;
        }
        // Arguments start after the name, on this line; a JSON value may run
        // on over later lines, so it is parsed from the rest of the reply.
        let args_on_line = after_prefix[name_len..].trim_start_matches([' ', '\t']);
        let args_offset = line.len() - args_on_line.len();
        let args = &rest[args_offset..];
        let args_line_len = args.find('\n').unwrap_or(args.len());
        let (arguments, consumed) = if args[..args_line_len].trim().is_empty() {
            ("{}".to_owned(), line_end)
        } else {
            let mut values = serde_json::Deserializer::from_str(args).into_iter::<serde_json::Value>();
            match values.next() {
                Some(Ok(_)) => {
                    let json_len = values.byte_offset();
                    // Skip to the end of the line the value ends on; trailing
                    // words there are dropped with the action.
                    let after = &args[json_len..];
                    let tail = after.find('\n').map_or(after.len(), |i| i + 1);
                    (args[..json_len].to_owned(), args_offset + json_len + tail)
                }
                _ => (args[..args_line_len].trim_end().to_owned(), line_end),
            }
        };
        calls.push(ToolCall { id: format!("act-{id_stem}-{}", calls.len()), name: name.to_owned(), arguments });
        rest = &rest[consumed..];
    }
    ParsedReply { text: text.trim().to_owned(), calls }
}

/// `calls` as `Action:` lines, one per call.
pub fn render_calls(calls: &[ToolCall]) -> String {
    calls
        .iter()
        .map(|call| format!("{ACTION_PREFIX} {} {}", call.name, call.arguments.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rewrite `request` for a model that only reads and writes text: the tool
/// list moves into the system prompt, earlier calls become `Action:` lines,
/// and tool results become user messages starting with `Observation`.
pub fn lower_request(request: &ModelRequest) -> ModelRequest {
    let appendix = render_appendix(&request.tools);
    let system = match (request.system.is_empty(), appendix.is_empty()) {
        (_, true) => request.system.clone(),
        (true, false) => appendix,
        (false, false) => format!("{}\n\n{appendix}", request.system),
    };
    let mut names: HashMap<&str, &str> = HashMap::new();
    let messages = request
        .messages
        .iter()
        .map(|message| match message.role {
            Role::Assistant if !message.calls.is_empty() => {
                for call in &message.calls {
                    names.insert(&call.id, &call.name);
                }
                let actions = render_calls(&message.calls);
                let content =
                    if message.content.is_empty() { actions } else { format!("{}\n{actions}", message.content) };
                Message::assistant(content, Vec::new())
            }
            Role::Tool => {
                let id = message.call_id.as_deref().unwrap_or("");
                let header = match names.get(id) {
                    Some(name) => format!("Observation from {name}:"),
                    None => "Observation:".to_owned(),
                };
                Message::user(format!("{header}\n{}", message.content))
            }
            _ => message.clone(),
        })
        .collect();
    ModelRequest { system, messages, tools: Vec::new(), ..request.clone() }
}

/// Turn a text reply to a [`lower_request`]ed request back into tool calls.
/// Without tools on offer, the reply is left alone.
pub fn lift_response(request: &ModelRequest, mut response: ModelResponse) -> ModelResponse {
    if request.tools.is_empty() {
        return response;
    }
    let parsed = parse_reply(&response.text);
    response.text = parsed.text;
    response.calls.extend(parsed.calls);
    response
}

/// Any model, speaking the text action format instead of native tool calls.
pub struct TextActions {
    inner: Box<dyn Model>,
}

impl TextActions {
    /// Wrap `inner`.
    pub fn new(inner: Box<dyn Model>) -> Self {
        TextActions { inner }
    }
}

impl Model for TextActions {
    fn describe(&self) -> String {
        format!("{} (text actions)", self.inner.describe())
    }

    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
        Box::pin(async move {
            let lowered = lower_request(request);
            let response = self.inner.complete(&lowered).await?;
            Ok(lift_response(request, response))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::models::http::loopback::{fast, Server, Step};
    use crate::models::openai::{OpenAi, OpenAiConfig};

    fn names_and_args(parsed: &ParsedReply) -> Vec<(&str, &str)> {
        parsed.calls.iter().map(|c| (c.name.as_str(), c.arguments.as_str())).collect()
    }

    #[test]
    fn several_actions_with_prose_around_them() {
        let reply =
            "I'll search first.\nAction: search {\"query\": \"wasm\"}\n  Action: open {\"path\": \"a.txt\"}\nDone.";
        let parsed = parse_reply(reply);
        assert_eq!(names_and_args(&parsed), vec![("search", r#"{"query": "wasm"}"#), ("open", r#"{"path": "a.txt"}"#)]);
        assert_eq!(parsed.text, "I'll search first.\nDone.");
        assert_ne!(parsed.calls[0].id, parsed.calls[1].id);
        assert_eq!(parse_reply(reply), parsed, "ids are deterministic");
        assert_ne!(parse_reply("Action: a {}").calls[0].id, parse_reply("Action: b {}").calls[0].id);
    }

    #[test]
    fn arguments_may_span_lines_or_be_absent() {
        let reply = "Action: write {\n  \"path\": \"x\",\n  \"text\": \"a\\nb\"\n}\nAction: list\nAction: peek{\"n\":1} trailing words";
        let parsed = parse_reply(reply);
        assert_eq!(
            names_and_args(&parsed),
            vec![("write", "{\n  \"path\": \"x\",\n  \"text\": \"a\\nb\"\n}"), ("list", "{}"), ("peek", r#"{"n":1}"#)]
        );
        assert_eq!(parsed.text, "");
    }

    #[test]
    fn malformed_json_is_kept_verbatim() {
        let parsed = parse_reply("Action: search {\"query\": \"wasm\", }\nAction: open {'path': 'a'}\nmore text");
        assert_eq!(names_and_args(&parsed), vec![("search", r#"{"query": "wasm", }"#), ("open", "{'path': 'a'}")]);
        assert_eq!(parsed.text, "more text");
        let unterminated = parse_reply("Action: search {\"query\": \"wa\nThe end.");
        assert_eq!(names_and_args(&unterminated), vec![("search", r#"{"query": "wa"#)]);
        assert_eq!(unterminated.text, "The end.");
    }

    #[test]
    fn no_action_leaves_the_text_alone() {
        let reply = "The answer is 42.\nNo Action: needed here.\nAction:\n";
        let parsed = parse_reply(reply);
        assert!(parsed.calls.is_empty());
        assert_eq!(parsed.text, reply.trim());
        assert_eq!(parse_reply(""), ParsedReply::default());
    }

    #[test]
    fn appendix_lists_tools_and_the_format() {
        assert_eq!(render_appendix(&[]), "");
        let tools = [
            ToolSpec::new("search", "Search the web.", json!({"type": "object"})),
            ToolSpec::new("open", "", json!({"type": "object", "required": ["path"]})),
        ];
        let appendix = render_appendix(&tools);
        for needle in
            ["Action: search {", "## search\nSearch the web.\n", "## open\nArguments (JSON Schema): {", "\"required\""]
        {
            assert!(appendix.contains(needle), "missing {needle:?} in:\n{appendix}");
        }
    }

    #[test]
    fn rendered_calls_parse_back() {
        let calls = vec![
            ToolCall { id: "1".into(), name: "a".into(), arguments: r#"{"x": [1, 2]}"#.into() },
            ToolCall { id: "2".into(), name: "b".into(), arguments: "{}".into() },
        ];
        let parsed = parse_reply(&render_calls(&calls));
        assert_eq!(names_and_args(&parsed), vec![("a", r#"{"x": [1, 2]}"#), ("b", "{}")]);
    }

    #[test]
    fn lowering_rewrites_history_into_text() {
        let call = ToolCall { id: "c1".into(), name: "search".into(), arguments: r#"{"q":"x"}"#.into() };
        let request = ModelRequest {
            system: "Be useful.".into(),
            messages: vec![
                Message::user("go"),
                Message::assistant("Looking.", vec![call]),
                Message::tool("c1", "found 2"),
                Message::tool("unknown", "stray"),
            ],
            tools: vec![ToolSpec::new("search", "Search.", json!({}))],
            seed: 9,
            ..Default::default()
        };
        let lowered = lower_request(&request);
        assert!(lowered.tools.is_empty());
        assert!(lowered.system.starts_with("Be useful.\n\n# Tools"), "{}", lowered.system);
        assert_eq!(lowered.seed, 9);
        assert_eq!(
            lowered.messages,
            vec![
                Message::user("go"),
                Message::assistant("Looking.\nAction: search {\"q\":\"x\"}", Vec::new()),
                Message::user("Observation from search:\nfound 2"),
                Message::user("Observation:\nstray"),
            ]
        );
    }

    #[tokio::test]
    async fn a_backend_in_text_mode_sends_no_tools_and_parses_actions() {
        let reply =
            json!({"choices": [{"message": {"content": "Sure.\nAction: search {\"query\": \"kiln\"}"}}]}).to_string();
        let server = Server::start(vec![Step::json(200, &reply)]).await;
        let mut config = OpenAiConfig::new("plain-model", format!("{}/v1", server.base));
        config.http = fast(1);
        let model = TextActions::new(Box::new(OpenAi::with_api_key(config, None).unwrap()));
        let request = ModelRequest {
            system: "Sys.".into(),
            messages: vec![Message::user("find kiln")],
            tools: vec![ToolSpec::new("search", "Search.", json!({"type": "object"}))],
            ..Default::default()
        };
        let response = model.complete(&request).await.unwrap();
        assert_eq!(response.text, "Sure.");
        assert_eq!(response.calls.len(), 1);
        assert_eq!(
            (response.calls[0].name.as_str(), response.calls[0].arguments.as_str()),
            ("search", r#"{"query": "kiln"}"#)
        );
        assert!(model.describe().ends_with("(text actions)"));

        let body = &server.requests()[0].body;
        assert_eq!(body.get("tools"), None, "text mode sends no native tools");
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with("Sys.\n\n# Tools") && system.contains("Action: search"), "{system}");
    }
}
