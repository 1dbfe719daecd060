//! How a line looks on corral's stdout: `name | text` for service output,
//! `name * text` for corral's own lifecycle messages, coloured on a terminal.

use std::io::{self, IsTerminal, Write};
use std::time::SystemTime;

use corral_proto::LogStream;

/// Console line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `name | line`, aligned, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: time, service, stream, line.
    Json,
}

/// One console line in JSON format.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: String,
    service: &'a str,
    stream: LogStream,
    line: std::borrow::Cow<'a, str>,
}

/// Names, their padding, and how lines look.
pub struct Style {
    pub names: Vec<String>,
    pub width: usize,
    pub colour: bool,
    pub format: Format,
    /// Prefix text lines with an RFC 3339 timestamp.
    pub timestamps: bool,
}

const PALETTE: [&str; 6] = ["36", "33", "32", "35", "34", "91"];

impl Style {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    pub fn for_stdout(names: Vec<String>, format: Format, timestamps: bool) -> Style {
        let colour = format == Format::Text
            && io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let mut style = Style {
            names: Vec::new(),
            width: 0,
            colour,
            format,
            timestamps,
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

/// Writes one line (without its newline): a service's output on `stream`, or
/// a lifecycle message when `stream` is Event.
pub fn render(
    out: &mut impl Write,
    style: &Style,
    svc: Option<usize>,
    stream: LogStream,
    time: SystemTime,
    text: &[u8],
) -> io::Result<()> {
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let name = style.name(svc);
    if style.format == Format::Json {
        let line = JsonLine {
            time: humantime::format_rfc3339_millis(time).to_string(),
            service: name,
            stream,
            line: String::from_utf8_lossy(text),
        };
        serde_json::to_writer(&mut *out, &line)?;
        return out.write_all(b"\n");
    }
    if style.timestamps {
        write!(out, "{} ", humantime::format_rfc3339_millis(time))?;
    }
    let is_event = stream == LogStream::Event;
    let sep = if is_event { '*' } else { '|' };
    let width = style.width;
    if style.colour {
        let code = svc.map_or("1", |i| PALETTE[i % PALETTE.len()]);
        write!(out, "\x1b[{code}m{name:<width$} {sep}\x1b[0m ")?;
    } else {
        write!(out, "{name:<width$} {sep} ")?;
    }
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
            format: Format::Text,
            timestamps: false,
        }
    }

    fn rendered(style: &Style, svc: Option<usize>, is_event: bool, text: &[u8]) -> String {
        let mut buf = Vec::new();
        let stream = if is_event {
            LogStream::Event
        } else {
            LogStream::Stdout
        };
        render(&mut buf, style, svc, stream, SystemTime::UNIX_EPOCH, text).unwrap_or_default();
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
    fn json_and_timestamps() {
        let style = Style {
            format: Format::Json,
            ..plain(&["api"])
        };
        assert_eq!(
            rendered(&style, Some(0), false, b"say \"hi\""),
            r#"{"time":"1970-01-01T00:00:00.000Z","service":"api","stream":"stdout","line":"say \"hi\""}"#
                .to_string()
                + "\n"
        );
        let style = Style {
            timestamps: true,
            ..plain(&["api"])
        };
        assert_eq!(
            rendered(&style, Some(0), false, b"x"),
            "1970-01-01T00:00:00.000Z api      | x\n"
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
