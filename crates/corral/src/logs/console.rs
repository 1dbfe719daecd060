//! The console: one writer thread that prints every line as `name | text`.
//!
//! Service output travels through a bounded channel, so a blocked stdout stops
//! the readers (and then the services) instead of growing memory; the event loop
//! never blocks on it.

use std::cell::Cell;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

/// Lines that may wait for the console writer.
const QUEUE_LINES: usize = 1024;

/// Which output stream of a service a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One thing to print.
#[derive(Debug)]
pub enum Line {
    /// A line a service wrote (without its newline).
    Output {
        svc: usize,
        #[allow(dead_code)] // for JSON log lines and per-stream files (logs step)
        stream: Stream,
        text: Vec<u8>,
    },
    /// A corral lifecycle message, about one service or about corral itself.
    Event { svc: Option<usize>, text: String },
}

/// The sending side, owned by the event loop.
pub struct Console {
    tx: mpsc::Sender<Line>,
    dropped: Cell<u64>,
    writer: Option<JoinHandle<()>>,
}

/// A sender for a pipe reader; sending waits when the console is behind.
pub type ConsoleHandle = mpsc::Sender<Line>;

struct Style {
    names: Vec<String>,
    width: usize,
    colour: bool,
}

const PALETTE: [&str; 6] = ["36", "33", "32", "35", "34", "91"];

impl Console {
    /// Starts the writer thread for services named `names` (indexed like the config).
    pub fn start(names: Vec<String>) -> io::Result<Console> {
        let colour =
            io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let width = names.iter().map(String::len).chain([6]).max().unwrap_or(6);
        let style = Style {
            names,
            width,
            colour,
        };
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let writer = std::thread::Builder::new()
            .name("console".into())
            .stack_size(128 * 1024)
            .spawn(move || write_loop(rx, &style))?;
        Ok(Console {
            tx,
            dropped: Cell::new(0),
            writer: Some(writer),
        })
    }

    pub fn handle(&self) -> ConsoleHandle {
        self.tx.clone()
    }

    /// Prints a lifecycle message; never blocks the caller. If the console is so
    /// far behind that the queue is full, the message is counted and the count
    /// is printed with the next message that fits.
    pub fn event(&self, svc: Option<usize>, text: String) {
        let dropped = self.dropped.get();
        if dropped > 0 {
            let note = format!("({dropped} lifecycle messages were not shown: console too slow)");
            if self
                .tx
                .try_send(Line::Event {
                    svc: None,
                    text: note,
                })
                .is_ok()
            {
                self.dropped.set(0);
            }
        }
        if self.tx.try_send(Line::Event { svc, text }).is_err() {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    /// Waits until everything queued has been written. Pipe readers must be gone.
    pub fn finish(mut self) {
        let writer = self.writer.take();
        drop(self);
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

fn write_loop(mut rx: mpsc::Receiver<Line>, style: &Style) {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(16 * 1024, stdout.lock());
    while let Some(line) = rx.blocking_recv() {
        let mut next = Some(line);
        while let Some(line) = next {
            // A closed stdout must not stop supervision: keep draining.
            let _ = render(&mut out, style, &line);
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

fn render(out: &mut impl Write, style: &Style, line: &Line) -> io::Result<()> {
    let (svc, sep) = match line {
        Line::Output { svc, .. } => (Some(*svc), '|'),
        Line::Event { svc, .. } => (*svc, '*'),
    };
    let name = svc
        .and_then(|i| style.names.get(i))
        .map_or("corral", String::as_str);
    let width = style.width;
    if style.colour {
        let code = svc.map_or("1", |i| PALETTE[i % PALETTE.len()]);
        write!(out, "\x1b[{code}m{name:<width$} {sep}\x1b[0m ")?;
    } else {
        write!(out, "{name:<width$} {sep} ")?;
    }
    match line {
        Line::Output { text, .. } => {
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            out.write_all(String::from_utf8_lossy(text).as_bytes())?;
        }
        Line::Event { text, .. } if style.colour => write!(out, "\x1b[1m{text}\x1b[0m")?,
        Line::Event { text, .. } => out.write_all(text.as_bytes())?,
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

    fn rendered(style: &Style, line: Line) -> String {
        let mut buf = Vec::new();
        render(&mut buf, style, &line).unwrap_or_default();
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn output_and_events_are_distinct_and_aligned() {
        let style = plain(&["web", "database"]);
        let out = rendered(
            &style,
            Line::Output {
                svc: 0,
                stream: Stream::Stdout,
                text: b"hello\r".to_vec(),
            },
        );
        assert_eq!(out, "web      | hello\n");
        let ev = rendered(
            &style,
            Line::Event {
                svc: None,
                text: "shutting down".into(),
            },
        );
        assert_eq!(ev, "corral   * shutting down\n");
    }

    #[test]
    fn colour_marks_the_prefix_and_bolds_events() {
        let style = Style {
            colour: true,
            ..plain(&["web"])
        };
        let ev = rendered(
            &style,
            Line::Event {
                svc: Some(0),
                text: "started".into(),
            },
        );
        assert_eq!(ev, "\x1b[36mweb      *\x1b[0m \x1b[1mstarted\x1b[0m\n");
    }

    #[test]
    fn invalid_utf8_is_shown_safely() {
        let style = plain(&["bin"]);
        let out = rendered(
            &style,
            Line::Output {
                svc: 0,
                stream: Stream::Stderr,
                text: vec![b'a', 0xff, b'b'],
            },
        );
        assert_eq!(out, "bin      | a\u{fffd}b\n");
    }
}
