//! The loop's side of the protocols servers speak: what a process gets at
//! its start (NOTIFY_SOCKET, LISTEN_FDS, WATCHDOG_USEC), what its notify
//! messages do, and the end of a process an update replaced.

use std::os::fd::RawFd;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::notify::{self, Message};
use super::{Child, Notice, Supervisor};
use crate::engine::{Event, Notified, Pid, ProbeRole, State};

/// What the main process of a service gets for the protocols it speaks.
#[derive(Default)]
pub(super) struct Spoken {
    pub env: Vec<(String, String)>,
    pub listen: Vec<RawFd>,
    pub pid_vars: &'static [&'static str],
    pub notify: Option<notify::Socket>,
}

impl Supervisor<'_> {
    /// Binds what the next main process of `svc` needs: its notify socket,
    /// and its service's listening sockets unless they are held already.
    pub(super) fn protocols_of(&mut self, svc: usize) -> Result<Spoken, String> {
        let service = &self.config.services[svc];
        let Some(protocols) = service.protocols.as_deref() else {
            return Ok(Spoken::default());
        };
        let mut spoken = Spoken::default();
        if protocols.notify {
            self.notify_seq += 1;
            let socket = notify::bind(self.tracking.id(), self.notify_seq)
                .map_err(|e| format!("cannot create the notify socket: {e}"))?;
            spoken
                .env
                .push(("NOTIFY_SOCKET".into(), socket.address.clone()));
            spoken.notify = Some(socket);
            if let Some(period) = protocols.watchdog {
                spoken
                    .env
                    .push(("WATCHDOG_USEC".into(), period.as_micros().to_string()));
            }
        }
        if !protocols.sockets.is_empty() {
            spoken.listen = self.listeners.get(&service.group, &protocols.sockets)?;
            let names: Vec<&str> = protocols.sockets.iter().map(|s| s.name.as_str()).collect();
            spoken
                .env
                .push(("LISTEN_FDS".into(), spoken.listen.len().to_string()));
            spoken.env.push(("LISTEN_FDNAMES".into(), names.join(":")));
        }
        spoken.pid_vars = match (!protocols.sockets.is_empty(), protocols.watchdog.is_some()) {
            (true, true) => &["LISTEN_PID", "WATCHDOG_PID"],
            (true, false) => &["LISTEN_PID"],
            (false, true) => &["WATCHDOG_PID"],
            (false, false) => &[],
        };
        Ok(spoken)
    }

    /// Closes the sockets of services a reload removed or whose `sockets` changed.
    pub(super) fn release_sockets(&mut self) {
        let services = &self.config.services;
        let units = self.engine.units();
        self.listeners.retain(|group, specs| {
            services
                .iter()
                .zip(units)
                .any(|(s, u)| !u.is_removed() && s.group == group && s.sockets() == specs)
        });
    }

    /// The process `pid` of `svc` said it is ready (notify fd, log line, READY=1).
    pub(super) fn said_ready(&mut self, svc: usize, pid: Pid) {
        let unit = &self.engine.units()[svc];
        if matches!(unit.state, State::Starting { pid: p, .. } if p == pid) {
            self.queue.push_back(Event::ProbeResult {
                svc,
                epoch: unit.epoch,
                role: ProbeRole::Ready,
                result: Ok(()),
            });
        }
    }

    /// A message from the notify socket of the process `spawned` of `svc`.
    pub(super) fn on_notify(&mut self, svc: usize, spawned: Pid, message: Message) {
        // The process corral follows for it: itself, or the one it named.
        let pid = self.followed.get(&spawned).copied().unwrap_or(spawned);
        let notified = |what| Event::Notified { svc, pid, what };
        match message {
            Message::Ready => self.said_ready(svc, pid),
            Message::Reloading => self.queue.push_back(notified(Notified::Reloading)),
            Message::Stopping => self.queue.push_back(notified(Notified::Stopping)),
            Message::ExtendTimeout(by) => {
                self.queue.push_back(notified(Notified::ExtendTimeout(by)))
            }
            Message::WatchdogMissed => self.queue.push_back(notified(Notified::WatchdogMissed)),
            Message::MainPid(main) => {
                if self.engine.units()[svc].state.pid() != Some(pid) {
                    return;
                }
                // Its exit is reaped here once it is corral's child (a
                // subreaper gets what its children leave).
                self.children.insert(main, Child::Service(svc));
                self.followed.insert(spawned, main);
                if let Some(task) = self.notify_tasks.remove(&pid) {
                    self.notify_tasks.insert(main, task);
                }
                self.queue.push_back(Event::Notified {
                    svc,
                    pid,
                    what: Notified::MainPid(main),
                });
            }
            Message::Status(text) => self.said.entry(svc).or_default().status = Some(text),
            Message::Errno(errno) => self.hub.event(
                Some(svc),
                format!(
                    "says it failed with ERRNO={errno} ({})",
                    std::io::Error::from_raw_os_error(errno)
                ),
            ),
            Message::Ignored {
                rejected,
                malformed,
            } => {
                self.said.entry(svc).or_default().ignored += rejected + malformed;
                self.hub.event(
                    Some(svc),
                    format!(
                        "ignored {} notify message(s): {rejected} from processes outside the \
                         instance, {malformed} malformed, oversized or unknown",
                        rejected + malformed
                    ),
                );
            }
        }
    }

    /// Ends a process an update replaced (or a new one that failed): its
    /// group gets `signal`, then SIGKILL after `timeout`.
    pub(super) fn retire(&mut self, svc: usize, pid: Pid, signal: Signal, timeout: Duration) {
        let _ = crate::process::signal_group(pid, signal);
        if signal == Signal::SIGKILL || !self.children.contains_key(&pid) {
            return;
        }
        let _ = crate::process::signal_group(pid, Signal::SIGCONT);
        self.retiring.insert(pid, svc);
        let tx = self.notices_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = tx.send(Notice::RetireDeadline { pid });
        });
    }
}
