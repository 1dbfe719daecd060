//! How a line looks on corral's stdout: `name | text` for service output,
//! `name * text` for corral's own lifecycle messages, coloured on a terminal.

use std::io::{self, IsTerminal, Write};
use std::time::SystemTime;

use corral_proto::LogStream;

use crate::strings::Strings;

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
    pub names: Strings,
    pub width: usize,
    pub colour: bool,
    pub format: Format,
    /// Prefix text lines with an RFC 3339 timestamp.
    pub timestamps: bool,
    /// Text lines start with `name | ` (`corral logs --no-prefix` drops it).
    pub prefixed: bool,
    /// Per service, the ready-made "name | " and "name * " prefixes one
    /// after the other; the last two are corral's own.
    prefixes: Strings,
}

const PALETTE: [&str; 6] = ["36", "33", "32", "35", "34", "91"];

impl Style {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    pub fn for_stdout(names: Strings, format: Format, timestamps: bool) -> Style {
        let colour = format == Format::Text
            && io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Style::new(names, format, timestamps, colour)
    }

    pub fn new(names: Strings, format: Format, timestamps: bool, colour: bool) -> Style {
        let mut style = Style {
            names: Strings::default(),
            width: 0,
            colour,
            format,
            timestamps,
            prefixed: true,
            prefixes: Strings::default(),
        };
        style.rename(names);
        style
    }

    pub fn rename(&mut self, names: Strings) {
        self.width = names.iter().map(str::len).chain([6]).max().unwrap_or(6);
        // "NAME   | " (coloured: "\x1b[CODEmNAME   |\x1b[0m "), made by
        // hand: format! with padding is many times slower, and there are
        // two prefixes per service.
        let spaces = " ".repeat(self.width);
        let colour = self.colour;
        let mut prefixes = crate::strings::Builder::default();
        let palette = PALETTE.iter().cycle();
        for (name, code) in names.iter().zip(palette).chain([("corral", &"1")]) {
            let pad = &spaces[name.chars().count().min(self.width)..];
            for sep in ["|", "*"] {
                if colour {
                    prefixes.push(&["\x1b[", code, "m", name, pad, " ", sep, "\x1b[0m "]);
                } else {
                    prefixes.push(&[name, pad, " ", sep, " "]);
                }
            }
        }
        self.names = names;
        self.prefixes = prefixes.finish();
    }

    /// Plain lines can go out as they are: text format, no timestamps.
    pub fn plain(&self) -> bool {
        self.format == Format::Text && !self.timestamps
    }

    pub fn prefix(&self, svc: Option<usize>, is_event: bool) -> &[u8] {
        let i = svc
            .filter(|&i| i < self.names.len())
            .unwrap_or(self.names.len());
        self.prefixes
            .get(2 * i + usize::from(is_event))
            .map_or(&[][..], str::as_bytes)
    }

    pub fn name(&self, svc: Option<usize>) -> &str {
        svc.and_then(|i| self.names.get(i)).unwrap_or("corral")
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
    if style.prefixed {
        out.write_all(style.prefix(svc, is_event))?;
    }
    if is_event && style.colour {
        out.write_all(b"\x1b[1m")?;
    }
    match std::str::from_utf8(text) {
        Ok(_) => out.write_all(text)?,
        Err(_) => out.write_all(String::from_utf8_lossy(text).as_bytes())?,
    }
    if is_event && style.colour {
        out.write_all(b"\x1b[0m")?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(names: &[&str]) -> Style {
        // Pad to 8 like a config with an 8-letter service would.
        let names = names.iter().chain(&["12345678"]).collect();
        Style::new(names, Format::Text, false, false)
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
        let style = Style::new(
            ["web", "12345678"].into_iter().collect(),
            Format::Text,
            false,
            true,
        );
        assert_eq!(
            rendered(&style, Some(0), true, b"started"),
            "\x1b[36mweb      *\x1b[0m \x1b[1mstarted\x1b[0m\n"
        );
    }

    #[test]
    fn json_and_timestamps() {
        let style = Style::new(["api"].into_iter().collect(), Format::Json, false, false);
        assert_eq!(
            rendered(&style, Some(0), false, b"say \"hi\""),
            r#"{"time":"1970-01-01T00:00:00.000Z","service":"api","stream":"stdout","line":"say \"hi\""}"#
                .to_string()
                + "\n"
        );
        let style = Style::new(
            ["api", "12345678"].into_iter().collect(),
            Format::Text,
            true,
            false,
        );
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
