//! How a line looks on corral's stdout: `name | text` for service output,
//! `name * text` for corral's own lifecycle messages, coloured on a terminal.

use std::io::{self, IsTerminal, Write};

/// Names, their padding, and whether to colour.
pub struct Style {
    pub names: Vec<String>,
    pub width: usize,
    pub colour: bool,
}

const PALETTE: [&str; 6] = ["36", "33", "32", "35", "34", "91"];

impl Style {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    pub fn for_stdout(names: Vec<String>) -> Style {
        let colour =
            io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let mut style = Style {
            names: Vec::new(),
            width: 0,
            colour,
        };
        style.rename(names);
        style
    }

    pub fn rename(&mut self, names: Vec<String>) {
        self.width = names.iter().map(String::len).chain([6]).max().unwrap_or(6);
        self.names = names;
    }

    pub fn name(&self, svc: Option<usize>) -> &str {
        svc.and_then(|i| self.names.get(i))
            .map_or("corral", String::as_str)
    }
}

/// Writes one line: a service's output (`is_event` false) or a lifecycle message.
pub fn render(
    out: &mut impl Write,
    style: &Style,
    svc: Option<usize>,
    is_event: bool,
    text: &[u8],
) -> io::Result<()> {
    let sep = if is_event { '*' } else { '|' };
    let name = style.name(svc);
    let width = style.width;
    if style.colour {
        let code = svc.map_or("1", |i| PALETTE[i % PALETTE.len()]);
        write!(out, "\x1b[{code}m{name:<width$} {sep}\x1b[0m ")?;
    } else {
        write!(out, "{name:<width$} {sep} ")?;
    }
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let shown = String::from_utf8_lossy(text);
    if is_event && style.colour {
        write!(out, "\x1b[1m{shown}\x1b[0m")?;
    } else {
        out.write_all(shown.as_bytes())?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(names: &[&str]) -> Style {
        Style {
            names: names.iter().map(|s| s.to_string()).collect(),
            width: 8,
            colour: false,
        }
    }

    fn rendered(style: &Style, svc: Option<usize>, is_event: bool, text: &[u8]) -> String {
        let mut buf = Vec::new();
        render(&mut buf, style, svc, is_event, text).unwrap_or_default();
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn output_and_events_are_distinct_and_aligned() {
        let style = plain(&["web", "database"]);
        assert_eq!(
            rendered(&style, Some(0), false, b"hello\r"),
            "web      | hello\n"
        );
        assert_eq!(
            rendered(&style, None, true, b"shutting down"),
            "corral   * shutting down\n"
        );
    }

    #[test]
    fn colour_marks_the_prefix_and_bolds_events() {
        let style = Style {
            colour: true,
            ..plain(&["web"])
        };
        assert_eq!(
            rendered(&style, Some(0), true, b"started"),
            "\x1b[36mweb      *\x1b[0m \x1b[1mstarted\x1b[0m\n"
        );
    }

    #[test]
    fn invalid_utf8_is_shown_safely() {
        let style = plain(&["bin"]);
        assert_eq!(
            rendered(&style, Some(0), false, &[b'a', 0xff, b'b']),
            "bin      | a\u{fffd}b\n"
        );
    }
}
