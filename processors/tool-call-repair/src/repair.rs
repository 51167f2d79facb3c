//! The repairs themselves, as plain functions over strings.
//!
//! [`repair_arguments`] rewrites almost-JSON into JSON in one left-to-right
//! pass that tracks strings and open brackets, so every fix is local and the
//! pass costs O(length): single quotes become double quotes, keys and bare
//! words get quoted, Python's `True`/`False`/`None` become JSON literals,
//! trailing commas go, and unclosed strings and brackets are closed at the
//! end. Text around the JSON (prose, code fences) is cut away. The result
//! only counts when `serde_json` then parses it as an object.

use serde_json::Value;

/// The outcome of [`repair_arguments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentRepair {
    /// Already a JSON object: leave it alone.
    WellFormed,
    /// The repaired arguments, as compact JSON.
    Repaired(String),
    /// No JSON object could be recovered.
    Unrepairable,
}

/// Repairs tool-call arguments into a JSON object.
///
/// `single_parameter` names the tool's only parameter, if it has exactly one:
/// then a bare value (`"red shoes"`, `red shoes`, `42`) becomes
/// `{"<parameter>": <value>}`.
pub fn repair_arguments(raw: &str, single_parameter: Option<&str>) -> ArgumentRepair {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(_)) => return ArgumentRepair::WellFormed,
        Ok(value) => {
            return match (single_parameter, value) {
                (
                    Some(parameter),
                    value @ (Value::String(_) | Value::Number(_) | Value::Bool(_)),
                ) => ArgumentRepair::Repaired(wrap(parameter, value)),
                _ => ArgumentRepair::Unrepairable,
            }
        }
        Err(_) => {}
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return ArgumentRepair::Repaired("{}".to_owned());
    }
    let body = strip_code_fence(trimmed);
    match body.find('{') {
        Some(start) => match parse_object(&rewrite_json(&body[start..])) {
            Some(object) => ArgumentRepair::Repaired(object),
            None => ArgumentRepair::Unrepairable,
        },
        None => match single_parameter {
            // A bare value for a one-parameter tool, e.g. `search[red shoes]`.
            Some(parameter) => {
                let value = body.trim().trim_matches(|c| c == '"' || c == '\'').trim();
                if value.is_empty() {
                    ArgumentRepair::Unrepairable
                } else {
                    ArgumentRepair::Repaired(wrap(parameter, Value::String(value.to_owned())))
                }
            }
            None => ArgumentRepair::Unrepairable,
        },
    }
}

fn wrap(parameter: &str, value: Value) -> String {
    let mut object = serde_json::Map::new();
    object.insert(parameter.to_owned(), value);
    Value::Object(object).to_string()
}

fn parse_object(text: &str) -> Option<String> {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Some(value.to_string()),
        _ => None,
    }
}

/// The inside of the first ```` ``` ```` fence, if the text has one.
fn strip_code_fence(text: &str) -> &str {
    let Some(open) = text.find("```") else {
        return text;
    };
    let after_open = &text[open + 3..];
    // Skip the info string (`json`) up to the end of the line.
    let body_start = after_open.find('\n').map_or(0, |at| at + 1);
    let body = &after_open[body_start..];
    match body.find("```") {
        Some(close) => &body[..close],
        None => body,
    }
}

/// Rewrites almost-JSON that starts with `{` into JSON text. Stops after the
/// bracket that closes the first one; closes whatever is still open at the end.
fn rewrite_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut open: Vec<char> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i = copy_string(&chars, i, &mut out);
                continue;
            }
            '{' | '[' => {
                open.push(if c == '{' { '}' } else { ']' });
                out.push(c);
            }
            '}' | ']' => {
                drop_trailing_comma(&mut out);
                // Close what the bracket closes, even if an inner one was left open.
                let Some(position) = open.iter().rposition(|&closer| closer == c) else {
                    i += 1;
                    continue; // A stray closer: drop it.
                };
                while open.len() > position {
                    let closer = open.pop().expect("position is within the stack");
                    drop_trailing_comma(&mut out);
                    out.push(closer);
                }
                if open.is_empty() {
                    return out; // The object is complete; ignore any text after it.
                }
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$' | '-' | '.'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
                match word.as_str() {
                    _ if next == Some(':') => push_json_string(&mut out, &word),
                    "true" | "True" | "TRUE" => out.push_str("true"),
                    "false" | "False" | "FALSE" => out.push_str("false"),
                    "null" | "None" | "none" | "nil" | "undefined" | "NULL" => out.push_str("null"),
                    _ => {
                        // A bare word value: take the rest of the value, up to a delimiter.
                        let mut end = i;
                        while end < chars.len() && !matches!(chars[end], ',' | '}' | ']' | '\n') {
                            end += 1;
                        }
                        let value: String = chars[start..end].iter().collect();
                        push_json_string(&mut out, value.trim_end());
                        i = end;
                    }
                }
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    // Unclosed brackets: close them, innermost first.
    drop_trailing_colon(&mut out);
    while let Some(closer) = open.pop() {
        drop_trailing_comma(&mut out);
        out.push(closer);
    }
    out
}

/// Copies the string starting at `chars[start]` (opened by `"` or `'`) as a
/// JSON string; returns the index after it. An unclosed string is closed.
fn copy_string(chars: &[char], start: usize, out: &mut String) -> usize {
    let quote = chars[start];
    out.push('"');
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                let next = chars[i + 1];
                if next == '\'' {
                    out.push('\''); // `\'` is not a JSON escape.
                } else {
                    out.push('\\');
                    out.push(next);
                }
                i += 2;
                continue;
            }
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('"');
                return i + 1;
            }
            '"' => out.push_str("\\\""), // Inside a single-quoted string.
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
        i += 1;
    }
    out.push('"');
    i
}

fn push_json_string(out: &mut String, text: &str) {
    out.push_str(&Value::String(text.to_owned()).to_string());
}

fn drop_trailing_comma(out: &mut String) {
    let kept = out.trim_end().len();
    if out[..kept].ends_with(',') {
        out.truncate(kept - 1);
    }
}

/// `{"a":` at the very end: give the key a null value so the object closes.
fn drop_trailing_colon(out: &mut String) {
    let kept = out.trim_end().len();
    if out[..kept].ends_with(':') {
        out.truncate(kept);
        out.push_str("null");
    }
}

/// A name reduced to its letters and digits, lowercased, without a
/// `functions.` style namespace: `Web_Search`, `web-search` and
/// `functions.web_search` all become `websearch`.
pub fn normalize_name(name: &str) -> String {
    let base = name.rsplit('.').next().unwrap_or(name);
    base.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The known tool that an unknown `name` most likely meant, if exactly one
/// stands out: first by normalized name, then by a small edit distance, then
/// by one name containing the other.
pub fn nearest_tool<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    if known.iter().any(|tool| tool == name) {
        return None;
    }
    let wanted = normalize_name(name);
    if wanted.is_empty() {
        return None;
    }
    let normalized: Vec<String> = known.iter().map(|tool| normalize_name(tool)).collect();
    let unique = |matches: Vec<usize>| match matches.as_slice() {
        [only] => Some(known[*only].as_str()),
        _ => None,
    };
    let same: Vec<usize> = (0..known.len())
        .filter(|&i| normalized[i] == wanted)
        .collect();
    if !same.is_empty() {
        return unique(same);
    }
    let distances: Vec<usize> = normalized
        .iter()
        .map(|tool| edit_distance(&wanted, tool))
        .collect();
    if let Some(&best) = distances.iter().min() {
        let longest = |i: usize| wanted.chars().count().max(normalized[i].chars().count());
        let close: Vec<usize> = (0..known.len())
            .filter(|&i| distances[i] == best && best * 3 <= longest(i) && best <= 3)
            .collect();
        if !close.is_empty() {
            return unique(close);
        }
    }
    let containing: Vec<usize> = (0..known.len())
        .filter(|&i| {
            normalized[i].chars().count() >= 4
                && (wanted.contains(normalized[i].as_str())
                    || normalized[i].contains(wanted.as_str()))
        })
        .collect();
    unique(containing)
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// A call written as text: the tool's name and the raw text of its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextCall {
    /// The known tool's name.
    pub name: String,
    /// What stood between the brackets, untrimmed.
    pub arguments: String,
}

/// Finds calls written as text, `name[...]` or `name(...)`, for known tool
/// names, in order of appearance. Brackets inside JSON strings are skipped.
pub fn calls_in_text(text: &str, known: &[String]) -> Vec<TextCall> {
    let mut found: Vec<(usize, TextCall)> = Vec::new();
    for name in known.iter().filter(|name| !name.is_empty()) {
        let mut from = 0;
        while let Some(offset) = text[from..].find(name.as_str()) {
            let at = from + offset;
            from = at + name.len();
            let before_ok = text[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !is_name_char(c));
            if !before_ok {
                continue;
            }
            let rest = &text[at + name.len()..];
            let Some(open) = rest.chars().next() else {
                continue;
            };
            let close = match open {
                '[' => ']',
                '(' => ')',
                _ => continue,
            };
            if let Some(length) = bracketed_length(&rest[1..], open, close) {
                let arguments = rest[1..1 + length].to_owned();
                found.push((
                    at,
                    TextCall {
                        name: name.clone(),
                        arguments,
                    },
                ));
                from = at + name.len() + 1 + length + 1;
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, call)| call).collect()
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '.'
}

/// Length of the text up to the `close` that balances an already-consumed
/// `open`, skipping quoted strings; `None` if it never closes.
fn bracketed_length(text: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' => quote = Some(c),
            c if c == open => depth += 1,
            c if c == close => {
                if depth == 0 {
                    return Some(at);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repaired(raw: &str) -> String {
        match repair_arguments(raw, None) {
            ArgumentRepair::Repaired(text) => text,
            other => panic!("expected a repair of {raw:?}, got {other:?}"),
        }
    }

    #[test]
    fn well_formed_objects_are_left_alone() {
        assert_eq!(
            repair_arguments(r#"{"q": "a", "n": [1, 2]}"#, None),
            ArgumentRepair::WellFormed
        );
        assert_eq!(
            repair_arguments("{}", Some("q")),
            ArgumentRepair::WellFormed
        );
    }

    #[test]
    fn single_quotes_and_python_literals() {
        assert_eq!(
            repaired("{'q': 'red shoes', 'exact': True, 'page': None}"),
            r#"{"exact":true,"page":null,"q":"red shoes"}"#
        );
        assert_eq!(repaired(r#"{'q': 'say "hi"'}"#), r#"{"q":"say \"hi\""}"#);
        assert_eq!(repaired(r"{'q': 'it\'s'}"), r#"{"q":"it's"}"#);
    }

    #[test]
    fn trailing_commas_go() {
        assert_eq!(
            repaired(r#"{"a": [1, 2,], "b": 3,}"#),
            r#"{"a":[1,2],"b":3}"#
        );
    }

    #[test]
    fn unclosed_strings_and_brackets_are_closed() {
        assert_eq!(repaired(r#"{"q": "red shoes"#), r#"{"q":"red shoes"}"#);
        assert_eq!(repaired(r#"{"q": {"a": [1, 2"#), r#"{"q":{"a":[1,2]}}"#);
        assert_eq!(
            repaired(r#"{"q": "x", "page":"#),
            r#"{"page":null,"q":"x"}"#
        );
        assert_eq!(repaired(r#"{"a": [1, 2}"#), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn unquoted_keys_and_bare_words() {
        assert_eq!(
            repaired("{query: \"red shoes\", limit: 5}"),
            r#"{"limit":5,"query":"red shoes"}"#
        );
        assert_eq!(repaired("{query: red shoes}"), r#"{"query":"red shoes"}"#);
    }

    #[test]
    fn text_and_fences_around_the_json_are_cut() {
        assert_eq!(
            repaired("Sure! Here are the arguments: {\"q\": \"a\"} Hope that helps."),
            r#"{"q":"a"}"#
        );
        assert_eq!(repaired("```json\n{\"q\": \"a\",}\n```"), r#"{"q":"a"}"#);
    }

    #[test]
    fn empty_arguments_become_an_empty_object() {
        assert_eq!(repaired("  "), "{}");
    }

    #[test]
    fn bare_values_fill_a_single_parameter() {
        assert_eq!(
            repair_arguments("red shoes", Some("query")),
            ArgumentRepair::Repaired(r#"{"query":"red shoes"}"#.into())
        );
        assert_eq!(
            repair_arguments(r#""red shoes""#, Some("query")),
            ArgumentRepair::Repaired(r#"{"query":"red shoes"}"#.into())
        );
        assert_eq!(
            repair_arguments("red shoes", None),
            ArgumentRepair::Unrepairable
        );
        assert_eq!(
            repair_arguments("[1, 2]", Some("query")),
            ArgumentRepair::Unrepairable
        );
    }

    #[test]
    fn nonsense_stays_unrepairable() {
        assert_eq!(
            repair_arguments("{{{:::", None),
            ArgumentRepair::Unrepairable
        );
    }

    #[test]
    fn names_map_to_the_nearest_known_tool() {
        let known: Vec<String> = ["search", "click", "buy_item", "read_page"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            nearest_tool("search", &known),
            None,
            "a known name needs no mapping"
        );
        assert_eq!(nearest_tool("Search", &known), Some("search"));
        assert_eq!(nearest_tool("functions.search", &known), Some("search"));
        assert_eq!(nearest_tool("buy-item", &known), Some("buy_item"));
        assert_eq!(nearest_tool("serch", &known), Some("search"));
        assert_eq!(nearest_tool("readpage_tool", &known), Some("read_page"));
        assert_eq!(nearest_tool("teleport", &known), None);
        assert_eq!(nearest_tool("", &known), None);
    }

    #[test]
    fn ambiguous_names_are_not_guessed() {
        let known: Vec<String> = ["get_a", "get_b"].map(String::from).to_vec();
        assert_eq!(nearest_tool("get_c", &known), None);
    }

    #[test]
    fn edit_distance_counts_single_char_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn calls_written_as_text_are_found() {
        let known: Vec<String> = ["search", "click"].map(String::from).to_vec();
        let found = calls_in_text(
            r#"I will search[{"query": "red [shoes]"}] and then click({"id": 3})."#,
            &known,
        );
        assert_eq!(
            found,
            [
                TextCall {
                    name: "search".into(),
                    arguments: r#"{"query": "red [shoes]"}"#.into()
                },
                TextCall {
                    name: "click".into(),
                    arguments: r#"{"id": 3}"#.into()
                },
            ]
        );
        assert!(calls_in_text("research[x] and search it", &known).is_empty());
        assert!(
            calls_in_text("search[{\"q\": 1}", &known).is_empty(),
            "an unclosed call is not a call"
        );
    }
}
