//! The `redfish` BMC driver: DMTF Redfish over HTTPS, through a small client of
//! racklift's own on `reqwest` (rustls).
//!
//! Resources are read as JSON values and only the properties racklift uses are
//! picked out, leniently: an unknown enum value or a missing optional property
//! is never an error (real BMCs stray from the schema), only a missing link
//! racklift needs.
//!
//! One driver call is one conversation with the BMC, under the BMC's lock
//! (shared with every other driver for the same address and port):
//! 1. `GET /redfish/v1/` (the service root, unauthenticated): where the systems
//!    and the session collection are;
//! 2. a session (`POST .../SessionService/Sessions`, then `X-Auth-Token`), or
//!    HTTP basic authentication when the service has no session collection;
//! 3. the first member of the `Systems` collection, then the command;
//! 4. `DELETE` of the session (in the background, still under the lock, when
//!    the caller gave up half-way: BMCs have few session slots).
//!
//! What the commands do:
//! - power: `ComputerSystem.Reset` with a `ResetType` the BMC lists in
//!   `ResetType@Redfish.AllowableValues` (hard off `ForceOff`, soft off
//!   `GracefulShutdown`, reset `ForceRestart` (else as a cycle), cycle
//!   `PowerCycle` or else `ForceOff` then `On`), then polling `PowerState`
//!   until the change shows
//!   ([`RedfishSettings::power_wait`]);
//! - boot device: `PATCH` of `Boot` (`BootSourceOverrideTarget`, `...Enabled`
//!   `Once`/`Continuous`, `...Mode` `UEFI`/`Legacy`);
//! - BIOS: `Bios` `Attributes` are current; changes go to the settings object
//!   named by `@Redfish.Settings` (usually `Bios/Settings`), with
//!   `@Redfish.SettingsApplyTime` `OnReset` when the BMC lists it, and are
//!   pending until the machine boots;
//! - RAID: `Storage` members, their `Volumes` collections (`POST` to create,
//!   `DELETE` a member), following task monitors (`202 Accepted` + `Location`)
//!   until the task is done ([`RedfishSettings::task_wait`]);
//! - inventory: the system's summary, `EthernetInterfaces` (MACs) and the
//!   storage controllers' `Drives`.
//!
//! `PATCH` sends `If-Match` with the resource's ETag (`@odata.etag` or the
//! `ETag` header) when it has one; a `412` re-reads the resource and tries once
//! more. Errors are classified for the conductor:
//! - a connection refused for [`REFUSED_FOR`] (nothing listens at the address
//!   and port): [`BmcError::Closed`], which the conductor does not retry;
//! - timeouts, briefly refused or reset connections, `5xx`, `429`: retried
//!   here with exponential backoff and jitter (honouring `Retry-After`) until
//!   [`RedfishSettings::retry_deadline`], then [`BmcError::Transient`]; a
//!   `POST` is repeated only when the BMC cannot have acted on it (no
//!   connection, `429`, `502`, `503`, `504`);
//! - `401`: [`BmcError::Auth`] at once;
//! - an untrusted certificate: [`BmcError::Refused`] at once, naming the
//!   per-node opt-out (`verify_tls = false`);
//! - any other `4xx`: [`BmcError::Refused`] at once, with the BMC's
//!   `@Message.ExtendedInfo` messages.

use super::{
    BiosSettings, BmcDisk, BmcDriver, BmcError, BmcInventory, BmcNic, BmcTarget, BootDevice,
    BootOverride, FirmwareBoot, PowerAction, PowerState, RaidVolume, VolumeSpec,
    backoff_with_jitter,
};
use async_trait::async_trait;
use reqwest::{Method, StatusCode, header};
use serde_json::{Map, Value, json};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The HTTPS port.
pub const DEFAULT_PORT: u16 = 443;

/// How the Redfish driver talks to BMCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedfishSettings {
    /// How long one HTTP request may take.
    pub request_timeout: Duration,
    /// How long transient failures of one request are retried.
    pub retry_deadline: Duration,
    /// The first pause between retries (doubled each time, with jitter, at most 8 s).
    pub retry_backoff: Duration,
    /// How long a power change may take to show in `PowerState`.
    pub power_wait: Duration,
    /// How long a task (volume creation or deletion) may run.
    pub task_wait: Duration,
    /// How often power state and tasks are polled.
    pub poll_interval: Duration,
}

impl Default for RedfishSettings {
    fn default() -> Self {
        RedfishSettings {
            request_timeout: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(60),
            retry_backoff: Duration::from_millis(500),
            power_wait: Duration::from_secs(120),
            task_wait: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The two HTTP clients every Redfish driver shares: one that verifies BMC
/// certificates and one that accepts self-signed ones (per-node opt-out).
#[derive(Clone, Default)]
pub(crate) struct Clients(Arc<[OnceLock<reqwest::Client>; 2]>);

impl Clients {
    pub(crate) fn get(&self, verify_tls: bool) -> Result<reqwest::Client, BmcError> {
        let slot = &self.0[usize::from(!verify_tls)];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let c = reqwest::Client::builder()
            .danger_accept_invalid_certs(!verify_tls)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("racklift/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                BmcError::Unsupported(format!("cannot set up the Redfish HTTP client: {e}"))
            })?;
        Ok(slot.get_or_init(|| c).clone())
    }
}

/// The `redfish` driver for one BMC.
pub struct RedfishDriver {
    /// `https://host:port` (or `http://` when the address says so).
    base: String,
    /// `host:port`, as errors name the BMC.
    label: String,
    user: String,
    password: String,
    http: reqwest::Client,
    settings: RedfishSettings,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for RedfishDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishDriver")
            .field("bmc", &self.base)
            .field("user", &self.user)
            .finish()
    }
}

/// The scheme, host and port of a target: `address` may be a URL
/// (`http://` or `https://`, with a port or without; see
/// [`crate::node::redfish_url`]) or a bare host; the default is HTTPS on 443.
fn endpoint(target: &BmcTarget) -> Result<(&'static str, String, u16), BmcError> {
    let addr = target
        .address
        .as_deref()
        .ok_or_else(|| BmcError::Unsupported("a Redfish BMC needs an address".into()))?;
    let url = crate::node::redfish_url(addr).unwrap_or(crate::node::RedfishUrl {
        tls: true,
        host: addr.trim_end_matches('/'),
        port: None,
    });
    let scheme = if url.tls { "https" } else { "http" };
    let default = if url.tls { DEFAULT_PORT } else { 80 };
    let written = match url.port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| {
            BmcError::Unsupported(format!(
                "'{p}' in the Redfish address '{addr}' is not a port"
            ))
        })?),
        None => None,
    };
    let bare = url.host.trim_start_matches('[').trim_end_matches(']');
    let host = if bare.contains(':') {
        format!("[{bare}]")
    } else {
        url.host.to_string()
    };
    Ok((scheme, host, target.port.or(written).unwrap_or(default)))
}

impl RedfishDriver {
    /// The lock key of a target: its BMC's host and port.
    pub(super) fn lock_key(target: &BmcTarget) -> Result<String, BmcError> {
        let (_, host, port) = endpoint(target)?;
        Ok(format!("{}:{port}", host.to_ascii_lowercase()))
    }

    /// A driver for `target`; `lock` must be the one lock of its BMC.
    pub(super) fn new(
        target: &BmcTarget,
        settings: RedfishSettings,
        http: reqwest::Client,
        lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<RedfishDriver, BmcError> {
        let (scheme, host, port) = endpoint(target)?;
        Ok(RedfishDriver {
            base: format!("{scheme}://{host}:{port}"),
            label: format!("{host}:{port}"),
            user: target.username.clone().unwrap_or_default(),
            password: target.password.clone().unwrap_or_default(),
            http,
            settings,
            lock,
        })
    }

    fn transient(&self, detail: impl Into<String>) -> BmcError {
        BmcError::Transient {
            address: self.label.clone(),
            detail: detail.into(),
        }
    }

    fn refused(&self, detail: impl Into<String>) -> BmcError {
        BmcError::Refused {
            address: self.label.clone(),
            detail: detail.into(),
        }
    }

    fn auth(&self) -> BmcError {
        BmcError::Auth {
            address: self.label.clone(),
            user: self.user.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// The pause before retry `n` (0-based): exponential, at most 8 s, with
    /// jitter (between half and all of it) so many callers do not retry in step.
    fn backoff(&self, n: u32) -> Duration {
        backoff_with_jitter(self.settings.retry_backoff, n, Duration::from_secs(8))
    }

    /// Sends one request, retrying transient failures until the deadline.
    /// Returns every answer but `401` (as [`BmcError::Auth`]) and the retried ones.
    async fn send(
        &self,
        auth: &Auth,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, BmcError> {
        self.send_within(
            auth,
            method,
            path,
            body,
            if_match,
            self.settings.retry_deadline,
        )
        .await
    }

    /// [`Self::send`], retrying for at most `retry_for` (zero: one try).
    async fn send_within(
        &self,
        auth: &Auth,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        retry_for: Duration,
    ) -> Result<Answer, BmcError> {
        let deadline = Instant::now() + retry_for;
        let idempotent = method != Method::POST;
        let what = format!("{method} {path}");
        let mut tries = 0u32;
        let mut refused_since = None;
        loop {
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .timeout(self.settings.request_timeout)
                .header(header::ACCEPT, "application/json")
                .header("OData-Version", "4.0");
            req = match auth {
                Auth::Token(t, _) => req.header("X-Auth-Token", t),
                Auth::Basic => req.basic_auth(&self.user, Some(&self.password)),
                Auth::None => req,
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(tag) = if_match {
                req = req.header(header::IF_MATCH, tag);
            }
            let (why, retry_after) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
                        return Err(self.auth());
                    }
                    let retryable = match status.as_u16() {
                        429 | 502 | 503 | 504 => true,
                        500..=599 => idempotent,
                        _ => false,
                    };
                    let retry_after = resp
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let answer = Answer::read(resp).await;
                    if !retryable {
                        return answer.map_err(|e| self.transient(format!("{what}: {e}")));
                    }
                    let msg = answer
                        .map(|a| a.message())
                        .unwrap_or_else(|e| e.to_string());
                    (format!("{what}: {status} {msg}"), retry_after)
                }
                Err(e) => {
                    if let Some(why) = tls_problem(&e) {
                        return Err(self.refused(format!(
                            "TLS: {why}; if this BMC has a self-signed certificate, set the node's bmc.verify_tls to false"
                        )));
                    }
                    if refused_connection(&e) {
                        let since = *refused_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= REFUSED_FOR.min(retry_for) {
                            return Err(BmcError::Closed {
                                address: self.label.clone(),
                                detail: format!(
                                    "{what}: nothing accepts connections there (for {} s); check the node's bmc.address and bmc.port",
                                    since.elapsed().as_secs()
                                ),
                            });
                        }
                    }
                    let timeout = e.is_timeout();
                    if !(idempotent || e.is_connect()) {
                        return Err(self.transient(format!("{what}: {}", error_chain(&e))));
                    }
                    let why = if timeout {
                        format!(
                            "{what}: no answer within {} s",
                            self.settings.request_timeout.as_secs_f64()
                        )
                    } else {
                        format!("{what}: {}", error_chain(&e))
                    };
                    (why, None)
                }
            };
            let pause = retry_after
                .map(|r| r.min(Duration::from_secs(30)))
                .unwrap_or_else(|| self.backoff(tries));
            tries += 1;
            if Instant::now() + pause > deadline {
                return Err(self.transient(if tries > 1 {
                    format!("{why} (after {tries} tries)")
                } else {
                    why
                }));
            }
            tracing::debug!(bmc = %self.label, tries, why, "Redfish request failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// Sends a request and refuses any answer that is not a success.
    async fn call(
        &self,
        auth: &Auth,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, BmcError> {
        let a = self
            .send(auth, method.clone(), path, body, if_match)
            .await?;
        self.success(method, path, a)
    }

    async fn get(&self, auth: &Auth, path: &str) -> Result<Answer, BmcError> {
        self.call(auth, Method::GET, path, None, None).await
    }

    /// `PATCH` with `If-Match` when the resource has an ETag; on `412` the
    /// resource is read again and the change sent once more.
    async fn patch(
        &self,
        auth: &Auth,
        path: &str,
        current: &Answer,
        body: &Value,
    ) -> Result<Answer, BmcError> {
        let mut tag = current.etag();
        let mut tries = 0;
        loop {
            tries += 1;
            let a = self
                .send(auth, Method::PATCH, path, Some(body), tag.as_deref())
                .await?;
            if a.status != StatusCode::PRECONDITION_FAILED || tries == 2 {
                return self.success(Method::PATCH, path, a);
            }
            tracing::debug!(bmc = %self.label, path, "ETag changed meanwhile; reading again");
            tag = self.get(auth, path).await?.etag();
        }
    }

    fn success(&self, method: Method, path: &str, a: Answer) -> Result<Answer, BmcError> {
        if a.status.is_success() {
            Ok(a)
        } else {
            Err(self.refused(format!(
                "{method} {path}: {} {}",
                a.status.as_u16(),
                a.message()
            )))
        }
    }

    /// Takes the BMC's lock, opens a session and finds the system.
    async fn open(&self) -> Result<Conn<'_>, BmcError> {
        let guard = self.lock.clone().lock_owned().await;
        let root = self.get(&Auth::None, "/redfish/v1/").await?;
        let systems = odata_id(&root.body["Systems"])
            .ok_or_else(|| self.refused("the service root links no Systems collection"))?;
        let sessions = odata_id(&root.body["Links"]["Sessions"]);
        let auth = match sessions {
            None => Auth::Basic,
            Some(path) => {
                let body = json!({"UserName": self.user, "Password": self.password});
                let a = self
                    .send(&Auth::None, Method::POST, &path, Some(&body), None)
                    .await?;
                match a.status.as_u16() {
                    200..=299 => {
                        let token = a.header("x-auth-token").ok_or_else(|| {
                            self.refused("the new session came without an X-Auth-Token")
                        })?;
                        let location = a
                            .header("location")
                            .or_else(|| odata_id(&a.body))
                            .map(|l| self.relative(&l));
                        Auth::Token(token, location)
                    }
                    403 => return Err(self.auth()),
                    // The service lists sessions but does not make them here.
                    404 | 405 | 501 => Auth::Basic,
                    _ => {
                        return Err(self.refused(format!(
                            "POST {path}: {} {}",
                            a.status.as_u16(),
                            a.message()
                        )));
                    }
                }
            }
        };
        let mut conn = Conn {
            driver: self,
            auth,
            system: String::new(),
            closed: false,
            guard: Some(guard),
        };
        match self.find_system(&conn, &systems).await {
            Ok(s) => conn.system = s,
            Err(e) => {
                conn.close().await;
                return Err(e);
            }
        }
        Ok(conn)
    }

    async fn find_system(&self, conn: &Conn<'_>, systems: &str) -> Result<String, BmcError> {
        let c = self.get(&conn.auth, systems).await?;
        members(&c.body)
            .into_iter()
            .next()
            .ok_or_else(|| self.refused("the Systems collection is empty"))
    }

    /// A path on this BMC (strips the scheme and host of an absolute URL).
    fn relative(&self, url: &str) -> String {
        match url.find("://") {
            Some(i) => url[i + 3..]
                .find('/')
                .map(|j| url[i + 3 + j..].to_string())
                .unwrap_or_else(|| "/".into()),
            None => url.to_string(),
        }
    }

    /// Runs `op` in a conversation and closes the session whatever happens.
    async fn with_conn<T>(
        &self,
        op: impl AsyncFnOnce(&Conn<'_>) -> Result<T, BmcError>,
    ) -> Result<T, BmcError> {
        let conn = self.open().await?;
        let out = op(&conn).await;
        conn.close().await;
        out
    }

    /// Polls the system until its power state is `want`, or gives up.
    async fn wait_power(&self, conn: &Conn<'_>, want: PowerState) -> Result<(), BmcError> {
        let started = Instant::now();
        loop {
            let sys = conn.system().await?;
            if power_of(&sys.body) == want {
                return Ok(());
            }
            if started.elapsed() >= self.settings.power_wait {
                return Err(self.transient(format!(
                    "the machine did not reach power {} within {} s (it is {})",
                    want.as_str(),
                    self.settings.power_wait.as_secs(),
                    sys.body["PowerState"].as_str().unwrap_or("unknown")
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn reset(&self, conn: &Conn<'_>, sys: &Answer, kind: &str) -> Result<(), BmcError> {
        let target = sys.body["Actions"]["#ComputerSystem.Reset"]["target"]
            .as_str()
            .map(|t| self.relative(t))
            .unwrap_or_else(|| format!("{}/Actions/ComputerSystem.Reset", conn.system));
        self.call(
            &conn.auth,
            Method::POST,
            &target,
            Some(&json!({ "ResetType": kind })),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Follows a `202 Accepted` to the end of its task; returns the final answer.
    async fn follow_task(&self, conn: &Conn<'_>, accepted: Answer) -> Result<Answer, BmcError> {
        if accepted.status != StatusCode::ACCEPTED {
            return Ok(accepted);
        }
        let monitor = accepted
            .header("location")
            .or_else(|| odata_id(&accepted.body))
            .map(|l| self.relative(&l))
            .ok_or_else(|| self.refused("202 Accepted without a task monitor (Location)"))?;
        let started = Instant::now();
        loop {
            let a = self
                .send(&conn.auth, Method::GET, &monitor, None, None)
                .await?;
            let state = a.body["TaskState"].as_str().unwrap_or_default();
            let running = a.status == StatusCode::ACCEPTED
                || matches!(
                    state,
                    "New"
                        | "Starting"
                        | "Running"
                        | "Pending"
                        | "Stopping"
                        | "Suspended"
                        | "Interrupted"
                        | "Service"
                );
            if !running {
                if !a.status.is_success() && a.status != StatusCode::NOT_FOUND {
                    return Err(self.refused(format!(
                        "task {monitor}: {} {}",
                        a.status.as_u16(),
                        a.message()
                    )));
                }
                let status = a.body["TaskStatus"].as_str().unwrap_or("OK");
                if matches!(state, "Exception" | "Killed" | "Cancelled") || status == "Critical" {
                    return Err(self.refused(format!(
                        "task {monitor} ended {state} ({status}): {}",
                        task_messages(&a.body)
                    )));
                }
                return Ok(a);
            }
            if started.elapsed() >= self.settings.task_wait {
                return Err(self.transient(format!(
                    "task {monitor} still running after {} s",
                    self.settings.task_wait.as_secs()
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Every storage controller of the system.
    async fn storages(&self, conn: &Conn<'_>, sys: &Value) -> Result<Vec<Value>, BmcError> {
        let Some(coll) = odata_id(&sys["Storage"]) else {
            return Ok(Vec::new());
        };
        let c = self
            .send(&conn.auth, Method::GET, &coll, None, None)
            .await?;
        if c.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let c = self.success(Method::GET, &coll, c)?;
        let mut out = Vec::new();
        for m in members(&c.body) {
            out.push(self.get(&conn.auth, &m).await?.body);
        }
        Ok(out)
    }

    async fn volumes_of(
        &self,
        conn: &Conn<'_>,
        storage: &Value,
    ) -> Result<Vec<(String, RaidVolume)>, BmcError> {
        let Some(coll) = odata_id(&storage["Volumes"]) else {
            return Ok(Vec::new());
        };
        let c = self.get(&conn.auth, &coll).await?;
        let mut out = Vec::new();
        for m in members(&c.body) {
            let v = self.get(&conn.auth, &m).await?;
            out.push((m, volume_of(&v.body, storage)));
        }
        Ok(out)
    }

    async fn all_volumes(&self, conn: &Conn<'_>) -> Result<Vec<(String, RaidVolume)>, BmcError> {
        let sys = conn.system().await?;
        let mut out = Vec::new();
        for s in self.storages(conn, &sys.body).await? {
            out.extend(self.volumes_of(conn, &s).await?);
        }
        Ok(out)
    }
}

/// How requests are authenticated.
enum Auth {
    None,
    Basic,
    /// A session token and the session's URI (deleted at the end).
    Token(String, Option<String>),
}

/// One conversation: the BMC's lock, the session, the system's path.
struct Conn<'a> {
    driver: &'a RedfishDriver,
    auth: Auth,
    system: String,
    /// Whether the session was ended (or there is none to end).
    closed: bool,
    /// The BMC's lock, held until the session is ended.
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Conn<'_> {
    /// A conversation given up half-way (its caller timed out) still ends its
    /// session, in the background: BMCs have few session slots.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let (Auth::Token(token, Some(session)), Ok(rt)) =
            (&self.auth, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let req = self
            .driver
            .http
            .delete(self.driver.url(session))
            .header("X-Auth-Token", token)
            .timeout(self.driver.settings.request_timeout);
        let guard = self.guard.take();
        rt.spawn(async move {
            let _ = req.send().await;
            drop(guard);
        });
    }
}

impl Conn<'_> {
    async fn system(&self) -> Result<Answer, BmcError> {
        self.driver.get(&self.auth, &self.system).await
    }

    /// Ends the session (best effort: the BMC also times it out).
    async fn close(mut self) {
        self.closed = true;
        if let Auth::Token(_, Some(session)) = &self.auth
            && let Err(e) = self
                .driver
                .send(&self.auth, Method::DELETE, session, None, None)
                .await
        {
            tracing::debug!(bmc = %self.driver.label, error = %e, "ending the Redfish session failed");
        }
    }
}

/// An HTTP answer: status, the headers racklift reads, the JSON body (or null).
struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Value,
}

impl Answer {
    async fn read(resp: reqwest::Response) -> Result<Answer, String> {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the answer: {}", error_chain(&e)))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn etag(&self) -> Option<String> {
        self.body["@odata.etag"]
            .as_str()
            .map(str::to_string)
            .or_else(|| self.header("etag"))
    }

    /// The BMC's own words: `error.@Message.ExtendedInfo[].Message`, else
    /// `error.message`, else the status.
    fn message(&self) -> String {
        let err = &self.body["error"];
        let infos: Vec<&str> = err["@Message.ExtendedInfo"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["Message"].as_str()).collect())
            .unwrap_or_default();
        if !infos.is_empty() {
            return infos.join("; ");
        }
        err["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                self.status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            })
    }
}

fn odata_id(v: &Value) -> Option<String> {
    v["@odata.id"].as_str().map(str::to_string)
}

fn members(collection: &Value) -> Vec<String> {
    collection["Members"]
        .as_array()
        .map(|m| m.iter().filter_map(odata_id).collect())
        .unwrap_or_default()
}

/// The last segment of a resource path (its `Id` by convention).
fn last_segment(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_string()
}

fn power_of(system: &Value) -> PowerState {
    // Transitional states count as where they lead, as the BMC is already on its way.
    match system["PowerState"].as_str() {
        Some("On" | "PoweringOn" | "Paused") => PowerState::On,
        Some("Off" | "PoweringOff") => PowerState::Off,
        _ => PowerState::Unknown,
    }
}

fn allowed(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

fn task_messages(task: &Value) -> String {
    let m: Vec<&str> = task["Messages"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["Message"].as_str()).collect())
        .unwrap_or_default();
    if m.is_empty() {
        "no message".into()
    } else {
        m.join("; ")
    }
}

fn volume_of(v: &Value, storage: &Value) -> RaidVolume {
    RaidVolume {
        id: v["Id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| odata_id(v).map(|p| last_segment(&p)))
            .unwrap_or_default(),
        name: v["Name"].as_str().map(str::to_string),
        level: v["RAIDType"]
            .as_str()
            .or_else(|| v["VolumeType"].as_str())
            .map(str::to_string),
        capacity_bytes: v["CapacityBytes"].as_u64(),
        drives: v["Links"]["Drives"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(odata_id)
                    .map(|p| last_segment(&p))
                    .collect()
            })
            .unwrap_or_default(),
        storage: storage["Id"].as_str().unwrap_or_default().to_string(),
    }
}

/// Whether a request failed on the BMC's certificate, and how.
fn tls_problem(e: &reqwest::Error) -> Option<String> {
    let chain = error_chain(e);
    let lower = chain.to_ascii_lowercase();
    (lower.contains("certificate") || lower.contains("unknownissuer"))
        .then(|| format!("the BMC's certificate is not trusted ({chain})"))
}

/// An error and its sources, as one line.
/// How long a refused connection is retried within one request before the
/// BMC is taken as closed ([`BmcError::Closed`]); a BMC that restarts may
/// refuse connections for a moment.
const REFUSED_FOR: Duration = Duration::from_secs(3);

/// Whether a request failed because the connection was refused (nothing
/// listens at the address and port).
fn refused_connection(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cur = c.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[async_trait]
impl BmcDriver for RedfishDriver {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        self.with_conn(async |c| Ok(power_of(&c.system().await?.body)))
            .await
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        self.with_conn(async |c| {
            let sys = c.system().await?;
            let now = power_of(&sys.body);
            let kinds = allowed(
                &sys.body["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"],
            );
            let can = |k: &str| kinds.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
            let pick = |choices: &[&'static str]| choices.iter().copied().find(|k| can(k));
            let no = |what: &str| {
                BmcError::Unsupported(format!(
                    "the BMC at {} offers no reset type for {what} (it offers {})",
                    self.label,
                    kinds.clone().unwrap_or_default().join(", ")
                ))
            };
            match action {
                PowerAction::On => {
                    if now != PowerState::On {
                        let k = pick(&["On", "ForceOn"]).ok_or_else(|| no("power on"))?;
                        self.reset(c, &sys, k).await?;
                    }
                    self.wait_power(c, PowerState::On).await
                }
                PowerAction::Off | PowerAction::SoftOff => {
                    if now != PowerState::Off {
                        let k = if action == PowerAction::Off {
                            pick(&["ForceOff"]).ok_or_else(|| no("hard power off"))?
                        } else {
                            pick(&["GracefulShutdown"]).ok_or_else(|| no("soft power off"))?
                        };
                        self.reset(c, &sys, k).await?;
                    }
                    self.wait_power(c, PowerState::Off).await
                }
                PowerAction::Reset | PowerAction::Cycle => {
                    let order: &[&'static str] = if action == PowerAction::Reset {
                        &["ForceRestart", "PowerCycle"]
                    } else {
                        // A cycle removes power: PowerCycle, else off then on.
                        &["PowerCycle"]
                    };
                    if now == PowerState::On
                        && let Some(k) = pick(order)
                    {
                        self.reset(c, &sys, k).await?;
                        return self.wait_power(c, PowerState::On).await;
                    }
                    // Off (or no restart type): off if needed, then on.
                    if now != PowerState::Off {
                        let k = pick(&["ForceOff"]).ok_or_else(|| no("a power cycle"))?;
                        self.reset(c, &sys, k).await?;
                        self.wait_power(c, PowerState::Off).await?;
                    }
                    let k = pick(&["On", "ForceOn"]).ok_or_else(|| no("a power cycle"))?;
                    let sys = c.system().await?;
                    self.reset(c, &sys, k).await?;
                    self.wait_power(c, PowerState::On).await
                }
            }
        })
        .await
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let target = match boot.device {
            BootDevice::Pxe => "Pxe",
            BootDevice::Disk => "Hdd",
            BootDevice::Cd => "Cd",
            BootDevice::UefiHttp => "UefiHttp",
        };
        self.with_conn(async |c| {
            let sys = c.system().await?;
            if let Some(ok) =
                allowed(&sys.body["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"])
                && !ok.iter().any(|t| t == target)
            {
                return Err(BmcError::Unsupported(format!(
                    "the BMC at {} cannot boot from {target} (it offers {})",
                    self.label,
                    ok.join(", ")
                )));
            }
            let mut b = json!({
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideEnabled": if boot.persistent { "Continuous" } else { "Once" },
            });
            if let Some(mode) = boot.mode {
                b["BootSourceOverrideMode"] = json!(match mode {
                    FirmwareBoot::Uefi => "UEFI",
                    FirmwareBoot::Legacy => "Legacy",
                });
            }
            let system = c.system.clone();
            self.patch(&c.auth, &system, &sys, &json!({ "Boot": b }))
                .await
                .map(|_| ())
        })
        .await
    }

    async fn bios(&self) -> Result<BiosSettings, BmcError> {
        self.with_conn(async |c| {
            let (bios, settings) = self.bios_resources(c).await?;
            let current = bios.body["Attributes"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let mut pending = Map::new();
            if let Some((_, s)) = settings {
                for (k, v) in s.body["Attributes"].as_object().into_iter().flatten() {
                    if current.get(k) != Some(v) {
                        pending.insert(k.clone(), v.clone());
                    }
                }
            }
            Ok(BiosSettings { current, pending })
        })
        .await
    }

    async fn set_bios(&self, changes: &Map<String, Value>) -> Result<(), BmcError> {
        self.with_conn(async |c| {
            let (bios, settings) = self.bios_resources(c).await?;
            if let Some(current) = bios.body["Attributes"].as_object()
                && let Some(unknown) = changes.keys().find(|k| !current.contains_key(*k))
            {
                return Err(self.refused(format!("the BIOS has no attribute '{unknown}'")));
            }
            let mut body = json!({ "Attributes": changes });
            let times = allowed(&bios.body["@Redfish.Settings"]["SupportedApplyTimes"]);
            if let Some(t) = times {
                if t.iter().any(|x| x == "OnReset") {
                    body["@Redfish.SettingsApplyTime"] = json!({"ApplyTime": "OnReset"});
                } else if !t
                    .iter()
                    .any(|x| x == "AtMaintenanceWindowStart" || x == "InMaintenanceWindowOnReset")
                    && t.iter().any(|x| x == "Immediate")
                {
                    body["@Redfish.SettingsApplyTime"] = json!({"ApplyTime": "Immediate"});
                }
            }
            match settings {
                Some((path, s)) => self.patch(&c.auth, &path, &s, &body).await.map(|_| ()),
                None => {
                    let path = odata_id(&bios.body).unwrap_or_default();
                    self.patch(&c.auth, &path, &bios, &body).await.map(|_| ())
                }
            }
        })
        .await
    }

    async fn raid_volumes(&self) -> Result<Vec<RaidVolume>, BmcError> {
        self.with_conn(async |c| {
            Ok(self
                .all_volumes(c)
                .await?
                .into_iter()
                .map(|(_, v)| v)
                .collect())
        })
        .await
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<RaidVolume, BmcError> {
        spec.check()?;
        let level = spec.raid_type()?;
        self.with_conn(async |c| {
            let sys = c.system().await?;
            let storages = self.storages(c, &sys.body).await?;
            let drive_paths = |s: &Value| -> Vec<String> {
                s["Drives"]
                    .as_array()
                    .map(|d| d.iter().filter_map(odata_id).collect())
                    .unwrap_or_default()
            };
            let has_all = |s: &Value| {
                let paths = drive_paths(s);
                spec.drives
                    .iter()
                    .all(|d| paths.iter().any(|p| last_segment(p) == *d || p == d))
            };
            let storage = match &spec.storage {
                Some(id) => storages
                    .iter()
                    .find(|s| s["Id"].as_str() == Some(id.as_str()))
                    .ok_or_else(|| self.refused(format!("no storage controller '{id}'")))?,
                None => storages
                    .iter()
                    .filter(|s| odata_id(&s["Volumes"]).is_some())
                    .find(|s| has_all(s))
                    .ok_or_else(|| {
                        self.refused(format!(
                            "no storage controller with volumes holds the disks {}",
                            spec.drives.join(", ")
                        ))
                    })?,
            };
            let coll = odata_id(&storage["Volumes"]).ok_or_else(|| {
                BmcError::Unsupported(format!(
                    "storage controller '{}' has no Volumes collection",
                    storage["Id"].as_str().unwrap_or_default()
                ))
            })?;
            let paths = drive_paths(storage);
            let mut links = Vec::new();
            for d in &spec.drives {
                let p = paths
                    .iter()
                    .find(|p| last_segment(p) == *d || *p == d)
                    .ok_or_else(|| self.refused(format!("no disk '{d}' on this controller")))?;
                links.push(json!({ "@odata.id": p }));
            }
            let mut body = json!({ "RAIDType": level });
            if !links.is_empty() {
                body["Links"] = json!({ "Drives": links });
            }
            if let Some(n) = &spec.name {
                body["Name"] = json!(n);
            }
            if let Some(b) = spec.capacity_bytes {
                body["CapacityBytes"] = json!(b);
            }
            let before: Vec<String> = self
                .volumes_of(c, storage)
                .await?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            let a = self
                .call(&c.auth, Method::POST, &coll, Some(&body), None)
                .await?;
            let location = a.header("location").map(|l| self.relative(&l));
            let done = self.follow_task(c, a).await?;
            if done.body["Id"].is_string() && done.body["TaskState"].is_null() {
                return Ok(volume_of(&done.body, storage));
            }
            // Find the new member (the task's answer need not carry it).
            let now = self.volumes_of(c, storage).await?;
            now.iter()
                .find(|(p, _)| location.as_deref() == Some(p.as_str()))
                .or_else(|| now.iter().find(|(p, _)| !before.contains(p)))
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    self.refused("the volume creation finished but no new volume appeared")
                })
        })
        .await
    }

    async fn delete_volume(&self, id: &str) -> Result<(), BmcError> {
        self.with_conn(async |c| {
            let all = self.all_volumes(c).await?;
            let no_volume = || BmcError::NoVolume {
                address: self.label.clone(),
                id: id.to_string(),
                known: all.iter().map(|(_, v)| v.id.clone()).collect(),
            };
            let (path, _) = all
                .iter()
                .find(|(p, v)| v.id == id || p == id)
                .ok_or_else(no_volume)?;
            let a = self.send(&c.auth, Method::DELETE, path, None, None).await?;
            // Gone since it was listed (deleted meanwhile): not found, not refused.
            if a.status == StatusCode::NOT_FOUND {
                return Err(no_volume());
            }
            let a = self.success(Method::DELETE, path, a)?;
            self.follow_task(c, a).await.map(|_| ())
        })
        .await
    }

    async fn inventory(&self) -> Result<BmcInventory, BmcError> {
        self.with_conn(async |c| {
            let sys = c.system().await?.body;
            let s = |k: &str| sys[k].as_str().map(str::to_string);
            let mut inv = BmcInventory {
                manufacturer: s("Manufacturer"),
                model: s("Model"),
                serial: s("SerialNumber"),
                uuid: s("UUID"),
                bios_version: s("BiosVersion"),
                cpus: sys["ProcessorSummary"]["Count"].as_u64(),
                memory_gib: sys["MemorySummary"]["TotalSystemMemoryGiB"].as_f64(),
                ..Default::default()
            };
            if let Some(coll) = odata_id(&sys["EthernetInterfaces"]) {
                let nics = self.get(&c.auth, &coll).await?;
                for m in members(&nics.body) {
                    let n = self.get(&c.auth, &m).await?.body;
                    inv.nics.push(BmcNic {
                        id: n["Id"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| last_segment(&m)),
                        mac: n["MACAddress"]
                            .as_str()
                            .or_else(|| n["PermanentMACAddress"].as_str())
                            .map(|m| m.to_ascii_lowercase()),
                        speed_mbps: n["SpeedMbps"].as_u64(),
                    });
                }
            }
            // Storage is optional here: a BMC that cannot list it (at once)
            // still gives the rest of the inventory.
            let storages = match odata_id(&sys["Storage"]) {
                Some(coll) => {
                    let a = self
                        .send_within(&c.auth, Method::GET, &coll, None, None, Duration::ZERO)
                        .await;
                    match a {
                        Ok(a) if a.status.is_success() => {
                            let mut out = Vec::new();
                            for m in members(&a.body) {
                                out.push(self.get(&c.auth, &m).await?.body);
                            }
                            out
                        }
                        Ok(a) => {
                            tracing::debug!(bmc = %self.label, status = a.status.as_u16(), "no storage inventory");
                            Vec::new()
                        }
                        Err(e) => {
                            tracing::debug!(bmc = %self.label, error = %e, "no storage inventory");
                            Vec::new()
                        }
                    }
                }
                None => Vec::new(),
            };
            for st in storages {
                let drives: Vec<String> = st["Drives"]
                    .as_array()
                    .map(|d| d.iter().filter_map(odata_id).collect())
                    .unwrap_or_default();
                for d in drives {
                    let v = self.get(&c.auth, &d).await?.body;
                    inv.disks.push(BmcDisk {
                        id: v["Id"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| last_segment(&d)),
                        name: v["Name"].as_str().map(str::to_string),
                        model: v["Model"].as_str().map(str::to_string),
                        serial: v["SerialNumber"].as_str().map(str::to_string),
                        capacity_bytes: v["CapacityBytes"].as_u64(),
                        media: v["MediaType"].as_str().map(str::to_string),
                        storage: st["Id"].as_str().map(str::to_string),
                    });
                }
            }
            Ok(inv)
        })
        .await
    }
}

impl RedfishDriver {
    /// The `Bios` resource and its settings object (path and resource), if any.
    async fn bios_resources(
        &self,
        c: &Conn<'_>,
    ) -> Result<(Answer, Option<(String, Answer)>), BmcError> {
        let sys = c.system().await?;
        let path = odata_id(&sys.body["Bios"]).ok_or_else(|| {
            BmcError::Unsupported(format!(
                "the BMC at {} offers no BIOS resource for this system",
                self.label
            ))
        })?;
        let bios = self.get(&c.auth, &path).await?;
        let settings = match odata_id(&bios.body["@Redfish.Settings"]["SettingsObject"]) {
            Some(p) => {
                let s = self.get(&c.auth, &p).await?;
                Some((p, s))
            }
            None => None,
        };
        Ok((bios, settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::BmcDriverKind;

    fn target(addr: &str, port: Option<u16>) -> BmcTarget {
        BmcTarget {
            driver: BmcDriverKind::Redfish,
            address: Some(addr.into()),
            port,
            username: Some("admin".into()),
            password: Some("pw".into()),
            verify_tls: true,
            node_key: "n".into(),
        }
    }

    #[test]
    fn addresses_pick_scheme_and_port() {
        assert_eq!(
            endpoint(&target("bmc-1.example", None)).unwrap(),
            ("https", "bmc-1.example".into(), 443)
        );
        assert_eq!(
            endpoint(&target("http://127.0.0.1", Some(8000))).unwrap(),
            ("http", "127.0.0.1".into(), 8000)
        );
        assert_eq!(
            endpoint(&target("https://fe80::1", None)).unwrap(),
            ("https", "[fe80::1]".into(), 443)
        );
        // A port in the URL, unless bmc.port says otherwise (validation
        // refuses the two disagreeing).
        assert_eq!(
            endpoint(&target("http://127.0.0.1:8000/", None)).unwrap(),
            ("http", "127.0.0.1".into(), 8000)
        );
        assert_eq!(
            endpoint(&target("https://[fe80::1]:8443", None)).unwrap(),
            ("https", "[fe80::1]".into(), 8443)
        );
        assert_eq!(
            RedfishDriver::lock_key(&target("http://bmc-1.example:8000", None)).unwrap(),
            "bmc-1.example:8000"
        );
        assert_eq!(
            RedfishDriver::lock_key(&target("https://BMC-1.example", None)).unwrap(),
            "bmc-1.example:443"
        );
    }

    #[test]
    fn error_messages_come_from_extended_info() {
        let a = Answer {
            status: StatusCode::BAD_REQUEST,
            headers: Default::default(),
            body: json!({"error": {"code": "Base.1.8.GeneralError", "message": "see ExtendedInfo",
                "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.PropertyValueNotInList",
                    "Message": "The value 'Floppy' for the property BootSourceOverrideTarget is not in the list of acceptable values."}]}}),
        };
        assert!(a.message().starts_with("The value 'Floppy'"));
        let plain = Answer {
            status: StatusCode::NOT_FOUND,
            headers: Default::default(),
            body: Value::Null,
        };
        assert_eq!(plain.message(), "Not Found");
    }

    #[test]
    fn lenient_reading_of_volumes_and_power() {
        let v = json!({"@odata.id": "/redfish/v1/Systems/1/Storage/RAID/Volumes/7", "Name": "os",
            "RAIDType": "RAID1", "CapacityBytes": 10u64, "Links": {"Drives": [
                {"@odata.id": "/redfish/v1/Systems/1/Storage/RAID/Drives/d0"}, {"@odata.id": "/redfish/v1/Systems/1/Storage/RAID/Drives/d1"}]}});
        let r = volume_of(&v, &json!({"Id": "RAID"}));
        assert_eq!(r.id, "7");
        assert_eq!(r.drives, ["d0", "d1"]);
        assert_eq!(r.storage, "RAID");
        assert_eq!(
            power_of(&json!({"PowerState": "PoweringOn"})),
            PowerState::On
        );
        assert_eq!(
            power_of(&json!({"PowerState": "Sleeping"})),
            PowerState::Unknown
        );
    }
}
