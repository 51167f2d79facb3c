//! [`McpTools`]: one MCP server's tools, ready for a task's tool list.

use serde_json::{Map, Value};

use super::{CallToolResult, McpClient, McpError};
use crate::chat::ToolSpec;
use crate::env::Observation;

/// One MCP server's tools as a task sees them: their [`ToolSpec`]s to offer
/// the model, and [`call`](McpTools::call) to run a call the model made.
///
/// How the agent loop uses it: add [`specs`](McpTools::specs) to the tools
/// of the task; when the model calls a tool that [`contains`](McpTools::contains)
/// names, pass the call's name and raw argument text to `call` and give the
/// returned [`Observation`] back as the tool result. A call the tool rejects
/// (bad JSON, unknown tool, `isError`) is an `Observation` with `is_error`;
/// `Err` means the server itself broke (exited, timed out, spoke nonsense),
/// and the task should end as errored with that message.
///
/// Some arguments belong to the host, not the model (a tenant, a state key):
/// [`inject`](McpTools::inject) hides one from every schema and fills it in
/// on every call, overriding whatever the model wrote.
pub struct McpTools {
    client: McpClient,
    specs: Vec<ToolSpec>,
    injected: Map<String, Value>,
    render: fn(&CallToolResult) -> String,
}

impl std::fmt::Debug for McpTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("McpTools").field("server", &self.client.server()).field("tools", &names).finish()
    }
}

impl McpTools {
    /// List the server's tools (every page) and offer all of them.
    pub fn new(mut client: McpClient) -> Result<McpTools, McpError> {
        let specs = client.list_tools()?.iter().map(|t| t.to_spec()).collect();
        Ok(McpTools { client, specs, injected: Map::new(), render: CallToolResult::text })
    }

    /// Turn results into observation text with `render` instead of
    /// [`CallToolResult::text`] (e.g. to pick one field of structured content).
    pub fn render_with(mut self, render: fn(&CallToolResult) -> String) -> McpTools {
        self.render = render;
        self
    }

    /// Stop offering the tools called any of `names` (they stay callable
    /// through [`client`](McpTools::client) by the host).
    pub fn exclude(mut self, names: &[&str]) -> McpTools {
        self.specs.retain(|s| !names.contains(&s.name.as_str()));
        self
    }

    /// Hide `argument` from every tool's schema and send `value` for it on
    /// every call. Change the value later with [`set_injected`](McpTools::set_injected).
    pub fn inject(mut self, argument: &str, value: Value) -> McpTools {
        for spec in &mut self.specs {
            hide_argument(&mut spec.parameters, argument);
        }
        self.injected.insert(argument.to_string(), value);
        self
    }

    /// Change the value of an injected argument (e.g. per task).
    pub fn set_injected(&mut self, argument: &str, value: Value) {
        self.injected.insert(argument.to_string(), value);
    }

    /// The tools to offer the model.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// Whether `name` is one of the offered tools.
    pub fn contains(&self, name: &str) -> bool {
        self.specs.iter().any(|s| s.name == name)
    }

    /// The connection, for calls the host makes itself.
    pub fn client(&mut self) -> &mut McpClient {
        &mut self.client
    }

    /// Run the model's call of tool `name` with `arguments` as it wrote them
    /// (JSON text; empty means `{}`).
    pub fn call(&mut self, name: &str, arguments: &str) -> Result<Observation, McpError> {
        let refused = |content: String| Ok(Observation { content, is_error: true });
        if !self.contains(name) {
            let known: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
            return refused(format!("Error: unknown tool `{name}`; the tools are: {}", known.join(", ")));
        }
        let parsed =
            if arguments.trim().is_empty() { Ok(Value::Object(Map::new())) } else { serde_json::from_str(arguments) };
        let mut args = match parsed {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return refused(format!("Error: the arguments of `{name}` must be a JSON object, not `{other}`"))
            }
            Err(e) => return refused(format!("Error: the arguments of `{name}` are not valid JSON: {e}")),
        };
        for (key, value) in &self.injected {
            args.insert(key.clone(), value.clone());
        }
        let result = self.client.call_tool(name, Value::Object(args))?;
        Ok(Observation { content: (self.render)(&result), is_error: result.is_error })
    }
}

/// Remove `argument` from an object schema's `properties` and `required`.
fn hide_argument(schema: &mut Value, argument: &str) {
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.remove(argument);
    }
    if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r.as_str() != Some(argument));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hidden_argument_leaves_properties_and_required() {
        let mut schema = json!({
            "type": "object",
            "properties": { "id": { "type": "string" }, "state_key": { "type": "string" } },
            "required": ["id", "state_key"]
        });
        hide_argument(&mut schema, "state_key");
        assert_eq!(schema["properties"], json!({ "id": { "type": "string" } }));
        assert_eq!(schema["required"], json!(["id"]));
        let mut bare = json!({ "type": "object" });
        hide_argument(&mut bare, "state_key");
        assert_eq!(bare, json!({ "type": "object" }));
    }
}
