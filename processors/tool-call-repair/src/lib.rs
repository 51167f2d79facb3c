//! `tool-call-repair`: fixes the tool calls a model got almost right.
//!
//! At task-start it remembers the tools offered to the model (names, and the
//! parameter name of tools that take exactly one). At after-model it:
//!
//! * repairs malformed JSON arguments: single quotes, trailing commas,
//!   missing closing braces and quotes, unquoted keys, prose or code fences
//!   around the JSON, Python `True`/`False`/`None`; a bare value for a
//!   one-parameter tool becomes `{"<parameter>": value}`;
//! * maps an unknown tool name to the known tool it most likely meant
//!   (same letters ignoring case and punctuation, a small edit distance, or
//!   one name containing the other), only when exactly one tool fits;
//! * gives calls without an id a fresh one (`repair-<step>-<n>`);
//! * when the response has no calls but its text writes one for a known tool,
//!   as `search[{"query": "red shoes"}]` or `search({...})`, turns it into a
//!   real call (the text is kept).
//!
//! Well-formed calls to known tools pass untouched. Every change is logged.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `map_names` | true | map unknown tool names to the nearest known tool |
//! | `text_calls` | true | turn calls written as text into calls |
//!
//! State (hot swap): the remembered tools, as JSON.

pub mod repair;

use kiln_guest::{
    config, task, Call, Conversation, Hook, Info, Level, Processor, Response, ToolSpec, Toolset,
    Verdict,
};
use serde::{Deserialize, Serialize};

use crate::repair::{calls_in_text, nearest_tool, repair_arguments, ArgumentRepair};

/// The processor's name, as in its [`Info`].
pub const NAME: &str = "tool-call-repair";

/// The processor's config; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Map unknown tool names to the nearest known tool.
    pub map_names: bool,
    /// Turn calls written as text into calls.
    pub text_calls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            map_names: true,
            text_calls: true,
        }
    }
}

/// A tool seen at task-start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownTool {
    /// Its name.
    pub name: String,
    /// The name of its only parameter, when it has exactly one.
    pub single_parameter: Option<String>,
}

impl KnownTool {
    /// Reads what matters from a tool spec.
    pub fn from_spec(spec: &ToolSpec) -> Self {
        KnownTool {
            name: spec.name.clone(),
            single_parameter: single_parameter(&spec.parameters),
        }
    }
}

/// The only property of a JSON Schema (or its only required one).
fn single_parameter(schema: &str) -> Option<String> {
    let schema: serde_json::Value = serde_json::from_str(schema).ok()?;
    if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
        if properties.len() == 1 {
            return properties.keys().next().cloned();
        }
    }
    match schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
    {
        Some([only]) => only.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The repairs, as a plain type over calls.
#[derive(Debug, Clone, Default)]
pub struct Repairer {
    config: Config,
    tools: Vec<KnownTool>,
    names: Vec<String>,
}

/// What [`Repairer::repair_calls`] changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repaired {
    /// The calls after repair.
    pub calls: Vec<Call>,
    /// One line per change, for the log.
    pub changes: Vec<String>,
}

impl Repairer {
    /// A repairer that knows no tools yet.
    pub fn new(config: Config) -> Self {
        Repairer {
            config,
            tools: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Remembers the tools offered to the model.
    pub fn learn_tools(&mut self, tools: Vec<KnownTool>) {
        self.names = tools.iter().map(|tool| tool.name.clone()).collect();
        self.tools = tools;
    }

    /// The tools remembered.
    pub fn tools(&self) -> &[KnownTool] {
        &self.tools
    }

    fn single_parameter_of(&self, name: &str) -> Option<&str> {
        self.tools
            .iter()
            .find(|tool| tool.name == name)
            .and_then(|tool| tool.single_parameter.as_deref())
    }

    /// Repairs the calls of a response; `step` makes fresh call ids unique.
    pub fn repair_calls(&self, calls: &[Call], step: u32) -> Repaired {
        let mut repaired = Repaired {
            calls: calls.to_vec(),
            changes: Vec::new(),
        };
        for (index, call) in repaired.calls.iter_mut().enumerate() {
            if self.config.map_names && !self.names.is_empty() {
                if let Some(known) = nearest_tool(&call.name, &self.names) {
                    repaired
                        .changes
                        .push(format!("renamed tool `{}` to `{known}`", call.name));
                    call.name = known.to_owned();
                }
            }
            match repair_arguments(&call.arguments, self.single_parameter_of(&call.name)) {
                ArgumentRepair::WellFormed => {}
                ArgumentRepair::Repaired(arguments) => {
                    repaired.changes.push(format!(
                        "repaired the arguments of `{}`: {:?} -> {arguments}",
                        call.name, call.arguments
                    ));
                    call.arguments = arguments;
                }
                ArgumentRepair::Unrepairable => repaired.changes.push(format!(
                    "left the arguments of `{}` as they are (no JSON object found): {:?}",
                    call.name, call.arguments
                )),
            }
            if call.id.trim().is_empty() {
                call.id = format!("repair-{step}-{index}");
                repaired.changes.push(format!(
                    "gave the call to `{}` the id `{}`",
                    call.name, call.id
                ));
            }
        }
        repaired
    }

    /// Calls written in `text` for known tools, with repaired arguments.
    pub fn calls_from_text(&self, text: &str, step: u32) -> Vec<Call> {
        if !self.config.text_calls {
            return Vec::new();
        }
        calls_in_text(text, &self.names)
            .into_iter()
            .enumerate()
            .filter_map(|(index, found)| {
                let arguments =
                    match repair_arguments(&found.arguments, self.single_parameter_of(&found.name))
                    {
                        ArgumentRepair::WellFormed => found.arguments.trim().to_owned(),
                        ArgumentRepair::Repaired(arguments) => arguments,
                        ArgumentRepair::Unrepairable => return None,
                    };
                Some(Call::new(
                    format!("repair-{step}-{index}"),
                    found.name,
                    arguments,
                ))
            })
            .collect()
    }
}

/// The component: [`Repairer`] at task-start and after-model.
#[derive(Default)]
pub struct ToolCallRepair {
    repairer: Repairer,
}

impl Processor for ToolCallRepair {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION"))
            .hooks([Hook::TaskStart, Hook::AfterModel])
            .group("repair")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        let tools = self.repairer.tools.clone();
        self.repairer = Repairer::new(config::parse(NAME, text)?);
        self.repairer.learn_tools(tools);
        Ok(())
    }

    fn save_state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.repairer.tools).expect("tool names always serialize")
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let tools: Vec<KnownTool> = serde_json::from_slice(state).map_err(|error| {
            format!("`{NAME}` cannot load this state (expected a JSON list of {{\"name\", \"single_parameter\"}}): {error}")
        })?;
        self.repairer.learn_tools(tools);
        Ok(())
    }

    fn on_task_start(&mut self, _conv: &Conversation<'_>, tools: &Toolset<'_>) -> Verdict {
        self.repairer
            .learn_tools(tools.all().iter().map(KnownTool::from_spec).collect());
        Verdict::Pass
    }

    fn on_after_model(&mut self, _conv: &Conversation<'_>, response: &Response<'_>) -> Verdict {
        let step = task().step;
        let calls = response.calls();
        if calls.is_empty() {
            let found = self.repairer.calls_from_text(&response.text(), step);
            if !found.is_empty() {
                let names: Vec<&str> = found.iter().map(|call| call.name.as_str()).collect();
                kiln_guest::log(
                    Level::Info,
                    &format!("turned text into calls: {}", names.join(", ")),
                );
                response.set_calls(&found);
            }
            return Verdict::Pass;
        }
        let repaired = self.repairer.repair_calls(&calls, step);
        for change in &repaired.changes {
            kiln_guest::log(Level::Info, change);
        }
        if repaired.calls != calls {
            response.set_calls(&repaired.calls);
        }
        Verdict::Pass
    }
}

kiln_guest::export!(ToolCallRepair);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_guest::testing::TestHost;

    fn shop_tools() -> Vec<ToolSpec> {
        vec![
            ToolSpec::new(
                "search",
                "Search products",
                r#"{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}"#,
            ),
            ToolSpec::new(
                "click",
                "Click an element",
                r#"{"type":"object","properties":{"id":{"type":"integer"},"double":{"type":"boolean"}},"required":["id"]}"#,
            ),
        ]
    }

    fn started() -> (TestHost, ToolCallRepair) {
        let mut host = TestHost::new();
        host.set_tools(shop_tools()).user("Goal: buy red shoes");
        let mut processor = ToolCallRepair::default();
        host.configure(&mut processor, "{}").unwrap();
        assert_eq!(host.task_start(&mut processor), Verdict::Pass);
        (host, processor)
    }

    #[test]
    fn learns_tools_and_their_single_parameters() {
        let (_, processor) = started();
        assert_eq!(
            processor.repairer.tools(),
            [
                KnownTool {
                    name: "search".into(),
                    single_parameter: Some("query".into())
                },
                KnownTool {
                    name: "click".into(),
                    single_parameter: Some("id".into())
                },
            ]
        );
    }

    #[test]
    fn well_formed_calls_pass_untouched() {
        let (mut host, mut processor) = started();
        let calls = vec![Call::new("c1", "search", r#"{ "query" : "red shoes" }"#)];
        let outcome = host.after_model(&mut processor, "", calls.clone());
        assert_eq!(outcome.calls, calls);
        assert!(host.logs().is_empty());
    }

    #[test]
    fn repairs_arguments_and_names_together() {
        let (mut host, mut processor) = started();
        let outcome = host.after_model(
            &mut processor,
            "",
            vec![
                Call::new("c1", "Search", "{'query': 'red shoes',}"),
                Call::new("c2", "clik", "{id: 3, double: False"),
            ],
        );
        assert_eq!(
            outcome.calls,
            [
                Call::new("c1", "search", r#"{"query":"red shoes"}"#),
                Call::new("c2", "click", r#"{"double":false,"id":3}"#),
            ]
        );
        assert_eq!(outcome.verdict, Verdict::Pass);
        let logs = host.logs();
        assert!(
            logs.iter()
                .any(|(_, line)| line == "renamed tool `clik` to `click`"),
            "{logs:?}"
        );
    }

    #[test]
    fn a_bare_value_fills_the_only_parameter() {
        let (mut host, mut processor) = started();
        let outcome = host.after_model(
            &mut processor,
            "",
            vec![Call::new("c1", "search", "red shoes")],
        );
        assert_eq!(outcome.calls[0].arguments, r#"{"query":"red shoes"}"#);
    }

    #[test]
    fn calls_without_ids_get_fresh_ones() {
        let (mut host, mut processor) = started();
        host.set_step(3);
        let outcome = host.after_model(
            &mut processor,
            "",
            vec![Call::new("", "search", r#"{"query":"a"}"#)],
        );
        assert_eq!(outcome.calls[0].id, "repair-3-0");
    }

    #[test]
    fn calls_written_as_text_become_calls() {
        let (mut host, mut processor) = started();
        host.set_step(2);
        let text = r#"Action: search[{"query": "red shoes"}]"#;
        let outcome = host.after_model(&mut processor, text, vec![]);
        assert_eq!(
            outcome.calls,
            [Call::new(
                "repair-2-0",
                "search",
                r#"{"query": "red shoes"}"#
            )]
        );
        assert_eq!(outcome.text, text, "the text is kept");
        let outcome = host.after_model(&mut processor, "click({'id': 7})", vec![]);
        assert_eq!(
            outcome.calls,
            [Call::new("repair-2-0", "click", r#"{"id":7}"#)]
        );
        let outcome = host.after_model(&mut processor, "search[red shoes]", vec![]);
        assert_eq!(outcome.calls[0].arguments, r#"{"query":"red shoes"}"#);
    }

    #[test]
    fn a_final_answer_without_calls_stays_a_final_answer() {
        let (mut host, mut processor) = started();
        let outcome = host.after_model(&mut processor, "I bought the red shoes. Done.", vec![]);
        assert!(outcome.calls.is_empty());
        let outcome = host.after_model(&mut processor, "teleport[{\"to\": 1}]", vec![]);
        assert!(
            outcome.calls.is_empty(),
            "only known tools are called from text"
        );
    }

    #[test]
    fn config_switches_features_off() {
        let (mut host, mut processor) = started();
        host.configure(
            &mut processor,
            r#"{"map_names": false, "text_calls": false}"#,
        )
        .unwrap();
        let outcome = host.after_model(&mut processor, "search[{\"query\": \"x\"}]", vec![]);
        assert!(outcome.calls.is_empty());
        let outcome = host.after_model(&mut processor, "", vec![Call::new("c", "Search", "{}")]);
        assert_eq!(outcome.calls[0].name, "Search");
        let error = host
            .configure(&mut processor, r#"{"map_tools": true}"#)
            .unwrap_err();
        assert!(error.contains("unknown field `map_tools`"), "{error}");
    }

    #[test]
    fn state_carries_the_known_tools_to_a_successor() {
        let (host, processor) = started();
        let state = host.save_state(&processor);
        let mut successor = ToolCallRepair::default();
        host.load_state(&mut successor, &state).unwrap();
        assert_eq!(successor.repairer.tools(), processor.repairer.tools());
        assert!(host
            .load_state(&mut successor, b"{not json")
            .unwrap_err()
            .contains("cannot load this state"));
    }
}
