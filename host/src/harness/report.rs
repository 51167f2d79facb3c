//! Rendering a manifest error as a snippet with a caret, in the house style:
//!
//! ```text
//! harness `demo.toml` is invalid
//!   ╭─[demo.toml:7:9]
//! 7 │ group = "trimmer"
//!   ·         ────┬────
//!   ·             ╰── a second processor in singleton group `trimmer`
//! help: remove one, or use `replace` to swap them
//! ```
//!
//! Written by hand rather than through miette: one label per error is all a
//! manifest needs, the output is plain text (stable in tests and logs), and
//! the CLI prefixes it with `error: ` like every other error.

use std::ops::Range;

/// A 1-based line and column (in characters) of a byte offset in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Render one labelled span of `text` (the contents of `file`).
pub(crate) fn render(file: &str, text: &str, span: Range<usize>, label: &str, help: Option<&str>) -> String {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let (line, col) = line_col(text, start);
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[start..].find('\n').map(|i| start + i).unwrap_or(text.len());
    let source_line = text[line_start..line_end].trim_end_matches('\r');
    // Underline the part of the span on the first line; at least one column.
    let end = floor_char_boundary(text, span.end.clamp(start, line_end.max(start)));
    let width = text[start..end].chars().count().max(1);
    let gutter = line.to_string().len();
    let pad = " ".repeat(gutter);
    let indent = " ".repeat(col - 1);
    let mid = width / 2;
    let underline: String = (0..width).map(|i| if i == mid { '┬' } else { '─' }).collect();
    let mut out = format!("harness `{file}` is invalid\n");
    out += &format!("{pad} ╭─[{file}:{line}:{col}]\n");
    // Tabs would shift the caret: show them as one space, as they are counted.
    out += &format!("{line} │ {}\n", source_line.replace('\t', " "));
    out += &format!("{pad} · {indent}{underline}\n");
    out += &format!("{pad} · {indent}{}╰── {label}", " ".repeat(mid));
    if let Some(help) = help {
        out += &format!("\nhelp: {help}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_label_under_the_span() {
        let text = "name = \"x\"\ngroup = \"trimmer\"\n";
        let start = text.find("\"trimmer\"").unwrap();
        let out = render("demo.toml", text, start..start + 9, "a second processor in singleton group `trimmer`", Some("remove one"));
        assert_eq!(
            out,
            "harness `demo.toml` is invalid\n  ╭─[demo.toml:2:9]\n2 │ group = \"trimmer\"\n  ·         ────┬────\n  ·             ╰── a second processor in singleton group `trimmer`\nhelp: remove one"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "system = \"é\" x";
        let at = text.find('x').unwrap();
        assert_eq!(line_col(text, at), (1, 14));
    }

    #[test]
    fn empty_span_at_end_of_file_still_points() {
        let text = "a = 1";
        let out = render("f.toml", text, 5..5, "here", None);
        assert!(out.contains("[f.toml:1:6]"), "{out}");
        assert!(out.ends_with("╰── here"), "{out}");
    }
}
