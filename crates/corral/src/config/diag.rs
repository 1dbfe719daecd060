//! Diagnostics: config errors and warnings that point at file:line:col.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config file, located by line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based line and column; 0 when the problem has no position (a missing file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            write!(f, "{}: {level}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {level}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Every error found while loading a config, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects diagnostics for one source file, or for several files read as
/// one text (each file's bytes at its own offset: `segments`).
pub struct Diagnostics<'s> {
    file: &'s Path,
    source: &'s str,
    /// (offset where a file starts in `source`, that file), in order.
    segments: Vec<(usize, PathBuf)>,
    items: Vec<Diagnostic>,
    /// What `items` holds, so a problem seen again (each replica reads the
    /// same table) is dropped in O(1).
    seen: std::collections::HashSet<Diagnostic>,
}

impl<'s> Diagnostics<'s> {
    pub fn new(file: &'s Path, source: &'s str) -> Self {
        Diagnostics {
            file,
            source,
            segments: Vec::new(),
            items: Vec::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    /// For a text made of several files one after the other.
    pub fn with_segments(mut self, segments: Vec<(usize, PathBuf)>) -> Self {
        self.segments = segments;
        self
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(Severity::Error, Some(span), message.into());
    }

    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(Severity::Warning, Some(span), message.into());
    }

    /// An error about the file as a whole, or about another file it names.
    pub fn error_in(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.add(Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line,
            column: if line == 0 { 0 } else { 1 },
            message: message.into(),
        });
    }

    fn push(&mut self, severity: Severity, span: Option<Range<usize>>, message: String) {
        // The file the offset falls in, and the offset within it.
        let start = span.as_ref().map_or(0, |s| s.start);
        let (file, base) = match self.segments.iter().rev().find(|(at, _)| *at <= start) {
            Some((at, path)) => (path.as_path(), *at),
            None => (self.file, 0),
        };
        let (line, column) = match span {
            Some(span) => line_col(self.source.get(base..).unwrap_or(""), span.start - base),
            None => (0, 0),
        };
        let diagnostic = Diagnostic {
            severity,
            file: file.to_path_buf(),
            line,
            column,
            message,
        };
        self.add(diagnostic);
    }

    /// Replicas are read once each: say every problem once.
    fn add(&mut self, diagnostic: Diagnostic) {
        if self.seen.insert(diagnostic.clone()) {
            self.items.push(diagnostic);
        }
    }

    /// Splits into (errors, warnings), errors sorted by position.
    pub fn finish(self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        let (mut errors, warnings): (Vec<_>, Vec<_>) = self
            .items
            .into_iter()
            .partition(|d| d.severity == Severity::Error);
        errors.sort_by_key(|d| (d.line, d.column));
        (errors, warnings)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The nearest candidate to a misspelt name, if one is close enough to suggest.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2 || *d * 5 <= c.len() * 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" or "".
pub fn suggestion<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match did_you_mean(name, candidates) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
    }

    #[test]
    fn suggests_close_names_only() {
        let keys = ["command", "oneshot", "working-dir"];
        assert_eq!(did_you_mean("comand", keys), Some("command"));
        assert_eq!(did_you_mean("workdir", keys), Some("working-dir"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
