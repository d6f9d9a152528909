//! A Redfish service for tests and benchmarks, following the DMTF schema for
//! the resources racklift uses (sushy-tools' emulator has no BIOS and no
//! volume creation):
//!
//! - `ServiceRoot` (`/redfish/v1/`) with `Systems`, `SessionService` and
//!   `Links.Sessions`;
//! - `SessionService/Sessions`: `POST` makes a session (`201`, `X-Auth-Token`,
//!   `Location`), `DELETE` ends it; HTTP basic authentication also works;
//! - one `ComputerSystem` (`/redfish/v1/Systems/1`) with `PowerState`, `Boot`
//!   (override target, enabled, mode, with `@Redfish.AllowableValues`),
//!   `@odata.etag` (and an `ETag` header; `PATCH` with a stale `If-Match`
//!   gets `412`) and `Actions/#ComputerSystem.Reset`;
//! - `Bios` with `Attributes` and `@Redfish.Settings` naming the settings
//!   object `Bios/Settings` (`SupportedApplyTimes: ["OnReset"]`); settings
//!   patched there stay pending until the system is powered on or restarted;
//! - `EthernetInterfaces` with MAC addresses;
//! - `Storage/RAID` with four `Drives` and a `Volumes` collection: `POST`
//!   answers `202 Accepted` with a task monitor `Location` that answers `202`
//!   twice, then `201` with the new volume; a volume's `DELETE` answers `204`
//!   (or `404` with `volume_gone_on_delete`).
//!
//! Errors carry `error.@Message.ExtendedInfo` as the Base registry writes
//! them. Options: no session service (basic authentication only), HTTPS with
//! a given certificate, and `503 Service Unavailable` with `Retry-After` for
//! every third request.
#![allow(dead_code)]

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub const USER: &str = "root";
pub const PASSWORD: &str = "calvin";
const SYSTEM: &str = "/redfish/v1/Systems/1";
const STORAGE: &str = "/redfish/v1/Systems/1/Storage/RAID";

/// How the service behaves.
#[derive(Clone, Default)]
pub struct Options {
    /// Offer no session service: basic authentication only.
    pub no_sessions: bool,
    /// Serve HTTPS with this certificate and key (PEM).
    pub tls: Option<(String, String)>,
    /// Answer every third request with 503 and `Retry-After: 1`.
    pub flaky: bool,
    /// Start powered on.
    pub powered: bool,
}

/// The machine behind the service, and what was asked of it.
#[derive(Debug)]
pub struct Machine {
    pub power: String,
    pub boot_target: String,
    pub boot_enabled: String,
    pub boot_mode: String,
    pub bios: Map<String, Value>,
    pub bios_pending: Map<String, Value>,
    /// The apply time asked for with the last settings.
    pub bios_apply_time: Option<String>,
    pub volumes: BTreeMap<u32, Value>,
    next_volume: u32,
    /// Task monitors: polls left before done, and the volume to create.
    tasks: BTreeMap<u32, (u32, Value)>,
    next_task: u32,
    etag: u64,
    sessions: HashSet<String>,
    pub sessions_made: u64,
    /// `METHOD path` of every request, in order (`If-Match` noted on PATCH).
    pub log: Vec<String>,
    requests: u64,
    /// Requests answered 503 on purpose.
    pub unavailable: u64,
    /// How many of the next `PATCH`es with `If-Match` get 412 (as if the
    /// resource had changed meanwhile).
    pub etag_conflicts: u32,
    in_flight: u32,
    /// The most requests that were being answered at once.
    pub max_in_flight: u32,
    /// The `ResetType` of every reset, in order.
    pub resets: Vec<String>,
    /// Accept resets but leave the power as it is (a machine that never
    /// turns on).
    pub hold_power: bool,
    /// A volume's `DELETE` removes it and answers `404`, as if it had been
    /// deleted by someone else since it was listed.
    pub volume_gone_on_delete: bool,
}

impl Machine {
    fn new(o: &Options) -> Machine {
        let bios = json!({
            "BootMode": "Uefi",
            "ProcVirtualization": "Disabled",
            "SriovGlobalEnable": "Disabled",
            "LogicalProc": "Enabled",
        });
        Machine {
            power: if o.powered { "On" } else { "Off" }.into(),
            boot_target: "None".into(),
            boot_enabled: "Disabled".into(),
            boot_mode: "UEFI".into(),
            bios: bios.as_object().cloned().unwrap_or_default(),
            bios_pending: Map::new(),
            bios_apply_time: None,
            volumes: BTreeMap::new(),
            next_volume: 0,
            tasks: BTreeMap::new(),
            next_task: 0,
            etag: 1,
            sessions: HashSet::new(),
            sessions_made: 0,
            log: Vec::new(),
            requests: 0,
            unavailable: 0,
            etag_conflicts: 0,
            in_flight: 0,
            max_in_flight: 0,
            resets: Vec::new(),
            hold_power: false,
            volume_gone_on_delete: false,
        }
    }

    /// Power on or restart: the machine boots, pending BIOS settings apply,
    /// a one-time boot override is used up.
    fn boot(&mut self) {
        self.power = "On".into();
        let pending = std::mem::take(&mut self.bios_pending);
        self.bios.extend(pending);
        if self.boot_enabled == "Once" {
            self.boot_enabled = "Disabled".into();
        }
        self.etag += 1;
    }

    /// Sessions still open.
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }
}

#[derive(Clone)]
struct Shared {
    m: Arc<Mutex<Machine>>,
    opts: Options,
}

/// A running service.
pub struct RedfishServer {
    pub addr: SocketAddr,
    machine: Arc<Mutex<Machine>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RedfishServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedfishServer {
    /// Starts a service on a free port of 127.0.0.1.
    pub async fn start(opts: Options) -> RedfishServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener, opts)
    }

    /// Serves on `listener`.
    pub fn serve(listener: tokio::net::TcpListener, opts: Options) -> RedfishServer {
        let addr = listener.local_addr().expect("addr");
        let machine = Arc::new(Mutex::new(Machine::new(&opts)));
        let app = router(Shared {
            m: machine.clone(),
            opts: opts.clone(),
        });
        let task = match opts.tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            Some((cert, key)) => {
                let acceptor = tls_acceptor(&cert, &key);
                tokio::spawn(async move {
                    let _ = axum::serve(TlsListener { listener, acceptor }, app).await;
                })
            }
        };
        RedfishServer {
            addr,
            machine,
            task,
        }
    }

    /// The address as a racklift node writes it.
    pub fn address(&self, tls: bool) -> String {
        format!("{}://127.0.0.1", if tls { "https" } else { "http" })
    }

    pub fn machine(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().unwrap()
    }
}

fn router(s: Shared) -> Router {
    Router::new()
        .route("/redfish/v1/", get(service_root))
        .route("/redfish/v1", get(service_root))
        .route("/redfish/v1/SessionService", get(session_service))
        .route(
            "/redfish/v1/SessionService/Sessions",
            post(new_session).get(sessions),
        )
        .route(
            "/redfish/v1/SessionService/Sessions/{id}",
            axum::routing::delete(end_session),
        )
        .route("/redfish/v1/Systems", get(systems))
        .route("/redfish/v1/Systems/1", get(system).patch(patch_system))
        .route(
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .route("/redfish/v1/Systems/1/Bios", get(bios))
        .route(
            "/redfish/v1/Systems/1/Bios/Settings",
            get(bios_settings).patch(patch_bios_settings),
        )
        .route("/redfish/v1/Systems/1/EthernetInterfaces", get(nics))
        .route("/redfish/v1/Systems/1/EthernetInterfaces/{id}", get(nic))
        .route("/redfish/v1/Systems/1/Storage", get(storages))
        .route("/redfish/v1/Systems/1/Storage/RAID", get(storage))
        .route("/redfish/v1/Systems/1/Storage/RAID/Drives/{id}", get(drive))
        .route(
            "/redfish/v1/Systems/1/Storage/RAID/Volumes",
            get(volumes).post(new_volume),
        )
        .route(
            "/redfish/v1/Systems/1/Storage/RAID/Volumes/{id}",
            get(volume).delete(delete_volume),
        )
        .route(
            "/redfish/v1/TaskService/TaskMonitors/{id}",
            get(task_monitor),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "Base.1.8.ResourceMissingAtURI",
                "The resource at the URI was not found.",
            )
        })
        .layer(middleware::from_fn_with_state(s.clone(), gate))
        .with_state(s)
}

/// A Redfish error body (Base message registry).
fn error(status: StatusCode, id: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "code": "Base.1.8.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information.",
            "@Message.ExtendedInfo": [{
                "@odata.type": "#Message.v1_1_1.Message",
                "MessageId": id,
                "Message": message,
                "Severity": "Warning",
                "Resolution": "See the message.",
            }]
        }})),
    )
        .into_response()
}

/// Logs, fails every third request when flaky, and checks credentials.
async fn gate(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    {
        let mut m = s.m.lock().unwrap();
        m.requests += 1;
        let if_match = req
            .headers()
            .get(header::IF_MATCH)
            .map(|v| format!(" If-Match {}", v.to_str().unwrap_or("?")))
            .unwrap_or_default();
        m.log.push(format!("{method} {path}{if_match}"));
        if s.opts.flaky && m.requests % 3 == 0 {
            m.unavailable += 1;
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Base.1.8.ServiceTemporarilyUnavailable",
                "The service is temporarily unavailable. Retry in 1 seconds.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, "1".parse().unwrap());
            return r;
        }
    }
    let open = path.trim_end_matches('/') == "/redfish/v1"
        || (path == "/redfish/v1/SessionService/Sessions" && method == axum::http::Method::POST);
    if !open && !authorised(&s, req.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Base.1.8.NoValidSession",
            "There is no valid session established with the implementation.",
        );
    }
    {
        let mut m = s.m.lock().unwrap();
        m.in_flight += 1;
        m.max_in_flight = m.max_in_flight.max(m.in_flight);
    }
    // Answer a little later, so that overlapping requests would be seen.
    tokio::task::yield_now().await;
    let resp = next.run(req).await;
    s.m.lock().unwrap().in_flight -= 1;
    resp
}

fn authorised(s: &Shared, h: &HeaderMap) -> bool {
    if let Some(t) = h.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        return s.m.lock().unwrap().sessions.contains(t);
    }
    let Some(basic) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|up| up == format!("{USER}:{PASSWORD}"))
}

fn link(p: &str) -> Value {
    json!({ "@odata.id": p })
}

fn collection(kind: &str, id: &str, members: Vec<String>) -> Value {
    json!({
        "@odata.type": format!("#{kind}.{kind}"),
        "@odata.id": id,
        "Name": format!("{kind}"),
        "Members@odata.count": members.len(),
        "Members": members.iter().map(|m| link(m)).collect::<Vec<_>>(),
    })
}

async fn service_root(State(s): State<Shared>) -> Response {
    let mut root = json!({
        "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
        "@odata.id": "/redfish/v1/",
        "Id": "RootService",
        "Name": "Root Service",
        "RedfishVersion": "1.15.0",
        "UUID": "92384634-2938-2342-8820-489239905423",
        "Systems": link("/redfish/v1/Systems"),
        "Links": {},
    });
    if !s.opts.no_sessions {
        root["SessionService"] = link("/redfish/v1/SessionService");
        root["Links"]["Sessions"] = link("/redfish/v1/SessionService/Sessions");
    }
    axum::Json(root).into_response()
}

async fn session_service() -> Response {
    axum::Json(json!({
        "@odata.type": "#SessionService.v1_1_8.SessionService",
        "@odata.id": "/redfish/v1/SessionService",
        "Id": "SessionService",
        "Name": "Session Service",
        "ServiceEnabled": true,
        "SessionTimeout": 600,
        "Sessions": link("/redfish/v1/SessionService/Sessions"),
    }))
    .into_response()
}

async fn sessions(State(s): State<Shared>) -> Response {
    let m = s.m.lock().unwrap();
    let ids = m
        .sessions
        .iter()
        .map(|t| format!("/redfish/v1/SessionService/Sessions/{}", &t[..8]))
        .collect();
    axum::Json(collection(
        "SessionCollection",
        "/redfish/v1/SessionService/Sessions",
        ids,
    ))
    .into_response()
}

async fn new_session(State(s): State<Shared>, body: axum::Json<Value>) -> Response {
    if s.opts.no_sessions {
        return error(
            StatusCode::NOT_FOUND,
            "Base.1.8.ResourceMissingAtURI",
            "No sessions here.",
        );
    }
    if body["UserName"] != USER || body["Password"] != PASSWORD {
        return error(
            StatusCode::UNAUTHORIZED,
            "Base.1.8.ResourceAtUriUnauthorized",
            "While accessing the resource at /redfish/v1/SessionService/Sessions, the service received an authorization error.",
        );
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let id = token[..8].to_string();
    let location = format!("/redfish/v1/SessionService/Sessions/{id}");
    {
        let mut m = s.m.lock().unwrap();
        m.sessions.insert(token.clone());
        m.sessions_made += 1;
    }
    (
        StatusCode::CREATED,
        [
            ("x-auth-token", token),
            (header::LOCATION.as_str(), location.clone()),
        ],
        axum::Json(json!({
            "@odata.type": "#Session.v1_6_0.Session",
            "@odata.id": location,
            "Id": id,
            "Name": "User Session",
            "UserName": USER,
        })),
    )
        .into_response()
}

async fn end_session(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let mut m = s.m.lock().unwrap();
    let before = m.sessions.len();
    m.sessions.retain(|t| !t.starts_with(&id));
    if m.sessions.len() == before {
        return error(
            StatusCode::NOT_FOUND,
            "Base.1.8.ResourceMissingAtURI",
            "No such session.",
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn systems() -> Response {
    axum::Json(collection(
        "ComputerSystemCollection",
        "/redfish/v1/Systems",
        vec![SYSTEM.into()],
    ))
    .into_response()
}

fn etag(m: &Machine) -> String {
    format!("W/\"{}\"", m.etag)
}

async fn system(State(s): State<Shared>) -> Response {
    let m = s.m.lock().unwrap();
    let tag = etag(&m);
    let body = json!({
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "@odata.id": SYSTEM,
        "@odata.etag": tag,
        "Id": "1",
        "Name": "System",
        "SystemType": "Physical",
        "Manufacturer": "Contoso",
        "Model": "3500",
        "SerialNumber": "437XR1138R2",
        "UUID": "38947555-7742-3448-3784-823347823834",
        "BiosVersion": "P79 v1.45 (12/06/2017)",
        "PowerState": m.power,
        "Status": {"State": "Enabled", "Health": "OK"},
        "ProcessorSummary": {"Count": 2, "Model": "Multi-Core Intel(R) Xeon(R) processor 7xxx Series"},
        "MemorySummary": {"TotalSystemMemoryGiB": 96.0},
        "Boot": {
            "BootSourceOverrideEnabled": m.boot_enabled,
            "BootSourceOverrideTarget": m.boot_target,
            "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Cd", "Hdd", "UefiHttp", "BiosSetup"],
            "BootSourceOverrideMode": m.boot_mode,
        },
        "Bios": link("/redfish/v1/Systems/1/Bios"),
        "EthernetInterfaces": link("/redfish/v1/Systems/1/EthernetInterfaces"),
        "Storage": link("/redfish/v1/Systems/1/Storage"),
        "Actions": {"#ComputerSystem.Reset": {
            "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi"],
        }},
    });
    ([(header::ETAG, tag)], axum::Json(body)).into_response()
}

/// Checks `If-Match` against the current ETag: `Some(412)` when stale.
fn stale(m: &mut Machine, h: &HeaderMap) -> Option<Response> {
    let given = h.get(header::IF_MATCH)?.to_str().ok()?;
    let conflict = m.etag_conflicts > 0;
    if conflict {
        m.etag_conflicts -= 1;
        m.etag += 1;
    }
    (conflict || (given != etag(m) && given != "*")).then(|| {
        error(
            StatusCode::PRECONDITION_FAILED,
            "Base.1.8.PreconditionFailed",
            "The ETag supplied did not match the ETag required to change this resource.",
        )
    })
}

async fn patch_system(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let mut m = s.m.lock().unwrap();
    if let Some(r) = stale(&mut m, &headers) {
        return r;
    }
    let b = &body["Boot"];
    if let Some(t) = b["BootSourceOverrideTarget"].as_str() {
        if !["None", "Pxe", "Cd", "Hdd", "UefiHttp", "BiosSetup"].contains(&t) {
            return error(
                StatusCode::BAD_REQUEST,
                "Base.1.8.PropertyValueNotInList",
                &format!(
                    "The value '{t}' for the property BootSourceOverrideTarget is not in the list of acceptable values."
                ),
            );
        }
        m.boot_target = t.into();
    }
    if let Some(e) = b["BootSourceOverrideEnabled"].as_str() {
        m.boot_enabled = e.into();
    }
    if let Some(mode) = b["BootSourceOverrideMode"].as_str() {
        m.boot_mode = mode.into();
    }
    m.etag += 1;
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(s): State<Shared>, body: axum::Json<Value>) -> Response {
    let mut m = s.m.lock().unwrap();
    let kind = body["ResetType"].as_str().unwrap_or_default();
    m.resets.push(kind.to_string());
    if m.hold_power {
        return StatusCode::NO_CONTENT.into_response();
    }
    match kind {
        "On" | "ForceOn" if m.power == "Off" => m.boot(),
        "On" | "ForceOn" => {}
        "ForceOff" | "GracefulShutdown" => {
            m.power = "Off".into();
            m.etag += 1;
        }
        "ForceRestart" | "GracefulRestart" if m.power == "On" => m.boot(),
        "ForceRestart" | "GracefulRestart" => {
            return error(
                StatusCode::CONFLICT,
                "Base.1.8.ActionNotSupported",
                "The system is off: it cannot be restarted.",
            );
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "Base.1.8.ActionParameterValueNotInList",
                &format!(
                    "The value '{other}' for the parameter ResetType in the action ComputerSystem.Reset is not in the list of acceptable values."
                ),
            );
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn bios(State(s): State<Shared>) -> Response {
    let m = s.m.lock().unwrap();
    axum::Json(json!({
        "@odata.type": "#Bios.v1_2_0.Bios",
        "@odata.id": "/redfish/v1/Systems/1/Bios",
        "Id": "Bios",
        "Name": "BIOS Configuration Current Settings",
        "AttributeRegistry": "BiosAttributeRegistryP89.v1_0_0",
        "Attributes": m.bios,
        "@Redfish.Settings": {
            "@odata.type": "#Settings.v1_3_5.Settings",
            "SettingsObject": link("/redfish/v1/Systems/1/Bios/Settings"),
            "SupportedApplyTimes": ["OnReset"],
        },
    }))
    .into_response()
}

async fn bios_settings(State(s): State<Shared>) -> Response {
    let m = s.m.lock().unwrap();
    let tag = format!("W/\"bios-{}\"", m.etag);
    axum::Json(json!({
        "@odata.type": "#Bios.v1_2_0.Bios",
        "@odata.id": "/redfish/v1/Systems/1/Bios/Settings",
        "@odata.etag": tag,
        "Id": "Settings",
        "Name": "BIOS Configuration Pending Settings",
        "AttributeRegistry": "BiosAttributeRegistryP89.v1_0_0",
        "Attributes": m.bios_pending,
    }))
    .into_response()
}

async fn patch_bios_settings(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let mut m = s.m.lock().unwrap();
    if let Some(given) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && given != format!("W/\"bios-{}\"", m.etag)
    {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "Base.1.8.PreconditionFailed",
            "The ETag supplied did not match the ETag required to change this resource.",
        );
    }
    let Some(attrs) = body["Attributes"].as_object() else {
        return error(
            StatusCode::BAD_REQUEST,
            "Base.1.8.PropertyMissing",
            "The property Attributes is a required property and must be included in the request.",
        );
    };
    if let Some(k) = attrs.keys().find(|k| !m.bios.contains_key(*k)) {
        return error(
            StatusCode::BAD_REQUEST,
            "Base.1.8.PropertyUnknown",
            &format!("The property {k} is not in the list of valid properties for the resource."),
        );
    }
    m.bios_apply_time = body["@Redfish.SettingsApplyTime"]["ApplyTime"]
        .as_str()
        .map(str::to_string);
    for (k, v) in attrs {
        m.bios_pending.insert(k.clone(), v.clone());
    }
    m.etag += 1;
    StatusCode::NO_CONTENT.into_response()
}

const MACS: [&str; 2] = ["52:54:00:aa:00:01", "52:54:00:aa:00:02"];

async fn nics() -> Response {
    axum::Json(collection(
        "EthernetInterfaceCollection",
        "/redfish/v1/Systems/1/EthernetInterfaces",
        (1..=MACS.len())
            .map(|i| format!("/redfish/v1/Systems/1/EthernetInterfaces/{i}"))
            .collect(),
    ))
    .into_response()
}

async fn nic(Path(id): Path<usize>) -> Response {
    let Some(mac) = id.checked_sub(1).and_then(|i| MACS.get(i)) else {
        return error(
            StatusCode::NOT_FOUND,
            "Base.1.8.ResourceMissingAtURI",
            "No such interface.",
        );
    };
    axum::Json(json!({
        "@odata.type": "#EthernetInterface.v1_9_0.EthernetInterface",
        "@odata.id": format!("/redfish/v1/Systems/1/EthernetInterfaces/{id}"),
        "Id": id.to_string(),
        "Name": "Ethernet Interface",
        "MACAddress": mac.to_uppercase(),
        "SpeedMbps": 10000,
        "LinkStatus": "LinkUp",
    }))
    .into_response()
}

const DRIVES: [&str; 4] = ["Disk.0", "Disk.1", "Disk.2", "Disk.3"];
const DRIVE_BYTES: u64 = 899_527_000_000;

async fn storages() -> Response {
    axum::Json(collection(
        "StorageCollection",
        "/redfish/v1/Systems/1/Storage",
        vec![STORAGE.into()],
    ))
    .into_response()
}

async fn storage() -> Response {
    axum::Json(json!({
        "@odata.type": "#Storage.v1_15_0.Storage",
        "@odata.id": STORAGE,
        "Id": "RAID",
        "Name": "RAID Controller",
        "StorageControllers": [{"MemberId": "0", "Name": "RAID Controller", "SupportedRAIDTypes": ["RAID0", "RAID1", "RAID5", "RAID10"]}],
        "Drives": DRIVES.iter().map(|d| link(&format!("{STORAGE}/Drives/{d}"))).collect::<Vec<_>>(),
        "Volumes": link(&format!("{STORAGE}/Volumes")),
    }))
    .into_response()
}

async fn drive(Path(id): Path<String>) -> Response {
    if !DRIVES.contains(&id.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            "Base.1.8.ResourceMissingAtURI",
            "No such drive.",
        );
    }
    axum::Json(json!({
        "@odata.type": "#Drive.v1_17_0.Drive",
        "@odata.id": format!("{STORAGE}/Drives/{id}"),
        "Id": id,
        "Name": format!("Physical Disk {}", &id[5..]),
        "Model": "ST9146802SS",
        "SerialNumber": format!("72D0A037FRD{}", &id[5..]),
        "CapacityBytes": DRIVE_BYTES,
        "MediaType": "HDD",
        "Protocol": "SAS",
    }))
    .into_response()
}

async fn volumes(State(s): State<Shared>) -> Response {
    let m = s.m.lock().unwrap();
    axum::Json(collection(
        "VolumeCollection",
        &format!("{STORAGE}/Volumes"),
        m.volumes
            .keys()
            .map(|k| format!("{STORAGE}/Volumes/{k}"))
            .collect(),
    ))
    .into_response()
}

async fn new_volume(State(s): State<Shared>, body: axum::Json<Value>) -> Response {
    let mut m = s.m.lock().unwrap();
    let level = body["RAIDType"].as_str().unwrap_or_default().to_string();
    if !["RAID0", "RAID1", "RAID5", "RAID10"].contains(&level.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "Base.1.8.PropertyValueNotInList",
            &format!(
                "The value '{level}' for the property RAIDType is not in the list of acceptable values."
            ),
        );
    }
    let drives: Vec<String> = body["Links"]["Drives"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["@odata.id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for d in &drives {
        let id = d.rsplit('/').next().unwrap_or_default();
        let used = m.volumes.values().any(|v| {
            v["Links"]["Drives"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["@odata.id"] == d.as_str()))
        });
        if !DRIVES.contains(&id) || used {
            return error(
                StatusCode::BAD_REQUEST,
                "Base.1.8.ResourceInUse",
                &format!(
                    "The change to the requested resource failed because the resource {d} is in use or missing."
                ),
            );
        }
    }
    let min = if level == "RAID10" {
        4
    } else if level == "RAID1" {
        2
    } else {
        1
    };
    if drives.len() < min {
        return error(
            StatusCode::BAD_REQUEST,
            "Base.1.8.ActionParameterValueError",
            &format!("{level} needs at least {min} drives."),
        );
    }
    m.next_volume += 1;
    let id = m.next_volume;
    let members = drives.len() as u64;
    let capacity = body["CapacityBytes"]
        .as_u64()
        .unwrap_or(match level.as_str() {
            "RAID1" => DRIVE_BYTES,
            "RAID10" => DRIVE_BYTES * members / 2,
            "RAID5" => DRIVE_BYTES * (members - 1),
            _ => DRIVE_BYTES * members,
        });
    let volume = json!({
        "@odata.type": "#Volume.v1_9_0.Volume",
        "@odata.id": format!("{STORAGE}/Volumes/{id}"),
        "Id": id.to_string(),
        "Name": body["Name"].as_str().unwrap_or(&format!("Virtual Disk {id}")),
        "RAIDType": level,
        "CapacityBytes": capacity,
        "Status": {"State": "Enabled", "Health": "OK"},
        "Links": {"Drives": drives.iter().map(|d| link(d)).collect::<Vec<_>>()},
    });
    m.next_task += 1;
    let task = m.next_task;
    m.tasks.insert(task, (2, volume));
    let monitor = format!("/redfish/v1/TaskService/TaskMonitors/{task}");
    (
        StatusCode::ACCEPTED,
        [
            (header::LOCATION, monitor.clone()),
            (header::RETRY_AFTER, "0".into()),
        ],
        axum::Json(task_body(task, "Running")),
    )
        .into_response()
}

fn task_body(id: u32, state: &str) -> Value {
    json!({
        "@odata.type": "#Task.v1_7_0.Task",
        "@odata.id": format!("/redfish/v1/TaskService/Tasks/{id}"),
        "Id": id.to_string(),
        "Name": "Volume creation",
        "TaskState": state,
        "TaskStatus": "OK",
        "TaskMonitor": format!("/redfish/v1/TaskService/TaskMonitors/{id}"),
    })
}

async fn task_monitor(State(s): State<Shared>, Path(id): Path<u32>) -> Response {
    let mut m = s.m.lock().unwrap();
    let Some((left, volume)) = m.tasks.get(&id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "Base.1.8.ResourceMissingAtURI",
            "No such task.",
        );
    };
    if left > 0 {
        m.tasks.insert(id, (left - 1, volume));
        return (StatusCode::ACCEPTED, axum::Json(task_body(id, "Running"))).into_response();
    }
    m.tasks.remove(&id);
    let vid: u32 = volume["Id"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    m.volumes.insert(vid, volume.clone());
    let location = volume["@odata.id"].as_str().unwrap_or_default().to_string();
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(volume),
    )
        .into_response()
}

async fn volume(State(s): State<Shared>, Path(id): Path<u32>) -> Response {
    let m = s.m.lock().unwrap();
    match m.volumes.get(&id) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "Base.1.8.ResourceMissingAtURI",
            "No such volume.",
        ),
    }
}

async fn delete_volume(State(s): State<Shared>, Path(id): Path<u32>) -> Response {
    let mut m = s.m.lock().unwrap();
    match m.volumes.remove(&id) {
        Some(_) if m.volume_gone_on_delete => error(
            StatusCode::NOT_FOUND,
            "Base.1.8.ResourceMissingAtURI",
            "No such volume.",
        ),
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "Base.1.8.ResourceMissingAtURI",
            "No such volume.",
        ),
    }
}

// --- TLS ---------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate, key), PEM.
pub fn self_signed() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    (c.cert.pem(), c.key_pair.serialize_pem())
}

fn tls_acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TCP listener that completes a TLS handshake before handing a connection
/// to axum (a failed handshake is dropped).
struct TlsListener {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.listener.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
