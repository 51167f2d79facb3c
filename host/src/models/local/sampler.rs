//! Picking tokens: temperature, nucleus (top-p) and a seeded generator, and
//! the decoding loop that stops at the end of the turn.
//!
//! The generator is ChaCha8 seeded from the request's seed and the prompt,
//! so the same request gives the same tokens on every machine and every
//! run, while two steps of one task (different prompts) draw independently.
//! Temperature 0 is greedy (ties go to the lowest token id).

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sampling settings for one reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches this.
    pub top_p: f32,
    /// Reply length limit in tokens.
    pub max_tokens: usize,
}

/// Why a reply ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn with this (control) token.
    EndOfTurn(u32),
    /// A stop string appeared; the text is cut before it.
    StopString(String),
    /// `max_tokens` ran out.
    Length,
    /// The context window is full.
    Window,
}

impl Finish {
    /// A short name for the response's `raw` record.
    pub fn name(&self) -> &'static str {
        match self {
            Finish::EndOfTurn(_) => "end_of_turn",
            Finish::StopString(_) => "stop_string",
            Finish::Length => "length",
            Finish::Window => "window",
        }
    }
}

/// A seeded token picker.
pub struct Sampler {
    rng: ChaCha8Rng,
    sampling: Sampling,
}

impl Sampler {
    /// A sampler whose draws depend only on `seed` and `salt` (the prompt).
    pub fn new(sampling: Sampling, seed: u64, salt: &[u32]) -> Sampler {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kiln local sampler v1");
        hasher.update(&seed.to_le_bytes());
        for token in salt {
            hasher.update(&token.to_le_bytes());
        }
        Sampler { rng: ChaCha8Rng::from_seed(*hasher.finalize().as_bytes()), sampling }
    }

    /// Pick a token from `logits`.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.sampling.temperature <= 0.0 || !self.sampling.temperature.is_finite() {
            return argmax(logits);
        }
        let weights = softmax(logits, self.sampling.temperature);
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
        let top_p = self.sampling.top_p.clamp(0.0, 1.0) as f64;
        let mut kept = 0;
        let mut mass = 0.0;
        for &i in &order {
            mass += weights[i];
            kept += 1;
            if mass >= top_p {
                break;
            }
        }
        let draw = self.uniform() * mass;
        let mut acc = 0.0;
        for &i in &order[..kept] {
            acc += weights[i];
            if draw < acc {
                return i as u32;
            }
        }
        order[kept - 1] as u32
    }

    /// Pick an index from `scores` (log-probabilities) the same way.
    pub fn pick_scored(&mut self, scores: &[f32]) -> usize {
        self.pick(scores) as usize
    }

    /// A uniform draw in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The index of the largest value, the lowest index on ties.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// softmax(logits / temperature) in f64.
fn softmax(logits: &[f32], temperature: f32) -> Vec<f64> {
    let t = temperature as f64;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut weights: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / t).exp()).collect();
    let sum: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= sum);
    weights
}

/// What the decoding loop needs from a model.
pub trait Decoder {
    /// The logits after feeding `token` (the one just picked).
    fn feed(&mut self, token: u32) -> Result<Vec<f32>, String>;
    /// Whether `token` ends the turn.
    fn is_stop(&self, token: u32) -> bool;
    /// The text of `tokens`.
    fn text(&self, tokens: &[u32]) -> Result<String, String>;
    /// How many more tokens fit in the window.
    fn room(&self) -> usize;
}

/// A finished reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub text: String,
    /// Tokens generated, the end-of-turn token included.
    pub tokens: Vec<u32>,
    pub finish: Finish,
}

/// Generate from `first_logits` (the prompt's last position) until the turn
/// ends, a stop string appears, `max_tokens` run out or the window fills.
/// The end-of-turn token is counted but never fed back or shown.
pub fn decode(
    decoder: &mut dyn Decoder,
    sampler: &mut Sampler,
    first_logits: Vec<f32>,
    stops: &[String],
) -> Result<Reply, String> {
    let max_tokens = sampler.sampling.max_tokens;
    let mut tokens = Vec::new();
    let mut logits = first_logits;
    loop {
        if tokens.len() >= max_tokens {
            return finish(decoder, tokens, Finish::Length);
        }
        let token = sampler.pick(&logits);
        tokens.push(token);
        if decoder.is_stop(token) {
            let shown = &tokens[..tokens.len() - 1];
            let text = decoder.text(shown)?;
            return Ok(Reply { text, tokens, finish: Finish::EndOfTurn(token) });
        }
        if !stops.is_empty() {
            let text = decoder.text(&tokens)?;
            if let Some((at, stop)) = stops.iter().filter_map(|s| text.find(s.as_str()).map(|at| (at, s))).min() {
                return Ok(Reply { text: text[..at].to_owned(), tokens, finish: Finish::StopString(stop.clone()) });
            }
        }
        if tokens.len() >= max_tokens {
            return finish(decoder, tokens, Finish::Length);
        }
        if decoder.room() == 0 {
            return finish(decoder, tokens, Finish::Window);
        }
        logits = decoder.feed(token)?;
    }
}

fn finish(decoder: &dyn Decoder, tokens: Vec<u32>, finish: Finish) -> Result<Reply, String> {
    Ok(Reply { text: decoder.text(&tokens)?, tokens, finish })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder that makes a fixed token the most likely at each position.
    struct Scripted {
        script: Vec<u32>,
        fed: Vec<u32>,
        vocab: usize,
        room: usize,
    }

    impl Scripted {
        fn logits_for(&self, position: usize) -> Vec<f32> {
            let mut logits = vec![0.0; self.vocab];
            if let Some(&t) = self.script.get(position) {
                logits[t as usize] = 10.0;
            }
            logits
        }
    }

    impl Decoder for Scripted {
        fn feed(&mut self, token: u32) -> Result<Vec<f32>, String> {
            self.fed.push(token);
            self.room -= 1;
            Ok(self.logits_for(self.fed.len()))
        }
        fn is_stop(&self, token: u32) -> bool {
            token == 0
        }
        fn text(&self, tokens: &[u32]) -> Result<String, String> {
            Ok(tokens.iter().map(|&t| (b'a' + t as u8 - 1) as char).collect())
        }
        fn room(&self) -> usize {
            self.room
        }
    }

    fn greedy(max_tokens: usize) -> Sampler {
        Sampler::new(Sampling { temperature: 0.0, top_p: 1.0, max_tokens }, 0, &[])
    }

    fn run(script: &[u32], max_tokens: usize, room: usize, stops: &[&str]) -> (Reply, Vec<u32>) {
        let mut decoder = Scripted { script: script.to_vec(), fed: Vec::new(), vocab: 8, room };
        let first = decoder.logits_for(0);
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let reply = decode(&mut decoder, &mut greedy(max_tokens), first, &stops).unwrap();
        (reply, decoder.fed)
    }

    #[test]
    fn the_end_of_turn_token_stops_and_is_neither_shown_nor_fed() {
        let (reply, fed) = run(&[1, 2, 0, 3, 3], 100, 100, &[]);
        assert_eq!(reply, Reply { text: "ab".into(), tokens: vec![1, 2, 0], finish: Finish::EndOfTurn(0) });
        assert_eq!(fed, vec![1, 2], "the end-of-turn token is not run through the model");
    }

    #[test]
    fn max_tokens_and_the_window_cut_a_reply_and_say_so() {
        let (reply, _) = run(&[1, 2, 3, 4, 0], 3, 100, &[]);
        assert_eq!((reply.text.as_str(), reply.finish), ("abc", Finish::Length));
        let (reply, _) = run(&[1, 2, 3, 4, 0], 100, 2, &[]);
        assert_eq!((reply.text.as_str(), reply.finish), ("abc", Finish::Window));
        let (reply, fed) = run(&[1], 0, 100, &[]);
        assert_eq!((reply.tokens.len(), reply.finish, fed.len()), (0, Finish::Length, 0));
    }

    #[test]
    fn a_stop_string_cuts_the_text_before_it() {
        let (reply, _) = run(&[1, 2, 3, 4, 5, 0], 100, 100, &["cd", "e"]);
        assert_eq!(reply.text, "ab");
        assert_eq!(reply.finish, Finish::StopString("cd".into()));
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let sampling = Sampling { temperature: 1.0, top_p: 1.0, max_tokens: 1 };
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draws = |seed: u64, salt: &[u32]| {
            let mut sampler = Sampler::new(sampling, seed, salt);
            (0..64).map(|_| sampler.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7, &[1, 2]), draws(7, &[1, 2]));
        assert_ne!(draws(7, &[1, 2]), draws(8, &[1, 2]));
        assert_ne!(draws(7, &[1, 2]), draws(7, &[1, 3]), "another prompt draws independently");
    }

    #[test]
    fn top_p_keeps_only_the_nucleus_and_temperature_zero_is_greedy() {
        // Token 3 holds almost all the mass; a nucleus of 0.5 keeps only it.
        let mut logits = vec![0.0f32; 10];
        logits[3] = 8.0;
        let mut sampler = Sampler::new(Sampling { temperature: 1.0, top_p: 0.5, max_tokens: 1 }, 1, &[]);
        assert!((0..200).all(|_| sampler.pick(&logits) == 3));
        let flat = vec![1.0f32; 5];
        assert_eq!(greedy(1).pick(&flat), 0, "ties go to the lowest id");
        let mut wide = Sampler::new(Sampling { temperature: 1.0, top_p: 1.0, max_tokens: 1 }, 1, &[]);
        let seen: std::collections::BTreeSet<u32> = (0..200).map(|_| wide.pick(&flat)).collect();
        assert_eq!(seen.len(), 5, "a flat distribution reaches every token");
    }
}
