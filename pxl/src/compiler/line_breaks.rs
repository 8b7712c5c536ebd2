//! Pixie's parser takes call arguments separated by a line break alone; Python's does
//! not. This puts the missing commas in.

use super::*;

/// Parses a script as Pixie's parser does, which also takes call arguments and list
/// items separated by a line break without a comma: where Python's parser stops at
/// the first token of a line inside brackets, right after a value, a comma is put at the
/// end of the line before and the script parsed again. Returns the patched source when
/// it needed one (only commas at line ends are added, so lines and columns stay where
/// they were).
pub(super) fn parse_with_line_break_commas(
    source: &str,
) -> (
    Option<String>,
    std::result::Result<ast::Mod, rustpython_parser::ParseError>,
) {
    /// Commas added at most: a script with more is not waiting for commas.
    const MAX_PATCHES: usize = 256;
    let mut patched: Option<String> = None;
    for _ in 0..MAX_PATCHES {
        let text = patched.as_deref().unwrap_or(source);
        match parse(text, Mode::Module, "<script>") {
            Ok(module) => return (patched, Ok(module)),
            Err(error) => {
                let offset = (u32::from(error.offset) as usize).min(text.len());
                let Some(at) = comma_position(text, offset) else {
                    return (patched, Err(error));
                };
                let mut next = text.to_owned();
                next.insert(at, ',');
                patched = Some(next);
            }
        }
    }
    let text = patched.as_deref().unwrap_or(source);
    (patched.clone(), parse(text, Mode::Module, "<script>"))
}

/// Where a missing comma goes when the parser stopped at `offset`: the end of the
/// previous non-blank line, if the token there starts its line, the line before ends
/// with a value (not an opening bracket, a comma or an operator) and a bracket is open.
fn comma_position(text: &str, offset: usize) -> Option<usize> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    if !before[line_start..].trim().is_empty() {
        return None; // The token does not start its line.
    }
    let previous = before[..line_start].trim_end();
    let last = previous.chars().last()?;
    if matches!(
        last,
        ',' | '(' | '[' | '{' | ':' | '=' | '+' | '-' | '*' | '/' | '\\'
    ) {
        return None;
    }
    if text[offset..].starts_with([')', ']', '}']) {
        return None;
    }
    let depth = previous.chars().fold(0i32, |d, c| match c {
        '(' | '[' | '{' => d + 1,
        ')' | ']' | '}' => d - 1,
        _ => d,
    });
    (depth > 0).then_some(previous.len())
}
