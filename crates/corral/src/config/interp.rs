//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
//! `${VAR?message}` and `$$` interpolation of config strings, as compose
//! and the shell have them.

use std::collections::BTreeSet;

/// Where interpolated names are looked up.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The result of expanding one string.
#[derive(Debug, PartialEq, Eq)]
pub struct Expanded {
    pub value: String,
    /// Names referenced without a default that were not set (expanded to "").
    pub unset: BTreeSet<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    #[error("unterminated `${{` in {0:?}")]
    Unterminated(String),
    #[error("invalid variable name {name:?} in `${{...}}` (use `$$` for a literal `$`)")]
    BadName { name: String },
    /// `${VAR:?message}` with VAR unset or empty, `${VAR?message}` with it unset.
    #[error("{name} is required: {message}")]
    Required { name: String, message: String },
    #[error("`${{...}}` nested deeper than {MAX_NESTING} levels")]
    TooDeep,
}

/// How deep `${A:-${B:-...}}` may nest: far more than a config needs, and
/// a bound on the recursion (a stack overflow would end corral).
pub const MAX_NESTING: usize = 100;

/// What follows a name in `${...}`: `:-`/`-` (a default when unset or
/// empty / unset), `:?`/`?` (an error when unset or empty / unset).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Modifier {
    None,
    Default { or_empty: bool },
    Required { or_empty: bool },
}

/// Splits `NAME`, `NAME:-x`, `NAME-x`, `NAME:?x` or `NAME?x`.
fn split_body(body: &str) -> (&str, Modifier, &str) {
    let end = body
        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(body.len());
    let (name, rest) = body.split_at(end);
    let modifiers = [
        (":-", Modifier::Default { or_empty: true }),
        ("-", Modifier::Default { or_empty: false }),
        (":?", Modifier::Required { or_empty: true }),
        ("?", Modifier::Required { or_empty: false }),
    ];
    for (token, modifier) in modifiers {
        if let Some(arg) = rest.strip_prefix(token) {
            return (name, modifier, arg);
        }
    }
    // Anything else after the name makes it an invalid name.
    (body, Modifier::None, "")
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$`; any other `$` is kept as is,
/// so `sh -c "echo $HOME"` reaches the shell unchanged.
pub fn expand(input: &str, vars: &dyn Vars) -> Result<Expanded, InterpError> {
    expand_at(input, vars, 0)
}

/// `expand` of a default or a message at `depth` levels of `${...}`.
fn expand_at(input: &str, vars: &dyn Vars, depth: usize) -> Result<Expanded, InterpError> {
    if depth > MAX_NESTING {
        return Err(InterpError::TooDeep);
    }
    let mut value = String::with_capacity(input.len());
    let mut unset = BTreeSet::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        value.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            value.push('$');
            rest = tail;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = closing_brace(body_start)
                .ok_or_else(|| InterpError::Unterminated(input.to_string()))?;
            let body = &body_start[..end];
            let (name, modifier, arg) = split_body(body);
            if !is_var_name(name) {
                return Err(InterpError::BadName {
                    name: name.to_string(),
                });
            }
            let value_of = vars.get(name);
            let missing = |or_empty: bool| match &value_of {
                None => true,
                Some(v) => or_empty && v.is_empty(),
            };
            match modifier {
                Modifier::Default { or_empty } if missing(or_empty) => {
                    value.push_str(&expand_at(arg, vars, depth + 1)?.value)
                }
                Modifier::Required { or_empty } if missing(or_empty) => {
                    let message = expand_at(arg, vars, depth + 1)?.value;
                    return Err(InterpError::Required {
                        name: name.to_string(),
                        message: if message.is_empty() {
                            "it is not set".into()
                        } else {
                            message
                        },
                    });
                }
                _ => match value_of {
                    Some(v) => value.push_str(&v),
                    None => {
                        unset.insert(name.to_string());
                    }
                },
            }
            rest = &body_start[end + 1..];
        } else {
            value.push('$');
            rest = after;
        }
    }
    value.push_str(rest);
    Ok(Expanded { value, unset })
}

/// Index of the `}` that closes a `${`, allowing `${...}` nested in a default.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/root".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8000".into()),
            _ => None,
        }
    }

    fn ex(s: &str) -> String {
        expand(s, &vars)
            .map(|e| e.value)
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn expands_braced_names_and_defaults() {
        assert_eq!(ex("${HOME}/x"), "/root/x");
        assert_eq!(ex("--port ${PORT}"), "--port 8000");
        assert_eq!(ex("${NOPE:-fallback}"), "fallback");
        assert_eq!(ex("${EMPTY:-fallback}"), "fallback");
        assert_eq!(ex("${NOPE:-${PORT}}"), "8000");
        assert_eq!(ex("${EMPTY}"), "");
    }

    #[test]
    fn dollar_dollar_is_literal_and_bare_dollar_is_kept() {
        assert_eq!(ex("echo $HOME"), "echo $HOME");
        assert_eq!(ex("cost $$5"), "cost $5");
        assert_eq!(ex("$${HOME}"), "${HOME}");
        assert_eq!(ex("trailing $"), "trailing $");
    }

    #[test]
    fn reports_unset_and_malformed() {
        let e = expand("${NOPE}x", &vars).unwrap_or_else(|_| unreachable!());
        assert_eq!(e.value, "x");
        assert!(e.unset.contains("NOPE"));
        assert!(ex("${HOME").starts_with("ERR unterminated"));
        assert!(ex("${1X}").starts_with("ERR invalid variable name"));
        assert!(ex("${A B}").starts_with("ERR invalid variable name"));
    }

    #[test]
    fn nesting_is_bounded() {
        let nest = |n: usize| format!("{}x{}", "${NOPE:-".repeat(n), "}".repeat(n));
        assert_eq!(ex(&nest(MAX_NESTING)), "x");
        assert_eq!(
            ex(&nest(MAX_NESTING + 1)),
            "ERR `${...}` nested deeper than 100 levels"
        );
        // Far deeper than the stack would hold: an error, not a crash.
        assert!(ex(&nest(50_000)).starts_with("ERR `${...}` nested deeper"));
    }

    #[test]
    fn dash_defaults_only_when_unset_and_question_marks_require() {
        assert_eq!(ex("${NOPE-fallback}"), "fallback");
        assert_eq!(ex("${EMPTY-fallback}"), "");
        assert_eq!(ex("${PORT-1}"), "8000");
        assert_eq!(ex("${PORT:?needed}"), "8000");
        assert_eq!(ex("${EMPTY?needed}"), "");
        assert_eq!(
            ex("${NOPE:?set NOPE to the api key}"),
            "ERR NOPE is required: set NOPE to the api key"
        );
        assert_eq!(
            ex("${EMPTY:?must not be empty}"),
            "ERR EMPTY is required: must not be empty"
        );
        assert_eq!(ex("${NOPE?}"), "ERR NOPE is required: it is not set");
    }
}
