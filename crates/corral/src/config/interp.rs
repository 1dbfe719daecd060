//! `${VAR}` / `${VAR:-default}` / `$$` interpolation of config strings.

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
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$`; any other `$` is kept as is,
/// so `sh -c "echo $HOME"` reaches the shell unchanged.
pub fn expand(input: &str, vars: &dyn Vars) -> Result<Expanded, InterpError> {
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
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            if !is_var_name(name) {
                return Err(InterpError::BadName {
                    name: name.to_string(),
                });
            }
            match (
                vars.get(name)
                    .filter(|v| !v.is_empty() || default.is_none()),
                default,
            ) {
                (Some(v), _) => value.push_str(&v),
                (None, Some(d)) => value.push_str(&expand(d, vars)?.value),
                (None, None) => {
                    unset.insert(name.to_string());
                }
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
    }
}
