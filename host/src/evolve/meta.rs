//! The model-written path: a `meta` model writes processor source.
//!
//! The prompt carries the WIT contract, the guest SDK's README, one stock
//! processor as an example, the conventions processors and models share,
//! the round's digest and raw trace excerpts for the theme. The reply must
//! hold one fenced Rust code block (the whole `src/lib.rs`). A compile error
//! goes back, verbatim, as the next user message, for a bounded number of
//! repairs.
//!
//! Replies are cached in the store (`evolve-meta/`, keyed by the blake3 of
//! the model and the request), so a resumed run sees the same code and the
//! ledgers stay identical.

use serde::{Deserialize, Serialize};

use crate::chat::Message;
use crate::models::{Model, ModelRequest, ModelResponse};
use crate::store::{ObjectId, Store};

const META_NS: &str = "evolve-meta";
const WIT: &str = include_str!("../../../wit/harness.wit");
const SDK_README: &str = include_str!("../../../guest-sdk/README.md");
const EXAMPLE: &str = include_str!("../../../processors/step-budget/src/lib.rs");

const SYSTEM: &str = "You write kiln processors: small Rust crates built with the kiln-guest SDK into WebAssembly components that run at the hooks of an agent loop. Reply with exactly one ```rust code block holding the whole src/lib.rs of one processor. Rules: address only the failure you are given; never embed task ids, goal texts or answers; never read files or the network; never look at scores or rewards; keep every hook call cheap; export the processor with kiln_guest::export!. The crate depends on kiln-guest, serde (derive) and serde_json only.";

/// One exchange with the meta model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub reply: String,
    pub tokens: u64,
}

/// The first request for a processor addressing `theme`.
pub fn first_prompt(theme: &str, digest: &str, excerpts: &str) -> String {
    format!(
        "# The contract (wit/harness.wit)\n```wit\n{WIT}\n```\n\n# The SDK (guest-sdk/README.md)\n{SDK_README}\n\n# An example processor (step-budget)\n```rust\n{EXAMPLE}\n```\n\n# Conventions\n- The first user message begins with `Goal: <instruction>`.\n- A model response with no tool calls is the final answer: the task ends. A response blocked at after-model reaches the model as `[blocked by <name>] <reason>` and the loop goes on.\n- Advice (`advise`) reaches the model before its next call as `[advice from <name>] <text>`.\n\n# What went wrong (the digest)\n{digest}\n# Raw trace excerpts for `{theme}`\n{excerpts}\n\nWrite one processor that fixes `{theme}` failures without changing anything on tasks that do not show them. Reply with the whole src/lib.rs in one ```rust block."
    )
}

/// The follow-up after a failed build.
pub fn repair_prompt(errors: &str) -> String {
    format!("That source does not compile. The compiler said:\n```\n{errors}\n```\nReply with the whole fixed src/lib.rs in one ```rust block.")
}

/// Ask the meta model (through the reply cache).
pub async fn ask(model: &dyn Model, store: &Store, messages: &[Message]) -> Result<Exchange, String> {
    let request = ModelRequest {
        system: SYSTEM.to_string(),
        messages: messages.to_vec(),
        temperature: Some(0.0),
        max_tokens: Some(4096),
        seed: 0,
        ..Default::default()
    };
    let key = ObjectId::of(
        format!(
            "kiln-evolve/meta/1\n{}\n{}",
            model.describe(),
            serde_json::to_string(&request).expect("request serializes")
        )
        .as_bytes(),
    )
    .to_hex();
    if let Ok(Some(bytes)) = store.cache_get(META_NS, &key) {
        if let Ok(x) = serde_json::from_slice::<Exchange>(&bytes) {
            return Ok(x);
        }
    }
    let ModelResponse { text, usage, .. } =
        model.complete(&request).await.map_err(|e| format!("the meta model failed: {e}"))?;
    let x = Exchange { reply: text, tokens: usage.input_tokens + usage.output_tokens };
    let _ = store.cache_put(META_NS, &key, &serde_json::to_vec(&x).expect("exchange serializes"));
    Ok(x)
}

/// The code of the first fenced block (```rust preferred) in a reply.
pub fn code_block(reply: &str) -> Option<String> {
    let blocks: Vec<(&str, &str)> = {
        let mut out = Vec::new();
        let mut rest = reply;
        while let Some(start) = rest.find("```") {
            let after = &rest[start + 3..];
            let (lang, body) = after.split_once('\n').unwrap_or(("", after));
            let Some(end) = body.find("```") else { break };
            out.push((lang.trim(), &body[..end]));
            rest = &body[end + 3..];
        }
        out
    };
    blocks
        .iter()
        .find(|(l, _)| *l == "rust" || *l == "rs")
        .or_else(|| blocks.first())
        .map(|(_, b)| b.to_string())
        .filter(|b| !b.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rust_block() {
        let r = "Here:\n```toml\n[x]\n```\nand\n```rust\nfn main() {}\n```\n";
        assert_eq!(code_block(r).as_deref(), Some("fn main() {}\n"));
        assert_eq!(code_block("```\nlet x = 1;\n```").as_deref(), Some("let x = 1;\n"));
        assert_eq!(code_block("no code here"), None);
        assert_eq!(code_block("```rust\n   \n```"), None);
    }

    #[test]
    fn the_prompt_carries_contract_sdk_and_evidence() {
        let p = first_prompt("premature-stop", "DIGEST", "EXCERPT");
        assert!(
            p.contains("package kiln:harness")
                && p.contains("kiln_guest::export!")
                && p.contains("DIGEST")
                && p.contains("EXCERPT")
        );
    }
}
