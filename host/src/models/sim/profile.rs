//! Profiles and knobs: how good the simulated model is, and at what.
//!
//! A spec is a profile name with optional overrides in query-string form:
//! `weak`, `sim:strong`, `weak?loop_rate=0.5&window=2000`. Every knob is a
//! rate in [0, 1] except `window`, a context size in approximate tokens.

use std::fmt::Write as _;

use crate::models::ModelError;

/// Every failure mode of the simulated model, each a tunable rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Knobs {
    /// Context window in approximate tokens (chars / 4). The oldest messages
    /// are dropped first; the system prompt always stays.
    pub window: u32,
    /// Chance per call of repeating the previous call instead of thinking.
    pub loop_rate: f64,
    /// Once the last two calls are identical: chance of repeating again.
    pub loop_persist: f64,
    /// Chance of following advice (`[advice from ...]`: loop, step budget).
    pub obey: f64,
    /// Chance of changing course after `[blocked by ...]`.
    pub obey_block: f64,
    /// Chance of writing broken JSON arguments (single quotes, trailing
    /// comma, missing brace).
    pub malformed_rate: f64,
    /// Chance of calling a tool by an invented name (`search_products`).
    pub invent_rate: f64,
    /// Chance of writing the call as text (`search[{...}]`) instead of a
    /// tool call, which the loop takes for a final answer.
    pub text_call_rate: f64,
    /// `house`: chance of an inadmissible command (wrong number, taking from
    /// a closed receptacle).
    pub invalid_rate: f64,
    /// Chance per call of giving a final answer before the task is done.
    pub early_stop_rate: f64,
    /// `shop`: chance, when ready to buy, of browsing on instead.
    pub dither_rate: f64,
    /// `shop`: chance per task of not checking product pages against the
    /// goal (buys on the title), and per call of skipping options.
    pub careless_rate: f64,
}

/// Knob names, in documentation order.
pub const KNOB_NAMES: &[&str] = &[
    "window",
    "loop_rate",
    "loop_persist",
    "obey",
    "obey_block",
    "malformed_rate",
    "invent_rate",
    "text_call_rate",
    "invalid_rate",
    "early_stop_rate",
    "dither_rate",
    "careless_rate",
];

/// Profile names, weakest first.
pub const PROFILE_NAMES: &[&str] = &["weak", "mid", "strong", "perfect"];

impl Knobs {
    /// The built-in profile called `name`.
    pub fn profile(name: &str) -> Option<Knobs> {
        Some(match name {
            "perfect" => Knobs {
                window: 1_000_000,
                loop_rate: 0.0,
                loop_persist: 0.0,
                obey: 1.0,
                obey_block: 1.0,
                malformed_rate: 0.0,
                invent_rate: 0.0,
                text_call_rate: 0.0,
                invalid_rate: 0.0,
                early_stop_rate: 0.0,
                dither_rate: 0.0,
                careless_rate: 0.0,
            },
            "strong" => Knobs {
                window: 32_000,
                loop_rate: 0.01,
                loop_persist: 0.3,
                obey: 0.95,
                obey_block: 0.98,
                malformed_rate: 0.01,
                invent_rate: 0.005,
                text_call_rate: 0.001,
                invalid_rate: 0.02,
                early_stop_rate: 0.001,
                dither_rate: 0.05,
                careless_rate: 0.02,
            },
            "mid" => Knobs {
                window: 3_000,
                loop_rate: 0.05,
                loop_persist: 0.6,
                obey: 0.8,
                obey_block: 0.9,
                malformed_rate: 0.05,
                invent_rate: 0.03,
                text_call_rate: 0.01,
                invalid_rate: 0.08,
                early_stop_rate: 0.01,
                dither_rate: 0.2,
                careless_rate: 0.1,
            },
            "weak" => Knobs {
                window: 1_000,
                loop_rate: 0.1,
                loop_persist: 0.8,
                obey: 0.7,
                obey_block: 0.9,
                malformed_rate: 0.12,
                invent_rate: 0.08,
                text_call_rate: 0.03,
                invalid_rate: 0.05,
                early_stop_rate: 0.015,
                dither_rate: 0.5,
                careless_rate: 0.4,
            },
            _ => return None,
        })
    }

    fn set(&mut self, knob: &str, value: &str, spec: &str) -> Result<(), ModelError> {
        if knob == "window" {
            self.window = value.parse().ok().filter(|w| *w > 0).ok_or_else(|| {
                ModelError::Config(format!(
                    "sim knob `window` in `{spec}` needs a whole number of tokens above 0, got `{value}`"
                ))
            })?;
            return Ok(());
        }
        let rate = match knob {
            "loop_rate" => &mut self.loop_rate,
            "loop_persist" => &mut self.loop_persist,
            "obey" => &mut self.obey,
            "obey_block" => &mut self.obey_block,
            "malformed_rate" => &mut self.malformed_rate,
            "invent_rate" => &mut self.invent_rate,
            "text_call_rate" => &mut self.text_call_rate,
            "invalid_rate" => &mut self.invalid_rate,
            "early_stop_rate" => &mut self.early_stop_rate,
            "dither_rate" => &mut self.dither_rate,
            "careless_rate" => &mut self.careless_rate,
            unknown => {
                return Err(ModelError::Config(format!(
                    "unknown sim knob `{unknown}` in `{spec}`; known knobs: {}",
                    KNOB_NAMES.join(", ")
                )))
            }
        };
        *rate = value.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
            ModelError::Config(format!("sim knob `{knob}` in `{spec}` needs a number from 0 to 1, got `{value}`"))
        })?;
        Ok(())
    }
}

/// A parsed spec: the profile's name, its knobs with overrides applied, and
/// the canonical spec text (used in `describe` and in the randomness).
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// `weak`, `mid`, `strong` or `perfect`.
    pub name: String,
    /// The profile's knobs with the overrides applied.
    pub knobs: Knobs,
    /// `sim:<name>` plus the overrides as given, e.g. `sim:weak?window=2000`.
    pub canonical: String,
}

impl Profile {
    /// Parse `weak`, `sim:weak` or `weak?knob=value&knob=value`.
    pub fn parse(spec: &str) -> Result<Profile, ModelError> {
        let trimmed = spec.trim();
        let body = trimmed.strip_prefix("sim:").unwrap_or(trimmed);
        let (name, overrides) = body.split_once('?').unwrap_or((body, ""));
        let mut knobs = Knobs::profile(name).ok_or_else(|| {
            ModelError::Config(format!(
                "unknown sim profile `{name}` in `{spec}`; expected one of: {}",
                PROFILE_NAMES.join(", ")
            ))
        })?;
        let mut canonical = format!("sim:{name}");
        let mut separator = '?';
        for pair in overrides.split('&').filter(|p| !p.is_empty()) {
            let (knob, value) = pair.split_once('=').ok_or_else(|| {
                ModelError::Config(format!("sim override `{pair}` in `{spec}` must look like `knob=value`"))
            })?;
            knobs.set(knob.trim(), value.trim(), spec)?;
            let _ = write!(canonical, "{separator}{}={}", knob.trim(), value.trim());
            separator = '&';
        }
        Ok(Profile { name: name.to_string(), knobs, canonical })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_overrides_parse() {
        let weak = Profile::parse("weak").unwrap();
        assert_eq!(weak.canonical, "sim:weak");
        let tuned = Profile::parse("sim:weak?loop_rate=0.5&window=2000").unwrap();
        assert_eq!(tuned.knobs.loop_rate, 0.5);
        assert_eq!(tuned.knobs.window, 2000);
        assert_eq!(tuned.knobs.obey, weak.knobs.obey);
        assert_eq!(tuned.canonical, "sim:weak?loop_rate=0.5&window=2000");
        for name in PROFILE_NAMES {
            assert!(Profile::parse(name).is_ok());
        }
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let message = |spec: &str| Profile::parse(spec).unwrap_err().to_string();
        let unknown_knob = message("weak?loop_rat=0.5");
        assert!(
            unknown_knob.contains("unknown sim knob `loop_rat`") && unknown_knob.contains("loop_rate"),
            "{unknown_knob}"
        );
        assert!(message("genius").contains("unknown sim profile `genius`"));
        assert!(message("weak?obey=2").contains("`obey`"));
        assert!(message("weak?window=-1").contains("`window`"));
        assert!(message("weak?obey").contains("knob=value"));
    }
}
