//! The model configuration M of a harness H = (M, C): which model plays which
//! role, with fallbacks. Kept apart from the harness configuration, so the
//! same harness runs under any M and its id never depends on M.
//!
//! ```toml
//! [main]                      # the task agent; one table, or an array of
//! backend = "openai"          # tables ([[main]]) = a fallback chain, tried in order
//! model = "qwen2.5-7b-instruct"
//! base_url = "http://127.0.0.1:8000/v1"
//!
//! [[meta]]                    # the model that rewrites harnesses (optional)
//! backend = "anthropic"
//! model = "claude-sonnet-4-5"
//! [[meta]]
//! backend = "openai"
//! model = "gpt-4o-mini"
//!
//! [judge]                     # reviews candidates (optional)
//! backend = "sim"
//! model = "strong"
//! ```

use std::path::Path;

use serde::Deserialize;

use super::fallback::Fallback;
use super::spec::ModelConfig;
use super::{Model, ModelError};

/// One role: a model, or a chain of models tried in order.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Role {
    One(ModelConfig),
    Chain(Vec<ModelConfig>),
}

impl Role {
    /// The configs in the order they are tried.
    pub fn chain(&self) -> &[ModelConfig] {
        match self {
            Role::One(c) => std::slice::from_ref(c),
            Role::Chain(c) => c,
        }
    }

    /// Build the role's model (a [`Fallback`] when it has a chain).
    pub fn build(&self) -> Result<Box<dyn Model>, ModelError> {
        let mut models: Vec<Box<dyn Model>> = self.chain().iter().map(ModelConfig::build).collect::<Result<_, _>>()?;
        match models.len() {
            0 => Err(ModelError::Config("a role needs at least one model".into())),
            1 => Ok(models.remove(0)),
            _ => Ok(Box::new(Fallback::new(models)?)),
        }
    }
}

/// Which model plays which role.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    pub main: Role,
    #[serde(default)]
    pub meta: Option<Role>,
    #[serde(default)]
    pub judge: Option<Role>,
}

impl Roles {
    /// Parse a model configuration; errors name the file, line and column.
    pub fn parse(text: &str, origin: &str) -> Result<Roles, ModelError> {
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    let col = s.start - text[..s.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("{origin}:{line}:{col}: ")
                })
                .unwrap_or_else(|| format!("{origin}: "));
            ModelError::Config(format!("{at}{}", e.message()))
        })
    }

    /// Read and parse a model configuration file.
    pub fn load(path: &Path) -> Result<Roles, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }
}

/// A model for the `main` role from a shorthand spec (`sim:weak`,
/// `openai:MODEL@URL`, ...) or a model configuration file (`*.toml`).
pub fn main_model(spec: &str) -> Result<Box<dyn Model>, ModelError> {
    if spec.ends_with(".toml") {
        Roles::load(Path::new(spec))?.main.build()
    } else {
        super::spec::parse(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_with_chains_and_single_tables() {
        let r = Roles::parse(
            "[main]\nbackend = \"sim\"\nmodel = \"weak\"\n\n[[meta]]\nbackend = \"sim\"\nmodel = \"strong\"\n[[meta]]\nbackend = \"sim\"\nmodel = \"mid\"\n",
            "m.toml",
        )
        .unwrap();
        assert_eq!(r.main.chain().len(), 1);
        assert_eq!(r.meta.as_ref().unwrap().chain().len(), 2);
        assert!(r.judge.is_none());
        assert!(r.main.build().unwrap().describe().contains("weak"));
        assert!(r.meta.unwrap().build().is_ok());
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = Roles::parse("[main]\nbackend = \"sim\"\nmodel = \"weak\"\n[oops]\nx = 1\n", "m.toml").unwrap_err().to_string();
        assert!(e.contains("m.toml:4:"), "{e}");
        let e = Roles::parse("[meta]\nbackend = \"sim\"\nmodel = \"weak\"\n", "m.toml").unwrap_err().to_string();
        assert!(e.contains("main"), "{e}");
    }
}
