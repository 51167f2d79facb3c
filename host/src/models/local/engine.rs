//! The inference engine: weights, tokenizer, template, and a pool of KV
//! caches reused across requests that share a prefix.
//!
//! **Prefix reuse.** Each [`Session`] remembers the tokens its cache holds.
//! A request takes the session sharing the longest prefix with its prompt,
//! cuts the cache back to that prefix and runs only the rest, so step *n* of
//! a task reads only what step *n − 1* did not: the new observation and the
//! reply as the harness rewrote it. Another task's request does not wipe a
//! live session: it takes a free or the least recently used one and copies
//! just the shared prefix (the system prompt) into it.
//!
//! **Determinism.** Running 64 tokens as one batch and as 64 single steps
//! gives logits that differ in the last bits, and over many tokens that can
//! change a sampled word. So the prompt is always run in chunks aligned to
//! absolute multiples of [`CHUNK`], and a reused cache is cut back to the
//! last aligned position it reached through such chunks (never into
//! generated tokens). The logits for a prompt are then the same function of
//! its tokens whether the cache was cold, warm, or borrowed from another
//! task, and same request, same seed means same reply, under `-j 4` too.

use std::path::PathBuf;

use super::error::LocalError;
use super::gguf::{GgufFile, Hyper};
use super::llama::{KvCache, Llama, LoadOptions};
use super::sampler::{decode, Decoder, Reply, Sampler, Sampling};
use super::template::{ChatTemplate, Turn};
use super::vocab::Vocab;

/// Prompt tokens run per forward pass, at absolute positions `k * CHUNK`.
pub const CHUNK: usize = 64;

/// Continuation tokens scored per batched pass.
const SCORE_BATCH_ROWS: usize = 256;

/// One cached token sequence.
struct Session {
    tokens: Vec<u32>,
    cache: KvCache,
    /// Positions `0..canonical` were computed in aligned prompt chunks.
    canonical: usize,
    last_used: u64,
}

/// Counters for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Prompt tokens served from a cache.
    pub reused_tokens: u64,
    /// Prompt tokens run through the model.
    pub prefill_tokens: u64,
    /// Tokens run while generating.
    pub decoded_tokens: u64,
    /// Tokens run while scoring continuations.
    pub scored_tokens: u64,
}

/// A loaded model with its cache pool.
pub struct Engine {
    pub path: PathBuf,
    model: Llama,
    pub vocab: Vocab,
    template: ChatTemplate,
    sessions: Vec<Session>,
    max_sessions: usize,
    clock: u64,
    pub stats: Stats,
}

impl Engine {
    /// Load `file`; `window` caps the context (default: the trained length),
    /// `max_sessions` bounds the cache pool.
    pub fn load(
        mut file: GgufFile,
        window: Option<usize>,
        max_sessions: usize,
        options: LoadOptions,
    ) -> Result<Engine, LocalError> {
        let hyper: Hyper = file.hyper()?;
        let vocab = Vocab::from_gguf(&file)?;
        if vocab.size != hyper.vocab_size {
            return Err(file.bad(format!(
                "the tokenizer has {} tokens but the embedding has {} rows",
                vocab.size, hyper.vocab_size
            )));
        }
        let template = ChatTemplate::new(vocab.chat_template.as_deref(), &vocab.bos_text, &vocab.eos_text)
            .map_err(|reason| LocalError::Template { path: file.path.clone(), reason })?;
        let window = window.unwrap_or(hyper.context_length).min(hyper.context_length).max(1);
        let model = Llama::load(&mut file, hyper, window, options)?;
        Ok(Engine {
            path: file.path.clone(),
            model,
            vocab,
            template,
            sessions: Vec::new(),
            max_sessions: max_sessions.max(1),
            clock: 0,
            stats: Stats::default(),
        })
    }

    /// The transformer's shape.
    pub fn hyper(&self) -> &Hyper {
        &self.model.hyper
    }

    /// The context window in tokens.
    pub fn window(&self) -> usize {
        self.model.window
    }

    /// Render `turns` with the model's template and tokenize the result.
    pub fn prompt(&self, turns: &[Turn]) -> Result<Vec<u32>, LocalError> {
        let text =
            self.template.render(turns).map_err(|reason| LocalError::Template { path: self.path.clone(), reason })?;
        self.vocab.encode(&text).map_err(|reason| self.inference(reason))
    }

    /// Tokenize a continuation of the assistant's turn (no template).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LocalError> {
        self.vocab.encode(text).map_err(|reason| self.inference(reason))
    }

    /// Forget every cached session.
    pub fn clear(&mut self) {
        self.sessions.clear();
    }

    /// Generate a reply to `prompt`.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampling: Sampling,
        seed: u64,
        stops: &[String],
    ) -> Result<Reply, LocalError> {
        let (index, logits) = self.prefill(prompt)?;
        let mut sampler = Sampler::new(sampling, seed, prompt);
        let path = self.path.clone();
        let Engine { model, vocab, sessions, stats, .. } = self;
        let session = &mut sessions[index];
        let mut decoder = SessionDecoder { model, vocab, session, decoded: 0 };
        let reply = decode(&mut decoder, &mut sampler, logits, stops);
        stats.decoded_tokens += decoder.decoded;
        reply.map_err(|reason| LocalError::Inference { path, reason })
    }

    /// The mean log-probability of each continuation after `prompt` (every
    /// continuation is a list of tokens, its end-of-turn token included).
    /// Only the tokens after the continuations' common prefix count, so a
    /// shared preamble such as `Action: act {"command": "` does not dilute
    /// the difference.
    pub fn score(&mut self, prompt: &[u32], continuations: &[Vec<u32>]) -> Result<Vec<f32>, LocalError> {
        let (index, first_logits) = self.prefill(prompt)?;
        let shared = common_prefix_all(continuations);
        let window = self.model.window;
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        if prompt.len() + longest > window {
            return Err(LocalError::ContextOverflow {
                path: self.path.clone(),
                prompt_tokens: prompt.len() + longest,
                window,
            });
        }
        let path = self.path.clone();
        let fail = |e: candle_core::Error| LocalError::Inference { path: path.clone(), reason: e.to_string() };
        let Engine { model, sessions, stats, .. } = self;
        let session = &mut sessions[index];
        // Log-probabilities before the first continuation token, then after the shared part.
        let mut at_fork = log_softmax(&first_logits);
        if shared > 0 {
            let shared_tokens = &continuations[0][..shared];
            let logits = model.forward(&mut session.cache, shared_tokens).map_err(fail)?;
            stats.scored_tokens += shared as u64;
            session.tokens.extend_from_slice(shared_tokens);
            at_fork = log_softmax(&logits.squeeze(0).and_then(|l| l.to_vec1::<f32>()).map_err(fail)?);
        }
        // Every continuation's rest runs as one branch of a batched pass
        // (tokens but the last are fed; the last is only predicted).
        let mut scores: Vec<f32> = continuations.iter().map(|c| at_fork[c[shared] as usize]).collect();
        let fed: Vec<(usize, &[u32])> = continuations
            .iter()
            .enumerate()
            .filter(|(_, c)| c.len() - shared > 1)
            .map(|(i, c)| (i, &c[shared..c.len() - 1]))
            .collect();
        let mut batch_start = 0;
        while batch_start < fed.len() {
            let mut rows = 0;
            let mut batch_end = batch_start;
            while batch_end < fed.len()
                && (batch_end == batch_start || rows + fed[batch_end].1.len() <= SCORE_BATCH_ROWS)
            {
                rows += fed[batch_end].1.len();
                batch_end += 1;
            }
            let batch = &fed[batch_start..batch_end];
            let branches: Vec<&[u32]> = batch.iter().map(|(_, b)| *b).collect();
            let logits = model.forward_branches(&mut session.cache, &branches).map_err(fail)?;
            stats.scored_tokens += rows as u64;
            for ((index, _), logits) in batch.iter().zip(logits) {
                let predicted = &continuations[*index][shared + 1..];
                for (row, &token) in logits.to_vec2::<f32>().map_err(fail)?.iter().zip(predicted) {
                    scores[*index] += log_softmax(row)[token as usize];
                }
            }
            batch_start = batch_end;
        }
        for (score, continuation) in scores.iter_mut().zip(continuations) {
            *score /= (continuation.len() - shared) as f32;
        }
        Ok(scores)
    }

    /// [`Engine::score`] the slow way, one token at a time on a copy of the
    /// prompt's cache, as a reference for tests.
    #[cfg(test)]
    pub fn score_one_token_at_a_time(&mut self, prompt: &[u32], continuations: &[Vec<u32>]) -> Vec<f32> {
        let (index, first) = self.prefill(prompt).unwrap();
        let mut scores = Vec::new();
        for continuation in continuations {
            let mut cache = self.model.new_cache();
            cache.copy_prefix(&self.sessions[index].cache, prompt.len()).unwrap();
            let mut logits = first.clone();
            let mut total = 0.0;
            let shared = common_prefix_all(continuations);
            for (i, &token) in continuation.iter().enumerate() {
                if i >= shared {
                    total += log_softmax(&logits)[token as usize];
                }
                let next = self.model.forward(&mut cache, &[token]).unwrap();
                logits = next.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            }
            scores.push(total / (continuation.len() - shared) as f32);
        }
        scores
    }

    /// Bring a session's cache to `prompt[..n - 1]` plus the last prompt
    /// token, returning the session and the last position's logits.
    fn prefill(&mut self, prompt: &[u32]) -> Result<(usize, Vec<f32>), LocalError> {
        let window = self.model.window;
        if prompt.is_empty() {
            return Err(self.inference("the prompt rendered to no tokens".to_owned()));
        }
        if prompt.len() >= window {
            return Err(LocalError::ContextOverflow { path: self.path.clone(), prompt_tokens: prompt.len(), window });
        }
        self.clock += 1;
        let index = self.pick_session(prompt).map_err(|e| self.inference(e.to_string()))?;
        let path = self.path.clone();
        let fail = |e: candle_core::Error| LocalError::Inference { path: path.clone(), reason: e.to_string() };
        let session = &mut self.sessions[index];
        let keep = usable_prefix(&session.tokens, session.canonical, prompt);
        session.cache.truncate(keep);
        session.tokens.truncate(keep);
        session.canonical = session.canonical.min(keep);
        session.last_used = self.clock;
        self.stats.reused_tokens += keep as u64;
        let mut start = keep;
        let mut last = None;
        while start < prompt.len() {
            let end = ((start / CHUNK + 1) * CHUNK).min(prompt.len());
            let logits = self.model.forward(&mut session.cache, &prompt[start..end]).map_err(fail)?;
            session.tokens.extend_from_slice(&prompt[start..end]);
            if end % CHUNK == 0 {
                session.canonical = end;
            }
            self.stats.prefill_tokens += (end - start) as u64;
            start = end;
            last = Some(logits);
        }
        let logits = last.expect("keep < prompt.len(), so at least one chunk ran");
        Ok((index, logits.squeeze(0).and_then(|l| l.to_vec1::<f32>()).map_err(fail)?))
    }

    /// The session to serve `prompt`: the one sharing the longest usable
    /// prefix, unless using it would wipe a longer history of another task;
    /// then a free or the least recently used session, seeded with that
    /// prefix.
    fn pick_session(&mut self, prompt: &[u32]) -> candle_core::Result<usize> {
        let best = self
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (usable_prefix(&s.tokens, s.canonical, prompt), i))
            .max_by_key(|&(keep, i)| (keep, std::cmp::Reverse(i)));
        if let Some((keep, i)) = best {
            // Continuing its own history: most of what it holds is kept.
            if keep * 2 >= self.sessions[i].tokens.len() {
                return Ok(i);
            }
        }
        let target = if self.sessions.len() < self.max_sessions {
            self.sessions.push(Session {
                tokens: Vec::new(),
                cache: self.model.new_cache(),
                canonical: 0,
                last_used: 0,
            });
            self.sessions.len() - 1
        } else {
            let lru = (0..self.sessions.len()).min_by_key(|&i| self.sessions[i].last_used).expect("pool is not empty");
            if best.is_some_and(|(_, i)| i == lru) {
                return Ok(lru);
            }
            lru
        };
        if let Some((keep, source)) = best.filter(|&(keep, _)| keep > 0) {
            let (from, to) = two(&mut self.sessions, source, target);
            to.cache.copy_prefix(&from.cache, keep)?;
            to.tokens = from.tokens[..keep].to_vec();
            to.canonical = keep;
        } else {
            let to = &mut self.sessions[target];
            to.cache.truncate(0);
            to.tokens.clear();
            to.canonical = 0;
        }
        Ok(target)
    }

    fn inference(&self, reason: String) -> LocalError {
        LocalError::Inference { path: self.path.clone(), reason }
    }
}

/// How much of `cached` (computed canonically up to `canonical`) a request
/// for `prompt` may keep: the common prefix, cut to a chunk boundary inside
/// the canonical part, and short of the last prompt token (whose logits are
/// needed).
fn usable_prefix(cached: &[u32], canonical: usize, prompt: &[u32]) -> usize {
    let common = cached.iter().zip(prompt).take_while(|(a, b)| a == b).count();
    let keep = common.min(canonical).min(prompt.len().saturating_sub(1));
    keep / CHUNK * CHUNK
}

/// The length of the prefix every list shares.
fn common_prefix_all(lists: &[Vec<u32>]) -> usize {
    let Some(first) = lists.first() else { return 0 };
    // Leave at least one token per continuation to score.
    let shortest = lists.iter().map(Vec::len).min().unwrap_or(0).saturating_sub(1);
    (0..shortest).take_while(|&i| lists.iter().all(|l| l[i] == first[i])).count()
}

fn two<T>(items: &mut [T], a: usize, b: usize) -> (&T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (left, right) = items.split_at_mut(b);
        (&left[a], &mut right[0])
    } else {
        let (left, right) = items.split_at_mut(a);
        (&right[0], &mut left[b])
    }
}

/// Log-probabilities of `logits`, accumulated in f64.
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum = logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&l| (l as f64 - max - log_sum) as f32).collect()
}

/// Decoding on one session: generated tokens go into its cache (they are
/// past its canonical prefix, so the next request recomputes them in chunks).
struct SessionDecoder<'a> {
    model: &'a Llama,
    vocab: &'a Vocab,
    session: &'a mut Session,
    decoded: u64,
}

impl Decoder for SessionDecoder<'_> {
    fn feed(&mut self, token: u32) -> Result<Vec<f32>, String> {
        let logits = self.model.forward(&mut self.session.cache, &[token]).map_err(|e| e.to_string())?;
        self.session.tokens.push(token);
        self.decoded += 1;
        logits.squeeze(0).and_then(|l| l.to_vec1::<f32>()).map_err(|e| e.to_string())
    }

    fn is_stop(&self, token: u32) -> bool {
        self.vocab.is_stop(token)
    }

    fn text(&self, tokens: &[u32]) -> Result<String, String> {
        self.vocab.decode(tokens)
    }

    fn room(&self) -> usize {
        self.model.window.saturating_sub(self.session.cache.positions())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_prefixes_stop_at_aligned_canonical_positions() {
        let cached: Vec<u32> = (0..300).collect();
        let mut prompt: Vec<u32> = (0..250).collect();
        assert_eq!(usable_prefix(&cached, 256, &prompt), 192, "the last prompt token is always re-run");
        prompt.extend(1000..1100);
        assert_eq!(usable_prefix(&cached, 256, &prompt), 192, "the common prefix is 250, aligned down");
        assert_eq!(usable_prefix(&cached, 128, &prompt), 128, "never past the canonical part");
        let full: Vec<u32> = (0..400).collect();
        assert_eq!(usable_prefix(&cached, 256, &full), 256);
        assert_eq!(usable_prefix(&[], 0, &full), 0);
    }

    #[test]
    fn continuations_share_their_common_prefix_but_not_the_last_token() {
        assert_eq!(common_prefix_all(&[vec![1, 2, 3, 4], vec![1, 2, 5]]), 2);
        assert_eq!(common_prefix_all(&[vec![1, 2], vec![1, 2]]), 1);
        assert_eq!(common_prefix_all(&[vec![7]]), 0);
        assert_eq!(common_prefix_all(&[]), 0);
    }
}
