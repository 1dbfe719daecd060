//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
//! `${VAR?message}`, `${VAR:+alternative}`, `${VAR+alternative}` and `$$`
//! interpolation of config strings, as compose (compose-go's `template`)
//! and the shell have them. Braces balance: `${JSON:-{"a":1}}` ends at the
//! `}` that closes its `${`. A bare `$VAR` is kept as written (compose
//! expands it): commands are often shell scripts, and the shell should see
//! its own variables.

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
    #[error("`{0}` has no closing `}}`")]
    Unterminated(String),
    #[error("invalid variable name {name:?} in `{construct}` (a name is letters, digits and `_`; after it :- - :? ? :+ or +; `$$` is a literal `$`)")]
    BadName { name: String, construct: String },
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
/// empty / unset), `:?`/`?` (an error when unset or empty / unset),
/// `:+`/`+` (an alternative when set and not empty / set).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Modifier {
    None,
    Default { or_empty: bool },
    Required { or_empty: bool },
    Alternative { not_empty: bool },
}

/// Splits `NAME`, `NAME:-x`, `NAME-x`, `NAME:?x`, `NAME?x`, `NAME:+x` or `NAME+x`.
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
        (":+", Modifier::Alternative { not_empty: true }),
        ("+", Modifier::Alternative { not_empty: false }),
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
            let construct = |end: usize| format!("${{{}", &body_start[..end]);
            let end = closing_brace(body_start)
                .ok_or_else(|| InterpError::Unterminated(construct(body_start.len())))?;
            let body = &body_start[..end];
            let (name, modifier, arg) = split_body(body);
            if !is_var_name(name) {
                return Err(InterpError::BadName {
                    name: name.to_string(),
                    construct: construct(end) + "}",
                });
            }
            let value_of = vars.get(name);
            let missing = |or_empty: bool| match &value_of {
                None => true,
                Some(v) => or_empty && v.is_empty(),
            };
            // A default, message or alternative is expanded only when it is
            // used, and then what it leaves unset counts like the rest.
            let mut nested = |arg: &str| -> Result<String, InterpError> {
                let inner = expand_at(arg, vars, depth + 1)?;
                unset.extend(inner.unset);
                Ok(inner.value)
            };
            match modifier {
                Modifier::Default { or_empty } if missing(or_empty) => {
                    value.push_str(&nested(arg)?)
                }
                Modifier::Required { or_empty } if missing(or_empty) => {
                    let message = nested(arg)?;
                    return Err(InterpError::Required {
                        name: name.to_string(),
                        message: if message.is_empty() {
                            "it is not set".into()
                        } else {
                            message
                        },
                    });
                }
                Modifier::Alternative { not_empty } if !missing(not_empty) => {
                    value.push_str(&nested(arg)?)
                }
                // Unset is what was asked about: nothing to warn of.
                Modifier::Alternative { .. } => value.push_str(value_of.as_deref().unwrap_or("")),
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

/// Index of the `}` that closes a `${`: braces balance, so a default may
/// hold `${...}` or `{...}` (JSON).
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
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
            "JSON" => Some(r#"{"json":2}"#.into()),
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
        assert_eq!(ex("${HOME"), "ERR `${HOME` has no closing `}`");
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

    /// Cases of compose-go's template tests (its `FOO`=first, `BAR`=""
    /// here are `PORT`=8000 and `EMPTY`), written as tables. Where corral
    /// differs, the row says so.
    #[test]
    fn as_compose_interpolates() {
        let cases: &[(&str, &str)] = &[
            // Escapes and text that only looks like a reference.
            ("$${HOME}", "${HOME}"),
            ("a $ string", "a $ string"),
            ("^REGEX$", "^REGEX$"),
            ("$}", "$}"),
            ("$", "$"),
            // Set, unset, empty.
            ("This ${NOPE} var", "This  var"),
            ("This ${EMPTY} var", "This  var"),
            ("This ${PORT} var", "This 8000 var"),
            // compose expands a bare `$PORT`; corral leaves it to the shell.
            ("This $PORT var", "This $PORT var"),
            // Defaults.
            ("ok ${NOPE:-def}", "ok def"),
            ("ok ${NOPE-def}", "ok def"),
            ("ok ${EMPTY:-def}", "ok def"),
            ("ok ${PORT:-def}", "ok 8000"),
            ("ok ${EMPTY-def}", "ok "),
            ("ok ${EMPTY:-/non:-alphanumeric}", "ok /non:-alphanumeric"),
            // Alternatives.
            ("ok ${NOPE:+presence}", "ok "),
            ("ok ${NOPE+presence}", "ok "),
            ("ok ${PORT:+presence}", "ok presence"),
            ("ok ${PORT+presence}", "ok presence"),
            ("ok ${EMPTY+presence}", "ok presence"),
            ("ok ${EMPTY:+presence}", "ok "),
            ("${NOPE:+${NOPE},}B", "B"),
            // Text around a reference that holds operators is not one.
            ("-ok ${EMPTY:-defaultValue}", "-ok defaultValue"),
            ("+ok ${NOPE:-${EMPTY-defaultValue}}", "+ok "),
            (":-ok ${NOPE-defaultValue}", ":-ok defaultValue"),
            (":?ok ${EMPTY-defaultValue}", ":?ok "),
            (":+ok ${EMPTY:-defaultValue}", ":+ok defaultValue"),
            // Nested references.
            ("ok ${NOPE-${PORT}}", "ok 8000"),
            ("ok ${NOPE-${PORT} ${PORT}}", "ok 8000 8000"),
            ("ok ${EMPTY:-${PORT} ${PORT}}", "ok 8000 8000"),
            ("ok ${EMPTY+${PORT} ${PORT:+second}}", "ok 8000 second"),
            // The first operator after the name is the one.
            ("${NOPE-myerror?msg}", "myerror?msg"),
            ("${PORT?bar-baz}", "8000"),
            ("ok ${EMPTY?err}", "ok "),
            // Braces balance: JSON in a default.
            (r#"ok ${NOPE:-{"json":1}}"#, r#"ok {"json":1}"#),
            (r#"ok ${NOPE-{"json":1}}"#, r#"ok {"json":1}"#),
            (r#"ok ${JSON:-{"json":1}}"#, r#"ok {"json":2}"#),
            (r#"ok ${JSON-{"json":1}}"#, r#"ok {"json":2}"#),
        ];
        for (template, want) in cases {
            assert_eq!(ex(template), *want, "{template}");
        }
    }

    #[test]
    fn compose_errors_are_errors_naming_the_construct() {
        let cases: &[(&str, &str)] = &[
            ("${", "ERR `${` has no closing `}`"),
            ("${}", "ERR invalid variable name \"\" in `${}`"),
            ("${ }", "ERR invalid variable name \" \" in `${ }`"),
            ("${ foo}", "ERR invalid variable name \" foo\" in `${ foo}`"),
            ("${foo }", "ERR invalid variable name \"foo \" in `${foo }`"),
            ("${foo!}", "ERR invalid variable name \"foo!\" in `${foo!}`"),
            (
                "not ok ${NOPE:?Mandatory Variable ${PORT}}",
                "ERR NOPE is required: Mandatory Variable 8000",
            ),
            (
                "not ok ${EMPTY:?Mandatory}",
                "ERR EMPTY is required: Mandatory",
            ),
            ("${NOPE?bar-baz}", "ERR NOPE is required: bar-baz"),
            ("not ok ${NOPE?}", "ERR NOPE is required: it is not set"),
        ];
        for (template, want) in cases {
            let got = ex(template);
            assert!(got.starts_with(want), "{template}: {got}");
        }
    }

    /// Unset variables warn wherever they are, but only where a value is
    /// used (compose-go: a lazy default does not warn).
    #[test]
    fn unset_variables_are_reported_at_any_depth_when_used() {
        let unset = |s: &str| -> Vec<String> {
            expand(s, &vars)
                .map(|e| e.unset.into_iter().collect())
                .unwrap_or_default()
        };
        assert_eq!(unset("${NOPE:-${B}}"), ["B"]);
        assert_eq!(unset("${NOPE:-${EMPTY:-${C}}}"), ["C"]);
        assert_eq!(unset("${PORT:-${B}}"), Vec::<String>::new());
        assert_eq!(unset("${NOPE:+${NOPE},}B"), Vec::<String>::new());
        assert_eq!(unset("${PORT?${B}}"), Vec::<String>::new());
        assert_eq!(unset("${PORT:+${B}}"), ["B"]);
    }
}
