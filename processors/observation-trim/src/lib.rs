//! `observation-trim`: keeps tool results short enough to be useful.
//!
//! At after-tool it first collapses whitespace (trailing spaces go, runs of
//! spaces and tabs inside a line become one space, several blank lines become
//! one), then, if the result is still longer than `max_chars` characters,
//! keeps its head (two thirds of the budget) and its tail (one third) around
//! a marker line `[... N chars trimmed ...]`. Results that need neither are
//! left untouched. Lengths count Unicode characters, never split one.
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `max_chars` | 1200 | longest result kept whole (at least 32) |
//! | `collapse_whitespace` | true | collapse whitespace runs and blank lines |

use kiln_guest::{config, Conversation, Hook, Info, Processor, ToolCall, ToolResult, Verdict};
use serde::Deserialize;

/// The processor's name, as in its [`Info`].
pub const NAME: &str = "observation-trim";

/// The processor's config; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Longest result kept whole, in characters.
    pub max_chars: usize,
    /// Collapse whitespace runs and blank lines.
    pub collapse_whitespace: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_chars: 1200,
            collapse_whitespace: true,
        }
    }
}

/// Collapses whitespace: trailing spaces, runs of spaces and tabs inside a
/// line (leading indentation is kept), and runs of blank lines.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run == 1 {
                out.push('\n');
            }
            continue;
        }
        blank_run = 0;
        let indent = line.len() - line.trim_start().len();
        out.push_str(&line[..indent]);
        let mut words = line[indent..]
            .split([' ', '\t'])
            .filter(|word| !word.is_empty());
        if let Some(first) = words.next() {
            out.push_str(first);
            for word in words {
                out.push(' ');
                out.push_str(word);
            }
        }
        out.push('\n');
    }
    out.pop(); // The last line's newline.
    out
}

/// Keeps the head and tail of `text` around `[... N chars trimmed ...]` when
/// it has more than `max_chars` characters.
pub fn trim_middle(text: &str, max_chars: usize) -> Option<String> {
    let total = text.chars().count();
    if total <= max_chars {
        return None;
    }
    let head_chars = max_chars * 2 / 3;
    let tail_chars = max_chars - head_chars;
    let byte_at = |chars: usize| {
        text.char_indices()
            .nth(chars)
            .map_or(text.len(), |(at, _)| at)
    };
    let head_end = byte_at(head_chars);
    let tail_start = byte_at(total - tail_chars);
    let trimmed = total - head_chars - tail_chars;
    Some(format!(
        "{}\n[... {trimmed} chars trimmed ...]\n{}",
        text[..head_end].trim_end(),
        text[tail_start..].trim_start()
    ))
}

/// The component.
#[derive(Default)]
pub struct ObservationTrim {
    config: Config,
}

impl ObservationTrim {
    /// The result as it should be, or `None` when it is fine as it is.
    pub fn shape(&self, content: &str) -> Option<String> {
        let collapsed = if self.config.collapse_whitespace {
            collapse_whitespace(content)
        } else {
            content.to_owned()
        };
        let shaped = trim_middle(&collapsed, self.config.max_chars).unwrap_or(collapsed);
        (shaped != content).then_some(shaped)
    }
}

impl Processor for ObservationTrim {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION"))
            .hooks([Hook::AfterTool])
            .group("trim")
    }

    fn configure(&mut self, text: &str) -> Result<(), String> {
        let config: Config = config::parse(NAME, text)?;
        if config.max_chars < 32 {
            return Err(format!(
                "config for `{NAME}` is invalid: `max_chars` must be at least 32 (got {})",
                config.max_chars
            ));
        }
        self.config = config;
        Ok(())
    }

    fn on_after_tool(
        &mut self,
        _conv: &Conversation<'_>,
        _call: &ToolCall<'_>,
        result: &ToolResult<'_>,
    ) -> Verdict {
        if let Some(shaped) = self.shape(&result.content()) {
            result.set_content(&shaped);
        }
        Verdict::Pass
    }
}

kiln_guest::export!(ObservationTrim);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_guest::testing::TestHost;
    use kiln_guest::Call;

    #[test]
    fn collapses_blank_lines_and_inner_runs_but_keeps_indentation() {
        let text = "\n\ntitle   here  \n\n\n\n  indented\t\tline\nlast\n\n";
        assert_eq!(
            collapse_whitespace(text),
            "title here\n\n  indented line\nlast"
        );
    }

    #[test]
    fn trims_the_middle_and_counts_what_went() {
        let text: String = (0..100)
            .map(|n| char::from(b'a' + (n % 26) as u8))
            .collect();
        let trimmed = trim_middle(&text, 30).unwrap();
        assert_eq!(
            trimmed,
            format!(
                "{}\n[... 70 chars trimmed ...]\n{}",
                &text[..20],
                &text[90..]
            )
        );
        assert_eq!(trim_middle(&text, 100), None);
    }

    #[test]
    fn never_splits_a_character() {
        let text = "é".repeat(50);
        let trimmed = trim_middle(&text, 32).unwrap();
        assert!(trimmed.starts_with(&"é".repeat(21)));
        assert!(trimmed.contains("[... 18 chars trimmed ...]"));
    }

    #[test]
    fn long_results_are_trimmed_at_after_tool() {
        let mut host = TestHost::new();
        let mut trim = ObservationTrim::default();
        host.configure(&mut trim, r#"{"max_chars": 60}"#).unwrap();
        let long = "x".repeat(500);
        let outcome = host.after_tool(&mut trim, Call::new("c", "read", "{}"), &long, false);
        assert!(
            outcome.content.contains("[... 440 chars trimmed ...]"),
            "{}",
            outcome.content
        );
        assert_eq!(outcome.verdict, Verdict::Pass);
    }

    #[test]
    fn short_clean_results_are_untouched() {
        let mut host = TestHost::new();
        let mut trim = ObservationTrim::default();
        let outcome = host.after_tool(
            &mut trim,
            Call::new("c", "read", "{}"),
            "fine\n\nresult",
            false,
        );
        assert_eq!(outcome.content, "fine\n\nresult");
    }

    #[test]
    fn whitespace_collapsing_can_be_switched_off() {
        let mut host = TestHost::new();
        let mut trim = ObservationTrim::default();
        host.configure(&mut trim, r#"{"collapse_whitespace": false}"#)
            .unwrap();
        let outcome = host.after_tool(
            &mut trim,
            Call::new("c", "read", "{}"),
            "a   b\n\n\n\nc",
            false,
        );
        assert_eq!(outcome.content, "a   b\n\n\n\nc");
    }

    #[test]
    fn bad_config_is_refused_with_the_key() {
        let host = TestHost::new();
        let mut trim = ObservationTrim::default();
        assert!(host
            .configure(&mut trim, r#"{"max_chars": 5}"#)
            .unwrap_err()
            .contains("`max_chars` must be at least 32"));
        assert!(host
            .configure(&mut trim, r#"{"max": 500}"#)
            .unwrap_err()
            .contains("unknown field `max`"));
    }
}
