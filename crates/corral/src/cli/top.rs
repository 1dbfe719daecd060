//! `corral top`: a live view of the services, over the control API.
//!
//! It redraws when something happens, not on a clock: lifecycle events
//! arrive on `/v1/events` and are shown at once (the row's state first,
//! then the rest of its status, fetched once per burst of events); log
//! lines arrive on `/v1/logs?follow`. Only the resource figures (CPU,
//! memory) are read on a timer, while top runs; the daemon samples
//! nothing when nobody watches.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use corral_proto::{
    ActionResult, Endpoint, EndpointList, Event, LogLine, LogStream, ScaleRequest, ServiceList,
    ServiceState, ServiceStatus, SignalRequest, Version,
};
use hyper::Method;
use ratatui::crossterm::event::{self as term, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};
use ratatui::Frame;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::Client;
use super::commands::{bytes, cpu_time, uptime};
use super::CliError;

/// How often resource figures are read while top runs.
const RESOURCES_EVERY: Duration = Duration::from_secs(2);
/// Log lines kept for the pane.
const LOG_LINES: usize = 2000;
/// The window events per second are averaged over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Everything that wakes top up.
enum Msg {
    Key(KeyEvent),
    Resize,
    Event(Event),
    /// The daemon ended the event stream: it is gone.
    EventsEnded,
    /// A fresh list (or why none came); `resources`: it carries resource figures.
    List(Result<Box<ServiceList>, String>, bool),
    Endpoints(Vec<Endpoint>),
    /// A log line of the stream of this generation.
    Log(u64, LogLine),
    LogsEnded(u64),
    /// What an action did, in one line.
    Said(String),
}

/// What a key asked for that needs a yes first, or is being typed.
enum Mode {
    Normal,
    Confirm(Action),
    /// Typing a signal for this instance.
    Signal(String, String),
    /// Typing a log search.
    Search(String),
    Help,
}

#[derive(Clone)]
enum Action {
    Start(String),
    Stop(String),
    Restart(String),
    Signal(String, String),
    Scale(String, u32),
}

impl Action {
    fn question(&self) -> String {
        match self {
            Action::Start(n) => format!("start {n}?"),
            Action::Stop(n) => format!("stop {n}?"),
            Action::Restart(n) => format!("restart {n}?"),
            Action::Signal(n, s) => format!("send {s} to {n}?"),
            Action::Scale(n, r) => format!("scale {n} to {r}?"),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Sort {
    Config,
    Name,
    State,
    Cpu,
    Memory,
    Restarts,
    Uptime,
}

impl Sort {
    const ALL: [Sort; 7] = [
        Sort::Config,
        Sort::Name,
        Sort::State,
        Sort::Cpu,
        Sort::Memory,
        Sort::Restarts,
        Sort::Uptime,
    ];

    fn label(self) -> &'static str {
        match self {
            Sort::Config => "config order",
            Sort::Name => "name",
            Sort::State => "state",
            Sort::Cpu => "cpu",
            Sort::Memory => "memory",
            Sort::Restarts => "restarts",
            Sort::Uptime => "uptime",
        }
    }
}

struct App {
    client: Client,
    tx: mpsc::UnboundedSender<Msg>,
    version: Version,
    /// In the daemon's order (config order).
    services: Vec<ServiceStatus>,
    discovery: Option<corral_proto::DiscoveryStatus>,
    endpoints: Vec<Endpoint>,
    selected: Option<String>,
    sort: Sort,
    reverse: bool,
    mode: Mode,
    message: String,
    /// Times of recent events, for the rate in the header.
    recent: VecDeque<Instant>,
    /// A status refresh is on its way; `stale`: events came meanwhile.
    refreshing: bool,
    stale: bool,
    /// A reading of resources is on its way: the next waits for it (with
    /// thousands of services a reading takes a while).
    sampling: bool,
    /// The log pane: one service, or all; the stream's generation.
    log_of: Option<String>,
    log_gen: u64,
    log_task: Option<JoinHandle<()>>,
    logs: VecDeque<LogLine>,
    search: String,
    gone: bool,
    quit: bool,
    dirty: bool,
}

/// Runs top until q, Ctrl-C, SIGTERM, SIGINT or SIGHUP; the terminal is
/// given back as it was in every case.
pub async fn top(client: Client) -> Result<(), CliError> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "corral top needs a terminal on stdin and stdout (ssh -t, docker exec -it); \
             `corral ps --watch` prints a plain table instead"
                .into(),
        ));
    }
    // Before the screen is taken: a daemon that is not there is a plain error.
    let version: Version = client.json(Method::GET, "/version", None).await?;
    let list: ServiceList = client.json(Method::GET, "/services", None).await?;
    let events = client.open_lines(Method::GET, "/events").await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let events_tx = tx.clone();
    tokio::spawn(async move {
        let each = |event: Event| {
            let _ = events_tx.send(Msg::Event(event));
        };
        let _ = events.each(each).await;
        let _ = events_tx.send(Msg::EventsEnded);
    });
    read_keys(tx.clone());
    let mut app = App {
        client,
        tx,
        version,
        selected: list.services.first().map(|s| s.name.clone()),
        services: list.services,
        discovery: list.discovery,
        endpoints: Vec::new(),
        sort: Sort::Config,
        reverse: false,
        mode: Mode::Normal,
        message: String::new(),
        recent: VecDeque::new(),
        refreshing: false,
        stale: false,
        sampling: false,
        log_of: None,
        log_gen: 0,
        log_task: None,
        logs: VecDeque::new(),
        search: String::new(),
        gone: false,
        quit: false,
        dirty: true,
    };
    app.follow_logs();
    app.fetch_endpoints();
    let mut terminal = ratatui::init();
    let result = app.run(&mut terminal, rx).await;
    let _ = terminal.show_cursor();
    drop(terminal);
    ratatui::restore();
    result
}

/// Keys and resizes, read on a thread of their own (crossterm's read blocks).
fn read_keys(tx: mpsc::UnboundedSender<Msg>) {
    std::thread::spawn(move || loop {
        let msg = match term::read() {
            Ok(term::Event::Key(key)) if key.kind != KeyEventKind::Release => Msg::Key(key),
            Ok(term::Event::Resize(..)) => Msg::Resize,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(msg).is_err() {
            return;
        }
    });
}

impl App {
    async fn run(
        &mut self,
        terminal: &mut ratatui::DefaultTerminal,
        mut rx: mpsc::UnboundedReceiver<Msg>,
    ) -> Result<(), CliError> {
        let io = |source| CliError::Io {
            context: "cannot draw on the terminal",
            source,
        };
        let mut term_sig = signal(SignalKind::terminate()).map_err(io)?;
        let mut int_sig = signal(SignalKind::interrupt()).map_err(io)?;
        let mut hup_sig = signal(SignalKind::hangup()).map_err(io)?;
        let mut resources = tokio::time::interval(RESOURCES_EVERY);
        // A slow reading delays the next one rather than bunching them.
        resources.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.quit {
            if self.dirty {
                terminal.draw(|f| self.draw(f)).map_err(io)?;
                self.dirty = false;
            }
            tokio::select! {
                Some(msg) = rx.recv() => self.on(msg),
                _ = resources.tick(), if !self.sampling => self.fetch_list(true),
                _ = term_sig.recv() => break,
                _ = int_sig.recv() => break,
                _ = hup_sig.recv() => break,
            }
            // Take whatever else is waiting before drawing once.
            while let Ok(msg) = rx.try_recv() {
                self.on(msg);
            }
        }
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        Ok(())
    }

    fn on(&mut self, msg: Msg) {
        self.dirty = true;
        match msg {
            Msg::Key(key) => self.on_key(key),
            Msg::Resize => {}
            Msg::Event(event) => {
                let now = Instant::now();
                self.recent.push_back(now);
                while self
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
                {
                    self.recent.pop_front();
                }
                // The state shows at once; the rest follows with the list.
                if let (Some(name), Some(state)) = (&event.service, event.state) {
                    if let Some(s) = self.services.iter_mut().find(|s| &s.name == name) {
                        s.state = state;
                        if s.is_stopped() {
                            // No process: no figures until it runs again.
                            s.pid = None;
                            s.uptime_secs = None;
                            s.ready = false;
                            if let Some(r) = s.resources.as_mut() {
                                r.processes = 0;
                            }
                        }
                    }
                }
                if event.service.is_none() {
                    self.message = event.message;
                }
                if self.refreshing {
                    self.stale = true;
                } else {
                    self.fetch_list(false);
                }
            }
            Msg::EventsEnded => {
                self.gone = true;
                self.message = "corral has stopped: q to leave".into();
            }
            Msg::List(list, with_resources) => {
                if with_resources {
                    self.sampling = false;
                } else {
                    self.refreshing = false;
                }
                let mut list = match list {
                    Ok(list) => *list,
                    Err(e) => {
                        // Once corral is gone, that is the news, not this.
                        if !self.gone {
                            self.message = e;
                        }
                        return;
                    }
                };
                if !with_resources {
                    // Keep the last figures until the next reading.
                    for s in &mut list.services {
                        s.resources = self
                            .services
                            .iter()
                            .find(|old| old.name == s.name)
                            .and_then(|old| old.resources.clone());
                    }
                }
                let names_changed = list.services.len() != self.services.len()
                    || list
                        .services
                        .iter()
                        .zip(&self.services)
                        .any(|(a, b)| a.name != b.name);
                self.services = list.services;
                self.discovery = list.discovery;
                if names_changed {
                    self.fetch_endpoints();
                }
                if self.selected.is_none()
                    || !self
                        .services
                        .iter()
                        .any(|s| Some(&s.name) == self.selected.as_ref())
                {
                    self.selected = self.sorted().first().map(|s| s.name.clone());
                }
                if self.stale {
                    self.stale = false;
                    self.fetch_list(false);
                    self.fetch_endpoints();
                }
            }
            Msg::Endpoints(endpoints) => self.endpoints = endpoints,
            Msg::Log(generation, line) => {
                if generation == self.log_gen {
                    if self.logs.len() == LOG_LINES {
                        self.logs.pop_front();
                    }
                    self.logs.push_back(line);
                }
            }
            Msg::LogsEnded(generation) => {
                // Dropped for falling behind, or corral went away.
                if generation == self.log_gen && !self.gone {
                    self.follow_logs();
                }
            }
            Msg::Said(text) => self.message = text,
        }
    }

    fn on_key(&mut self, key: KeyEvent) {
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c'));
        if ctrl_c {
            self.quit = true;
            return;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Confirm(action) => {
                if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                    self.act(action);
                } else {
                    self.message = "cancelled".into();
                }
            }
            Mode::Signal(name, mut text) => match key.code {
                KeyCode::Enter if !text.is_empty() => {
                    self.mode = Mode::Confirm(Action::Signal(name, text.to_ascii_uppercase()));
                }
                KeyCode::Esc => self.message = "cancelled".into(),
                KeyCode::Backspace => {
                    text.pop();
                    self.mode = Mode::Signal(name, text);
                }
                KeyCode::Char(c) if c.is_ascii_alphanumeric() => {
                    text.push(c);
                    self.mode = Mode::Signal(name, text);
                }
                _ => self.mode = Mode::Signal(name, text),
            },
            Mode::Search(mut text) => match key.code {
                KeyCode::Enter => self.search = text,
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    text.pop();
                    self.mode = Mode::Search(text);
                }
                KeyCode::Char(c) => {
                    text.push(c);
                    self.mode = Mode::Search(text);
                }
                _ => self.mode = Mode::Search(text),
            },
            Mode::Help => {}
            Mode::Normal => self.on_normal_key(key.code),
        }
    }

    fn on_normal_key(&mut self, code: KeyCode) {
        let selected = self.selected.clone();
        match code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') | KeyCode::F(1) => self.mode = Mode::Help,
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(isize::MAX / 2),
            KeyCode::Char('o') => {
                let at = Sort::ALL.iter().position(|s| *s == self.sort).unwrap_or(0);
                self.sort = Sort::ALL[(at + 1) % Sort::ALL.len()];
            }
            KeyCode::Char('O') => self.reverse = !self.reverse,
            KeyCode::Char('l') | KeyCode::Enter => {
                self.log_of = match &self.log_of {
                    Some(_) => None,
                    None => selected,
                };
                self.follow_logs();
            }
            KeyCode::Char('/') => self.mode = Mode::Search(self.search.clone()),
            KeyCode::Esc => self.search.clear(),
            KeyCode::Char('s') => {
                if let Some(name) = selected {
                    self.act(Action::Start(name));
                }
            }
            KeyCode::Char('x') => {
                if let Some(name) = selected {
                    self.mode = Mode::Confirm(Action::Stop(name));
                }
            }
            KeyCode::Char('r') => {
                if let Some(name) = selected {
                    self.mode = Mode::Confirm(Action::Restart(name));
                }
            }
            KeyCode::Char('z') => {
                if let Some(name) = selected {
                    self.mode = Mode::Signal(name, String::new());
                }
            }
            KeyCode::Char(c @ ('+' | '-')) => self.scale(c == '+'),
            _ => {}
        }
    }

    /// `+`/`-`: one instance more or fewer of the selected replicated service.
    fn scale(&mut self, up: bool) {
        let Some(s) = self.selected_status() else {
            return;
        };
        if s.replica.is_none() {
            self.message = format!("{} has no replicas = N: it cannot be scaled", s.name);
            return;
        }
        let group = s.group.clone();
        let now = self.services.iter().filter(|s| s.group == group).count() as u32;
        match up {
            true => self.act(Action::Scale(group, now + 1)),
            false if now > 0 => self.mode = Mode::Confirm(Action::Scale(group, now - 1)),
            false => {}
        }
    }

    fn act(&mut self, action: Action) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        self.message = format!("{}...", action.question().trim_end_matches('?'));
        self.message
            .replace_range(..1, &self.message[..1].to_uppercase());
        tokio::spawn(async move {
            let said = match perform(&client, &action).await {
                Ok(text) => text,
                Err(e) => e.to_string(),
            };
            let _ = tx.send(Msg::Said(said));
        });
    }

    fn move_selection(&mut self, by: isize) {
        let names: Vec<String> = self.sorted().iter().map(|s| s.name.clone()).collect();
        if names.is_empty() {
            return;
        }
        let at = names
            .iter()
            .position(|n| Some(n) == self.selected.as_ref())
            .unwrap_or(0) as isize;
        let to = at.saturating_add(by).clamp(0, names.len() as isize - 1) as usize;
        self.selected = Some(names[to].clone());
    }

    fn selected_status(&self) -> Option<&ServiceStatus> {
        self.services
            .iter()
            .find(|s| Some(&s.name) == self.selected.as_ref())
    }

    /// The rows in the chosen order.
    fn sorted(&self) -> Vec<&ServiceStatus> {
        let mut rows: Vec<&ServiceStatus> = self.services.iter().collect();
        let cpu = |s: &ServiceStatus| {
            s.resources
                .as_ref()
                .and_then(|r| r.cpu_percent)
                .unwrap_or(-1.0)
        };
        let mem = |s: &ServiceStatus| s.resources.as_ref().map_or(0, |r| r.rss_bytes);
        match self.sort {
            Sort::Config => {}
            Sort::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
            Sort::State => rows.sort_by_key(|s| s.state.as_str()),
            // The biggest first: that is what one looks for.
            Sort::Cpu => rows.sort_by(|a, b| cpu(b).total_cmp(&cpu(a))),
            Sort::Memory => rows.sort_by_key(|s| std::cmp::Reverse(mem(s))),
            Sort::Restarts => rows.sort_by_key(|s| std::cmp::Reverse(s.restarts)),
            Sort::Uptime => rows.sort_by(|a, b| {
                let up = |s: &ServiceStatus| s.uptime_secs.unwrap_or(-1.0);
                up(b).total_cmp(&up(a))
            }),
        }
        if self.reverse {
            rows.reverse();
        }
        rows
    }

    /// Fetches the statuses (with resource figures: a reading of /proc).
    fn fetch_list(&mut self, resources: bool) {
        if self.gone {
            return;
        }
        if resources {
            self.sampling = true;
        } else {
            self.refreshing = true;
        }
        let client = self.client.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let path = if resources {
                "/services?resources=true"
            } else {
                "/services"
            };
            let list = client.json::<ServiceList>(Method::GET, path, None).await;
            let list = list.map(Box::new).map_err(|e| e.to_string());
            let _ = tx.send(Msg::List(list, resources));
        });
    }

    fn fetch_endpoints(&self) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Ok(list) = client
                .json::<EndpointList>(Method::GET, "/endpoints", None)
                .await
            {
                let _ = tx.send(Msg::Endpoints(list.endpoints));
            }
        });
    }

    /// (Re)starts the log stream of the pane: the selected service, or all.
    fn follow_logs(&mut self) {
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        self.log_gen += 1;
        self.logs.clear();
        let generation = self.log_gen;
        let mut path = String::from("/logs?n=200&follow=true");
        if let Some(name) = &self.log_of {
            path.push_str("&service=");
            path.push_str(name);
        }
        let client = self.client.clone();
        let tx = self.tx.clone();
        self.log_task = Some(tokio::spawn(async move {
            if let Ok(lines) = client.open_lines(Method::GET, &path).await {
                let each = |line: LogLine| {
                    let _ = tx.send(Msg::Log(generation, line));
                };
                let _ = lines.each(each).await;
            }
            // Not at once: a daemon that refuses must not be asked in a loop.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = tx.send(Msg::LogsEnded(generation));
        }));
    }

    fn draw(&self, f: &mut Frame<'_>) {
        let [header, table, logs, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(4),
            Constraint::Percentage(35),
            Constraint::Length(1),
        ])
        .areas(f.area());
        f.render_widget(Paragraph::new(self.header()), header);
        self.draw_table(f, table);
        self.draw_logs(f, logs);
        f.render_widget(Paragraph::new(self.footer()), footer);
    }

    fn header(&self) -> Line<'static> {
        let now = crate::unix_now();
        let up = self
            .version
            .started
            .map_or("-".into(), |t| uptime((now - t).max(0.0)));
        let running = self
            .services
            .iter()
            .filter(|s| s.state == ServiceState::Running)
            .count();
        let failed = self
            .services
            .iter()
            .filter(|s| matches!(s.state, ServiceState::Failed | ServiceState::Blocked))
            .count();
        let rate = self.recent.len() as f64 / RATE_WINDOW.as_secs_f64();
        let discovery = match &self.discovery {
            None => "local".to_string(),
            Some(d) if d.degraded_since.is_some() => format!("{} DEGRADED", d.backend),
            Some(d) => format!("{} connected", d.backend),
        };
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let mut spans = vec![
            Span::styled(format!("corral {}", self.version.corral), bold),
            Span::raw(format!(
                "  up {up}  {} service{}: {running} running",
                self.services.len(),
                if self.services.len() == 1 { "" } else { "s" }
            )),
        ];
        if failed > 0 {
            spans.push(Span::styled(
                format!(", {failed} failed"),
                Style::default().fg(Color::Red),
            ));
        }
        spans.push(Span::raw(format!(
            "  {rate:.1} events/s  discovery: {discovery}  sort: {}{}",
            self.sort.label(),
            if self.reverse { " (reversed)" } else { "" }
        )));
        Line::from(spans)
    }

    fn draw_table(&self, f: &mut Frame<'_>, area: Rect) {
        let now = crate::unix_now();
        let header = Row::new([
            "NAME",
            "STATE",
            "HEALTH",
            "READY",
            "RESTARTS",
            "UPTIME",
            "CPU%",
            "MEM",
            "CPU TIME",
            "LAST EXIT",
            "NEXT RUN",
            "PROVIDES",
            "STATUS",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
        let rows = self.sorted();
        let selected = rows
            .iter()
            .position(|s| Some(&s.name) == self.selected.as_ref());
        let body = rows.iter().map(|s| {
            let r = s.resources.as_ref().filter(|r| r.processes > 0);
            let (health, health_style) = health(s);
            let provides: Vec<&str> = self
                .endpoints
                .iter()
                .filter(|e| e.instance.rsplit_once(':').map(|(_, i)| i) == Some(&s.name))
                .map(|e| e.name.as_str())
                .collect();
            Row::new(vec![
                ratatui::widgets::Cell::from(s.name.clone()),
                ratatui::widgets::Cell::from(s.state.as_str()).style(state_style(s.state)),
                ratatui::widgets::Cell::from(health).style(health_style),
                ratatui::widgets::Cell::from(if s.ready { "yes" } else { "no" }),
                ratatui::widgets::Cell::from(s.restarts.to_string()),
                ratatui::widgets::Cell::from(s.uptime_secs.map_or("-".into(), uptime)),
                ratatui::widgets::Cell::from(
                    r.and_then(|r| r.cpu_percent)
                        .map_or("-".into(), |p| format!("{p:.1}")),
                ),
                ratatui::widgets::Cell::from(r.map_or("-".into(), |r| bytes(r.rss_bytes))),
                ratatui::widgets::Cell::from(
                    s.resources
                        .as_ref()
                        .map_or("-".into(), |r| cpu_time(r.cpu_seconds)),
                ),
                ratatui::widgets::Cell::from(
                    s.error
                        .clone()
                        .or_else(|| s.last_exit.clone())
                        .unwrap_or_else(|| "-".into()),
                ),
                ratatui::widgets::Cell::from(
                    s.job
                        .as_ref()
                        .and_then(|j| j.next_run)
                        .map_or("-".into(), |at| {
                            format!("in {}", uptime((at - now).max(0.0)))
                        }),
                ),
                ratatui::widgets::Cell::from(provides.join(",")),
                // What it says of itself (sd_notify STATUS=).
                ratatui::widgets::Cell::from(s.status.clone().unwrap_or_default()),
            ])
        });
        let longest = rows.iter().map(|s| s.name.len()).max().unwrap_or(4);
        let widths = [
            Constraint::Length(longest.clamp(4, 24) as u16),
            Constraint::Length(10),
            Constraint::Length(11),
            Constraint::Length(5),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Fill(2),
            Constraint::Length(9),
            Constraint::Fill(1),
            Constraint::Fill(2),
        ];
        let table = Table::new(body, widths)
            .header(header)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .block(Block::default().borders(Borders::TOP | Borders::BOTTOM));
        let mut state = TableState::default().with_selected(selected);
        f.render_stateful_widget(table, area, &mut state);
    }

    fn draw_logs(&self, f: &mut Frame<'_>, area: Rect) {
        let height = area.height.saturating_sub(1) as usize;
        let needle = self.search.to_lowercase();
        let shown: Vec<&LogLine> = self
            .logs
            .iter()
            .filter(|l| needle.is_empty() || l.line.to_lowercase().contains(&needle))
            .collect();
        let start = shown.len().saturating_sub(height);
        let width = shown[start..]
            .iter()
            .map(|l| l.service.len())
            .max()
            .unwrap_or(0);
        let lines: Vec<Line<'_>> = shown[start..]
            .iter()
            .map(|l| {
                let sep = match l.stream {
                    LogStream::Event => " * ",
                    _ => " | ",
                };
                let text_style = match l.stream {
                    LogStream::Stderr => Style::default().fg(Color::LightRed),
                    LogStream::Event => Style::default().add_modifier(Modifier::DIM),
                    LogStream::Stdout => Style::default(),
                };
                let mut spans = vec![
                    Span::styled(
                        format!("{:<width$}", l.service),
                        Style::default().fg(name_colour(&l.service)),
                    ),
                    Span::raw(sep),
                ];
                spans.extend(highlight(&l.line, &needle, text_style));
                Line::from(spans)
            })
            .collect();
        let title = format!(
            " logs: {}{} ",
            self.log_of.as_deref().unwrap_or("all services"),
            if self.search.is_empty() {
                String::new()
            } else {
                format!(" (lines with {:?})", self.search)
            }
        );
        let pane = Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(title));
        f.render_widget(pane, area);
    }

    fn footer(&self) -> Line<'static> {
        let key = Style::default().add_modifier(Modifier::BOLD);
        match &self.mode {
            Mode::Confirm(action) => Line::from(vec![
                Span::styled(action.question(), key),
                Span::raw(" y to confirm, any other key to cancel"),
            ]),
            Mode::Signal(name, text) => Line::from(format!(
                "signal to send to {name} (e.g. HUP, USR1, 9): {text}_  Enter, Esc"
            )),
            Mode::Search(text) => Line::from(format!("show log lines with: {text}_  Enter, Esc")),
            Mode::Help => Line::from(
                "↑↓/jk move  s start  x stop  r restart  z signal  +/- scale  o sort  O reverse  \
                 l logs of one/all  / search  Esc clear  q quit  (any key closes this)",
            ),
            Mode::Normal if !self.message.is_empty() => Line::from(vec![
                Span::raw(self.message.clone()),
                Span::styled("   ? keys  q quit", Style::default().add_modifier(Modifier::DIM)),
            ]),
            Mode::Normal => Line::from(Span::styled(
                "s start  x stop  r restart  z signal  +/- scale  o sort  l logs  / search  ? keys  q quit",
                Style::default().add_modifier(Modifier::DIM),
            )),
        }
    }
}

/// Carries out one action over the API; the answer's message, in one line.
async fn perform(client: &Client, action: &Action) -> Result<String, CliError> {
    let post = |path: String, body: Option<Vec<u8>>| async move {
        client
            .json::<serde_json::Value>(Method::POST, &path, body)
            .await
    };
    match action {
        Action::Start(n) | Action::Stop(n) | Action::Restart(n) => {
            let verb = match action {
                Action::Start(_) => "start",
                Action::Stop(_) => "stop",
                _ => "restart",
            };
            // Waits for the state it aims for: the answer says how it went
            // (the events show the steps meanwhile).
            let answer = post(format!("/services/{n}/{verb}"), None).await?;
            let result: Result<ActionResult, _> = serde_json::from_value(answer);
            Ok(result.map_or_else(|_| format!("{verb} {n}: sent"), |r| r.message))
        }
        Action::Signal(n, sig) => {
            let body = serde_json::to_vec(&SignalRequest {
                signal: sig.clone(),
            })
            .unwrap_or_default();
            post(format!("/services/{n}/signal"), Some(body)).await?;
            Ok(format!("sent {sig} to {n}"))
        }
        Action::Scale(n, replicas) => {
            let body = serde_json::to_vec(&ScaleRequest {
                replicas: *replicas,
            })
            .unwrap_or_default();
            post(format!("/services/{n}/scale"), Some(body)).await?;
            Ok(format!("{n} scaled to {replicas}"))
        }
    }
}

fn state_style(state: ServiceState) -> Style {
    use ServiceState as S;
    let colour = match state {
        S::Running => Color::Green,
        S::Completed | S::Exited | S::Stopped => Color::Gray,
        S::Scheduled => Color::Cyan,
        S::Backoff | S::Failed | S::Blocked => Color::Red,
        S::Waiting | S::Launching | S::Pre | S::Starting | S::Stopping | S::Post => Color::Yellow,
        S::Unknown => Color::Magenta,
    };
    Style::default().fg(colour)
}

fn health(s: &ServiceStatus) -> (String, Style) {
    let runs = matches!(s.state, ServiceState::Running | ServiceState::Starting);
    match &s.health {
        Some(h) if runs => match h.healthy {
            None => ("pending".into(), Style::default().fg(Color::Yellow)),
            Some(true) if h.failures == 0 => ("healthy".into(), Style::default().fg(Color::Green)),
            _ => (
                format!("failing ({})", h.failures),
                Style::default().fg(Color::Red),
            ),
        },
        _ => ("-".into(), Style::default()),
    }
}

/// A colour per service name, the same on every draw.
fn name_colour(name: &str) -> Color {
    const COLOURS: [Color; 6] = [
        Color::Cyan,
        Color::Yellow,
        Color::Green,
        Color::Magenta,
        Color::Blue,
        Color::LightRed,
    ];
    let hash = name.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    COLOURS[hash % COLOURS.len()]
}

/// A line with every match of `needle` (lower case) shown reversed.
fn highlight(line: &str, needle: &str, style: Style) -> Vec<Span<'static>> {
    if needle.is_empty() {
        return vec![Span::styled(line.to_string(), style)];
    }
    let lower = line.to_lowercase();
    if lower.len() != line.len() {
        // Case folding changed the byte offsets: no highlight, the line is shown.
        return vec![Span::styled(line.to_string(), style)];
    }
    let mut spans = Vec::new();
    let mut at = 0;
    for (start, _) in lower.match_indices(needle) {
        if start < at {
            continue;
        }
        spans.push(Span::styled(line[at..start].to_string(), style));
        let end = start + needle.len();
        spans.push(Span::styled(
            line[start..end].to_string(),
            style.add_modifier(Modifier::REVERSED),
        ));
        at = end;
    }
    spans.push(Span::styled(line[at..].to_string(), style));
    spans
}
