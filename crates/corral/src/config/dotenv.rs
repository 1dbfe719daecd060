//! `KEY=VALUE` files (`env-file`, the project's `.env`) read with the rules
//! docker compose and the dotenv libraries share:
//!
//! - blank lines and lines starting with `#` are skipped; a UTF-8
//!   byte-order mark and CRLF line ends are accepted;
//! - `export` (then a space or a tab) before the name is allowed;
//! - a name is letters, digits, `_`, `.` and `-`, not starting with a digit;
//! - `'single'`: taken as written, over several lines if need be;
//! - `"double"`: `\n`, `\r`, `\t`, `\"`, `\\` and `\$` unescaped (another
//!   `\x` kept as is), over several lines if need be;
//! - unquoted: trimmed, and a ` #` (whitespace, then `#`) starts a comment;
//! - after a closing quote, only whitespace and a `#` comment may follow;
//! - a name alone on its line takes the variable from corral's environment
//!   (nothing if it is not set there).
//!
//! Whether `${...}` in a value is expanded is the reader's choice (the
//! project's `.env`: yes, as compose does; `env-file`: no); a single-quoted
//! value is never expanded.
//!
//! A line that breaks these is an error naming the line and what is wrong
//! (an unterminated quote never becomes a value with a quote in it).

/// A value as the file wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Unquoted or in double quotes (escapes already undone).
    Text(String),
    /// In single quotes: as written, never expanded.
    Literal(String),
    /// A name alone: corral's own variable of that name, if it has one.
    Inherit,
}

impl Value {
    /// The value where `${...}` is not expanded; None for `Inherit`.
    pub fn as_written(&self) -> Option<&str> {
        match self {
            Value::Text(v) | Value::Literal(v) => Some(v),
            Value::Inherit => None,
        }
    }
}

/// One `NAME=value` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: Value,
    /// Where the entry starts (from 1).
    pub line: usize,
}

/// Parses `text`; Err((line, message)) at the first malformed line.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut rest = text;
    let mut line = 1;
    while !rest.is_empty() {
        let (this, after) = split_line(rest);
        let trimmed = this.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            rest = after;
            line += 1;
            continue;
        }
        let start_line = line;
        let body = this.trim_start();
        let body = match body.strip_prefix("export") {
            Some(after_export) if after_export.starts_with([' ', '\t']) => {
                after_export.trim_start()
            }
            _ => body,
        };
        let Some((key, value)) = body.split_once('=') else {
            if is_name(trimmed) {
                out.push(Entry {
                    name: trimmed.to_string(),
                    value: Value::Inherit,
                    line,
                });
                rest = after;
                line += 1;
                continue;
            }
            return Err((line, format!("expected KEY=VALUE, found {trimmed:?}")));
        };
        let key = key.trim();
        if !is_name(key) {
            return Err((
                line,
                format!("invalid variable name {key:?} (letters, digits, '_', '.' and '-')"),
            ));
        }
        let value = value.trim_start_matches([' ', '\t']);
        // The value, and what of the text is left after it.
        let (value, left) = match value.chars().next() {
            Some(q @ ('"' | '\'')) => {
                // From the opening quote to the end of the text: the value
                // may run over several lines.
                let from = value_offset(rest, value);
                let (value, used, lines) =
                    quoted(&rest[from + 1..], q).ok_or_else(|| (start_line, unterminated(q)))?;
                line += lines;
                let after_quote = &rest[from + 1 + used..];
                let (tail, after) = split_line(after_quote);
                let tail = tail.trim();
                if !tail.is_empty() && !tail.starts_with('#') {
                    return Err((
                        line,
                        format!("unexpected {tail:?} after the closing quote of {key}"),
                    ));
                }
                let value = match q {
                    '"' => Value::Text(value),
                    _ => Value::Literal(value),
                };
                (value, after)
            }
            _ => (Value::Text(unquoted(value).to_string()), after),
        };
        out.push(Entry {
            name: key.to_string(),
            value,
            line: start_line,
        });
        rest = left;
        line += 1;
    }
    Ok(out)
}

/// The line at the start of `text` (without its end) and the text after it.
fn split_line(text: &str) -> (&str, &str) {
    match text.find('\n') {
        Some(i) => (
            text[..i].strip_suffix('\r').unwrap_or(&text[..i]),
            &text[i + 1..],
        ),
        None => (text.strip_suffix('\r').unwrap_or(text), ""),
    }
}

/// Where `part` (a slice of `whole`) starts in it.
fn value_offset(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

fn unterminated(q: char) -> String {
    let which = if q == '"' { "double" } else { "single" };
    format!("unterminated {which} quote: the value has no closing {q}")
}

/// A quoted value from just after its opening quote: (value, bytes used
/// including the closing quote, newlines crossed); None if it never closes.
fn quoted(text: &str, q: char) -> Option<(String, usize, usize)> {
    let mut value = String::new();
    let mut lines = 0;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == q => return Some((value, i + 1, lines)),
            '\\' if q == '"' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 'r')) => value.push('\r'),
                Some((_, 't')) => value.push('\t'),
                Some((_, c @ ('"' | '\\' | '$'))) => value.push(c),
                Some((_, c)) => {
                    if c == '\n' {
                        lines += 1;
                    }
                    value.push('\\');
                    value.push(c);
                }
                None => return None,
            },
            '\r' => {}
            c => {
                if c == '\n' {
                    lines += 1;
                }
                value.push(c);
            }
        }
    }
    None
}

/// An unquoted value: trimmed, without an inline ` #` comment.
fn unquoted(value: &str) -> &str {
    let mut end = value.len();
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            end = i;
            break;
        }
    }
    value[..end].trim()
}

fn is_name(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key
            .chars()
            .all(|c| c == '_' || c == '.' || c == '-' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(entries: Vec<Entry>) -> Vec<(String, Value)> {
        entries.into_iter().map(|e| (e.name, e.value)).collect()
    }

    fn one(text: &str) -> Result<String, String> {
        parse(text)
            .map(|v| {
                v.into_iter()
                    .next()
                    .and_then(|e| e.value.as_written().map(str::to_string))
                    .unwrap_or_default()
            })
            .map_err(|(line, e)| format!("{line}: {e}"))
    }

    /// Cases as compose and the dotenv libraries (godotenv, compose-go's
    /// dotenv, python-dotenv) read them.
    #[test]
    fn values_as_compose_reads_them() {
        let cases: &[(&str, &str)] = &[
            ("A=plain", "plain"),
            ("A=  spaced out  ", "spaced out"),
            ("A=", ""),
            ("A=bar # a note", "bar"),
            ("A=bar#not-a-comment", "bar#not-a-comment"),
            ("A=\"bar\\nbaz\"", "bar\nbaz"),
            ("A=\"escaped\\\"quote\"", "escaped\"quote"),
            ("A=\"back\\\\slash\"", "back\\slash"),
            ("A=\"tab\\there\"", "tab\there"),
            ("A=\"cost \\$5\"", "cost $5"),
            ("A=\"keep \\q\"", "keep \\q"),
            ("A='literal \\n $x'", "literal \\n $x"),
            ("A=\"quoted\" # a note", "quoted"),
            ("A='quoted'   ", "quoted"),
            ("A=\"line one\nline two\"", "line one\nline two"),
            (
                "A='-----BEGIN KEY-----\nabc\n-----END KEY-----'",
                "-----BEGIN KEY-----\nabc\n-----END KEY-----",
            ),
            ("export\tA=tabbed", "tabbed"),
            ("export A=spaced", "spaced"),
            ("\u{feff}A=bom", "bom"),
            ("A=crlf\r\n", "crlf"),
            ("A=\"crlf\"\r\n", "crlf"),
        ];
        for (text, want) in cases {
            assert_eq!(one(text).as_deref(), Ok(*want), "{text:?}");
        }
    }

    #[test]
    fn names_with_dots_and_dashes_and_lines_after_a_multi_line_value() {
        let parsed = parse("VAR.WITH.DOTS=x\nOPTION-B=y\nK=\"a\nb\"\nNEXT=z\n");
        assert_eq!(
            parsed.map(pairs),
            Ok(vec![
                ("VAR.WITH.DOTS".into(), Value::Text("x".into())),
                ("OPTION-B".into(), Value::Text("y".into())),
                ("K".into(), Value::Text("a\nb".into())),
                ("NEXT".into(), Value::Text("z".into())),
            ])
        );
    }

    #[test]
    fn quoting_decides_expansion_and_a_bare_name_inherits() {
        assert_eq!(
            parse("A='${X}'\nB=\"${X}\"\nC=${X}\nINHERITED\n").map(pairs),
            Ok(vec![
                ("A".into(), Value::Literal("${X}".into())),
                ("B".into(), Value::Text("${X}".into())),
                ("C".into(), Value::Text("${X}".into())),
                ("INHERITED".into(), Value::Inherit),
            ])
        );
    }

    #[test]
    fn malformed_lines_are_errors_at_their_line() {
        let cases: &[(&str, &str)] = &[
            ("A=1\nB=\"open\nC=2\n", "2: unterminated double quote"),
            ("A='open", "1: unterminated single quote"),
            ("A=1\nnot a pair\n", "2: expected KEY=VALUE"),
            ("1A=x", "1: invalid variable name \"1A\""),
            ("A B=x", "1: invalid variable name \"A B\""),
            (
                "A=\"x\" y",
                "1: unexpected \"y\" after the closing quote of A",
            ),
            ("A=\"a\nb\" junk\n", "2: unexpected \"junk\""),
        ];
        for (text, want) in cases {
            let got = one(text).unwrap_err();
            assert!(got.starts_with(want), "{text:?}: {got}");
        }
    }
}
