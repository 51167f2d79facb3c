//! Helpers for the JSON config a processor receives at `configure`.
//!
//! The manifest's config reaches the processor as JSON text (`{}` when there
//! is none). [`parse`] turns it into the processor's own config struct with
//! serde; derive `Deserialize` with `#[serde(default, deny_unknown_fields)]`
//! so that missing keys take their defaults and an unknown key is refused
//! with an error that names it (a typo in a manifest must not be ignored).
//! A value of the wrong type is refused with the key's path, e.g.
//! ``config for `loop-guard` is invalid at `ignore`: invalid type: ...``.

use serde::de::DeserializeOwned;

/// Parses `config` into `T`. Empty or blank text counts as `{}`.
///
/// Errors are meant for the user as they stand, e.g.
/// ``config for `loop-guard` is invalid: unknown field `windw`, expected one of `window`, ...``.
///
/// ```
/// #[derive(serde::Deserialize, Default, Debug)]
/// #[serde(default, deny_unknown_fields)]
/// struct Config { window: u32 }
///
/// let config: Config = kiln_guest::config::parse("demo", r#"{"window": 4}"#).unwrap();
/// assert_eq!(config.window, 4);
/// let error = kiln_guest::config::parse::<Config>("demo", r#"{"windw": 4}"#).unwrap_err();
/// assert!(error.contains("unknown field `windw`"));
/// let error = kiln_guest::config::parse::<Config>("demo", r#"{"window": "4"}"#).unwrap_err();
/// assert!(error.starts_with("config for `demo` is invalid at `window`: invalid type: string"), "{error}");
/// ```
pub fn parse<T: DeserializeOwned>(processor: &str, config: &str) -> Result<T, String> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        // The path of the key whose value was refused; `.` is the top level
        // (an unknown key, say), which the message itself names.
        let path = error.path().to_string();
        let described = describe_error(processor, error.inner());
        match path.as_str() {
            "." | "" => described,
            _ => described.replacen(" is invalid:", &format!(" is invalid at `{path}`:"), 1),
        }
    })?;
    deserializer.end().map_err(|error| describe_error(processor, &error))?;
    Ok(value)
}

/// Accepts empty text and any well-formed JSON, refusing anything else; the
/// default [`Processor::configure`](crate::Processor::configure).
pub fn accept_any_json(processor: &str, config: &str) -> Result<(), String> {
    if config.trim().is_empty() {
        return Ok(());
    }
    serde_json::from_str::<serde::de::IgnoredAny>(config)
        .map(|_| ())
        .map_err(|error| describe_error(processor, &error))
}

fn describe_error(processor: &str, error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof => {
            format!("config for `{processor}` is not valid JSON: {error}")
        }
        _ => format!("config for `{processor}` is invalid: {error}"),
    }
}
