//! The agent's conversation with racklift: post the inventory until it is
//! stored, ship log lines, heartbeat, and obey the answer (wait, power off,
//! reboot).
//!
//! Unreachable server, 5xx, 409 (the step is not waiting yet) and 429 are
//! retried with exponential backoff, forever: the inventory is kept in memory
//! and never dropped. A refused token (401/403) or a refused body (other 4xx)
//! ends the run with that message, since no retry can fix it.

use crate::protocol::{Command, Heartbeat, Inventory, LogLines};
use std::time::{Duration, Instant};

/// What the kernel command line tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// racklift's URL (`racklift.api=`).
    pub api: String,
    /// This boot's token (`racklift.token=`).
    pub token: String,
    /// The `BOOTIF=` value, when the boot loader passed it.
    pub bootif: Option<String>,
}

/// Reads `racklift.api=`, `racklift.token=` and `BOOTIF=` from a command line.
pub fn parse_cmdline(cmdline: &str) -> Result<Settings, String> {
    let get = |k: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
    };
    let api = get("racklift.api=")
        .ok_or("racklift.api= is missing from the kernel command line")?
        .trim_end_matches('/')
        .to_string();
    if !api.starts_with("http://") && !api.starts_with("https://") {
        return Err(format!(
            "racklift.api={api}: must start with http:// or https://"
        ));
    }
    // The ramdisk has no resolver (and a static binary must not load one):
    // the address is given, never looked up.
    let url = reqwest::Url::parse(&api).map_err(|e| format!("racklift.api={api}: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    if host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_err()
    {
        return Err(format!(
            "racklift.api={api}: give an IP address, not a host name (the ramdisk looks no names up; set racklift's http.public_url to http://IP:PORT)"
        ));
    }
    let token = get("racklift.token=")
        .filter(|t| !t.is_empty())
        .ok_or("racklift.token= is missing from the kernel command line")?;
    Ok(Settings {
        api,
        token,
        bootif: get("BOOTIF="),
    })
}

/// Retry pacing and heartbeat rhythm.
#[derive(Debug, Clone)]
pub struct Pacing {
    pub first_retry: Duration,
    pub max_retry: Duration,
    pub heartbeat: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the run ended without the server's command.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("racklift refused this boot's token ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("racklift refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("cannot make an HTTP client: {0}")]
    Client(String),
}

/// How the run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Attempts the inventory post took.
    pub attempts: u32,
    /// The command that ended the run.
    pub command: Command,
}

/// One answer, or why there is none.
enum Reply {
    Ok(serde_json::Value),
    /// Worth trying again.
    Transient(String),
    Fatal(AgentError),
}

/// The agent's HTTP side.
pub struct Client {
    http: reqwest::blocking::Client,
    settings: Settings,
    pacing: Pacing,
    /// Lines not yet accepted by the server (bounded).
    pending: Vec<String>,
}

/// At most this many unsent log lines are kept (the oldest go first).
const MAX_PENDING: usize = 1000;

impl Client {
    pub fn new(settings: Settings, pacing: Pacing) -> Result<Client, AgentError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(pacing.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("racklift-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AgentError::Client(e.to_string()))?;
        Ok(Client {
            http,
            settings,
            pacing,
            pending: Vec::new(),
        })
    }

    /// Prints a line on the console and queues it for the server.
    pub fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("racklift-agent: {line}");
        // The server refuses longer lines; the console has the whole one.
        let line: String = line.chars().take(crate::protocol::AGENT_LOG_LINE).collect();
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(line);
    }

    fn send(&self, path: &str, body: &impl serde::Serialize) -> Reply {
        let url = format!("{}{path}", self.settings.api);
        let resp = match self
            .http
            .post(&url)
            .bearer_auth(&self.settings.token)
            .json(body)
            .send()
        {
            Ok(r) => r,
            Err(e) => return Reply::Transient(format!("{url}: {}", error_chain(&e))),
        };
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(300).collect());
        match status {
            200..=299 => Reply::Ok(value),
            401 | 403 => Reply::Fatal(AgentError::Unauthorized { status, message }),
            409 | 429 | 500..=599 => Reply::Transient(format!("{url}: {status}: {message}")),
            _ => Reply::Fatal(AgentError::Rejected { status, message }),
        }
    }

    /// Posts until the server takes it; returns the answer and the attempts made.
    fn post_until_taken(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(serde_json::Value, u32), AgentError> {
        let mut delay = self.pacing.first_retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send(path, body) {
                Reply::Ok(v) => return Ok((v, attempt)),
                Reply::Fatal(e) => return Err(e),
                Reply::Transient(why) => {
                    self.say(format!(
                        "attempt {attempt} failed ({why}); retrying in {} ms",
                        delay.as_millis()
                    ));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.pacing.max_retry);
                }
            }
        }
    }

    /// Posts the inventory until racklift stores it; returns the attempts made.
    pub fn post_inventory(&mut self, inv: &Inventory) -> Result<u32, AgentError> {
        let body = serde_json::json!({ "inventory": inv });
        let (_, attempts) = self.post_until_taken("/v1/agent/inventory", &body)?;
        Ok(attempts)
    }

    /// Sends the queued log lines once; they stay queued when the server is away.
    pub fn ship_log(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len().min(crate::protocol::AGENT_LOG_LINES);
        let body = LogLines {
            lines: self.pending[..n].to_vec(),
        };
        if let Reply::Ok(_) = self.send("/v1/agent/log", &body) {
            self.pending.drain(..n);
        }
    }

    /// One heartbeat: the server's command, or None when it could not be asked.
    fn heartbeat(&mut self) -> Result<Option<Command>, AgentError> {
        match self.send("/v1/agent/heartbeat", &serde_json::json!({})) {
            // An answer this agent does not know (a newer server) means wait.
            Reply::Ok(v) => Ok(Some(
                serde_json::from_value::<Heartbeat>(v).map_or(Command::Wait, |h| h.command),
            )),
            Reply::Transient(why) => {
                eprintln!("racklift-agent: heartbeat failed ({why})");
                Ok(None)
            }
            Reply::Fatal(e) => Err(e),
        }
    }

    /// Posts the inventory, then heartbeats until the server says to power off
    /// or reboot, and returns that command (the caller carries it out).
    pub fn run(&mut self, inv: &Inventory) -> Result<Outcome, AgentError> {
        for n in &inv.agent.notes {
            self.say(format!("note: {n}"));
        }
        let started = Instant::now();
        let attempts = self.post_inventory(inv)?;
        self.say(format!(
            "inventory stored ({} disks, {} NICs, {} CPUs, {} MiB) after {attempts} attempt(s), {} ms",
            inv.disks.len(),
            inv.nics.len(),
            inv.cpu.threads,
            inv.memory.total_bytes >> 20,
            started.elapsed().as_millis()
        ));
        loop {
            self.ship_log();
            match self.heartbeat() {
                Ok(Some(Command::Wait)) | Ok(None) => {}
                Ok(Some(c)) => {
                    self.say(format!("racklift says {c:?}"));
                    self.ship_log();
                    return Ok(Outcome {
                        attempts,
                        command: c,
                    });
                }
                // The inventory is in and this boot is over on the server's side.
                Err(AgentError::Unauthorized { message, .. }) => {
                    self.say(format!("this boot is over ({message}): powering off"));
                    return Ok(Outcome {
                        attempts,
                        command: Command::PowerOff,
                    });
                }
                Err(e) => return Err(e),
            }
            std::thread::sleep(self.pacing.heartbeat);
        }
    }
}

/// The innermost cause of an error (`Connection refused (os error 111)`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        last = c.to_string();
        cur = c.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let s = parse_cmdline(
            "console=ttyS0 racklift.api=http://10.0.2.2:8080/ racklift.token=rla_x BOOTIF=01-52-54-00-00-00-01 quiet",
        )
        .unwrap();
        assert_eq!(s.api, "http://10.0.2.2:8080");
        assert_eq!(s.token, "rla_x");
        assert_eq!(s.bootif.as_deref(), Some("01-52-54-00-00-00-01"));
        assert!(
            parse_cmdline("racklift.token=x")
                .unwrap_err()
                .contains("racklift.api")
        );
        assert!(
            parse_cmdline("racklift.api=ftp://x racklift.token=x")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            parse_cmdline("racklift.api=http://10.0.0.1")
                .unwrap_err()
                .contains("racklift.token")
        );
        assert!(
            parse_cmdline("racklift.api=http://racklift.example:8080 racklift.token=x")
                .unwrap_err()
                .contains("give an IP address")
        );
        assert_eq!(
            parse_cmdline("racklift.api=https://[fd00::1]:8443 racklift.token=x")
                .unwrap()
                .api,
            "https://[fd00::1]:8443"
        );
    }
}
