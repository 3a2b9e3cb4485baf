//! The FFI shell: mosquitto's plugin API v5 (mosquitto 2.0). It gathers each event's inputs,
//! asks `decide`, logs the answer and hands it back. The broker functions are declared by hand
//! and resolve from the broker when it loads the plugin; OpenSSL's from the system libcrypto
//! the broker also uses.
//!
//! Every callback runs inside `catch_unwind`: a panic escaping into the broker would abort it.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_long, c_ulong, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use zeroize::Zeroize;

use crate::certs::Certs;
use crate::control::Command;
use crate::decide::{self, Access, Session};
use crate::registry::{Status, Watched};
use crate::service::{Out, Request, Service};

const EVT_ACL_CHECK: c_int = 2;
const EVT_BASIC_AUTH: c_int = 3;
const EVT_MESSAGE: c_int = 7;
const EVT_TICK: c_int = 9;
const EVT_DISCONNECT: c_int = 10;

const ERR_SUCCESS: c_int = 0;
const ERR_INVAL: c_int = 3;
const ERR_AUTH: c_int = 11;
const ERR_ACL_DENIED: c_int = 12;

const LOG_INFO: c_int = 1 << 0;
const LOG_NOTICE: c_int = 1 << 1;
const LOG_WARNING: c_int = 1 << 2;
const LOG_ERR: c_int = 1 << 3;

const ACL_READ: c_int = 0x01;
const ACL_WRITE: c_int = 0x02;
const ACL_SUBSCRIBE: c_int = 0x04;

/// How often the registry file is looked at between connections.
const REGISTRY_LOOK_EVERY: Duration = Duration::from_millis(200);

#[repr(C)]
pub struct MosquittoOpt {
    key: *const c_char,
    value: *const c_char,
}

#[repr(C)]
struct EvtBasicAuth {
    future: *mut c_void,
    client: *mut c_void,
    username: *const c_char,
    password: *const c_char,
    future2: [*mut c_void; 4],
}

#[repr(C)]
struct EvtAclCheck {
    future: *mut c_void,
    client: *mut c_void,
    topic: *const c_char,
    payload: *const c_void,
    properties: *mut c_void,
    access: c_int,
    payloadlen: u32,
    qos: u8,
    retain: bool,
    future2: [*mut c_void; 4],
}

#[repr(C)]
struct EvtMessage {
    future: *mut c_void,
    client: *mut c_void,
    topic: *mut c_char,
    payload: *mut c_void,
    properties: *mut c_void,
    reason_string: *mut c_char,
    payloadlen: u32,
    qos: u8,
    reason_code: u8,
    retain: bool,
    future2: [*mut c_void; 4],
}

#[repr(C)]
struct EvtTick {
    future: *mut c_void,
    now_ns: c_long,
    next_ns: c_long,
    now_s: libc::time_t,
    next_s: libc::time_t,
    future2: [*mut c_void; 4],
}

#[repr(C)]
struct EvtDisconnect {
    future: *mut c_void,
    client: *mut c_void,
    reason: c_int,
    future2: [*mut c_void; 4],
}

// The layouts of mosquitto 2.0's event structs (mosquitto_broker.h).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<EvtBasicAuth>() == 64);
    assert!(std::mem::size_of::<EvtAclCheck>() == 88);
    assert!(std::mem::size_of::<EvtMessage>() == 88);
    assert!(std::mem::size_of::<EvtTick>() == 72);
    assert!(std::mem::size_of::<EvtDisconnect>() == 56);
};
#[cfg(target_pointer_width = "32")]
const _: () = {
    assert!(std::mem::size_of::<EvtBasicAuth>() == 32);
    assert!(std::mem::size_of::<EvtAclCheck>() == 48);
    assert!(std::mem::size_of::<EvtMessage>() == 48);
    assert!(std::mem::size_of::<EvtDisconnect>() == 28);
};

type Callback = extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

extern "C" {
    fn mosquitto_callback_register(
        id: *mut c_void,
        event: c_int,
        cb: Callback,
        event_data: *const c_void,
        userdata: *mut c_void,
    ) -> c_int;
    fn mosquitto_callback_unregister(
        id: *mut c_void,
        event: c_int,
        cb: Callback,
        event_data: *const c_void,
    ) -> c_int;
    fn mosquitto_client_id(client: *const c_void) -> *const c_char;
    fn mosquitto_client_address(client: *const c_void) -> *const c_char;
    fn mosquitto_client_certificate(client: *const c_void) -> *mut c_void;
    fn mosquitto_client_clean_session(client: *const c_void) -> bool;
    fn mosquitto_kick_client_by_clientid(client_id: *const c_char, with_will: bool) -> c_int;
    fn mosquitto_log_printf(level: c_int, fmt: *const c_char, ...);
    fn mosquitto_broker_publish_copy(
        client_id: *const c_char,
        topic: *const c_char,
        payloadlen: c_int,
        payload: *const c_void,
        qos: c_int,
        retain: bool,
        properties: *mut c_void,
    ) -> c_int;
}

#[link(name = "crypto")]
extern "C" {
    fn i2d_X509(x: *mut c_void, out: *mut *mut u8) -> c_int;
    fn X509_free(x: *mut c_void);
    fn d2i_X509(x: *mut *mut c_void, input: *mut *const u8, len: c_long) -> *mut c_void;
    fn X509_subject_name_hash(x: *mut c_void) -> c_ulong;
}

/// OpenSSL's subject-name hash of a DER certificate (the name of its file in a hashed folder).
fn subject_hash(der: &[u8]) -> Option<u32> {
    let mut input = der.as_ptr();
    // SAFETY: `input` points to `der.len()` bytes; d2i_X509 reads at most that many and
    // returns a new X509 or NULL; the X509 is freed once.
    unsafe {
        let x = d2i_X509(std::ptr::null_mut(), &mut input, der.len() as c_long);
        if x.is_null() {
            return None;
        }
        let hash = X509_subject_name_hash(x);
        X509_free(x);
        Some(hash as u32)
    }
}

/// A client that got in, and the broker's pointer for it (a takeover by the same client id
/// reports the old client's disconnect late).
struct Connected {
    session: Session,
    client: usize,
    /// A DPS client's api-version.
    dps_api: Option<String>,
}

struct State {
    registry: Watched,
    connected: HashMap<String, Connected>,
    last_look: Instant,
    /// The X.509 listener's hashed trust folder (`capath`), kept by the plugin.
    trust_dir: Option<PathBuf>,
    /// Extra certificates to trust at the TLS layer (self-signed device certificates).
    trusted: Option<PathBuf>,
    /// The `trusted` folder's modification time when the trust folder was last written.
    trusted_seen: Option<SystemTime>,
    /// Twins, C2D queues and method calls.
    service: Service<Sender<Value>>,
    /// Requests from the control channel, carried out on the broker's thread.
    commands: Option<Receiver<Command>>,
    /// `tether hub watch` clients: the device they follow (all when None).
    watchers: Vec<(Option<String>, Sender<Value>)>,
    /// Clients to disconnect on the next tick, and why (a refused publish).
    kicks: Vec<(String, String)>,
    /// Per client id: when its current session began (None: not connected) and its last
    /// activity (connect or accepted publish), Unix seconds; for the `devices` request.
    activity: HashMap<String, (Option<u64>, u64)>,
    /// DPS registrations and certificate issuance (`tether hub --dps-port`).
    certs: Certs,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
static PLUGIN_ID: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn log(level: c_int, message: &str) {
    let text = CString::new(format!("tether-hub: {}", message.replace('\0', "?")))
        .expect("NULs were replaced");
    // SAFETY: a constant format with one %s and a NUL-terminated argument.
    unsafe { mosquitto_log_printf(level, c"%s".as_ptr(), text.as_ptr()) }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string that lives for `'a`.
unsafe fn text<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        None
    } else {
        // SAFETY: the caller's contract.
        Some(unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("\u{FFFD}"))
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs a callback body; a panic is logged and answered with `fallback`.
fn guard(fallback: c_int, body: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        log(LOG_ERR, "internal error (panic) in a callback; refusing");
        fallback
    })
}

/// Publishes to exactly one client (queued by the broker, sent from its loop).
fn publish_to(client: &str, topic: &str, payload: &[u8], qos: c_int) {
    let (Ok(c), Ok(t)) = (CString::new(client), CString::new(topic)) else {
        return;
    };
    // SAFETY: NUL-terminated strings and `payload.len()` readable bytes, copied by the
    // broker; no properties.
    let rc = unsafe {
        mosquitto_broker_publish_copy(
            c.as_ptr(),
            t.as_ptr(),
            payload.len() as c_int,
            payload.as_ptr() as *const c_void,
            qos,
            false,
            std::ptr::null_mut(),
        )
    };
    if rc != ERR_SUCCESS {
        log(
            LOG_WARNING,
            &format!("cannot publish to \"{client}\" on \"{topic}\" ({rc})"),
        );
    }
}

impl State {
    /// Carries out what the service answered.
    fn apply(&mut self, outs: Vec<Out<Sender<Value>>>) {
        for out in outs {
            match out {
                Out::Publish {
                    client,
                    topic,
                    payload,
                } => {
                    let qos = if topic.starts_with("$iothub/") { 0 } else { 1 };
                    publish_to(&client, &topic, &payload, qos);
                }
                Out::Reply(to, value) => {
                    let _ = to.send(value);
                }
                Out::Watch(value) => {
                    let device = value["device"].as_str().unwrap_or("").to_owned();
                    self.watchers.retain(|(filter, to)| {
                        filter.as_ref().is_some_and(|f| *f != device)
                            || to.send(value.clone()).is_ok()
                    });
                }
                Out::Save => {
                    if let Err(e) = self.service.save() {
                        log(LOG_ERR, &format!("cannot save the twins: {e}"));
                    }
                }
            }
        }
    }

    /// Every registry identity with its status, authentication kind, connection and
    /// activity, and pending cloud-to-device count (never a key).
    fn devices(&self) -> Value {
        let mut out: Vec<Value> = self
            .registry
            .current
            .identities()
            .map(|i| {
                let id = match &i.module_id {
                    Some(m) => format!("{}/{m}", i.device_id),
                    None => i.device_id.clone(),
                };
                let (since, last) = self.activity.get(&id).copied().unwrap_or((None, 0));
                let connected = self.connected.contains_key(&id);
                json!({
                    "deviceId": i.device_id, "moduleId": i.module_id,
                    "status": if i.status == Status::Disabled { "disabled" } else { "enabled" },
                    "authentication": i.auth.kind(),
                    "connectionState": if connected { "Connected" } else { "Disconnected" },
                    "connectedSince": since.filter(|_| connected),
                    "lastActivityTime": (last > 0).then_some(last),
                    "cloudToDeviceMessageCount": self.service.pending(&id),
                })
            })
            .collect();
        out.sort_by(|a, b| a["deviceId"].as_str().cmp(&b["deviceId"].as_str()));
        Value::Array(out)
    }

    /// Carries out the control channel's requests.
    fn serve_commands(&mut self, now: u64) {
        let mut commands = Vec::new();
        if let Some(rx) = &self.commands {
            while let Ok(c) = rx.try_recv() {
                commands.push(c);
            }
        }
        for Command { mut request, reply } in commands {
            let answer =
                |status: u16, message: String| json!({"status": status, "message": message});
            if request.get("op").and_then(Value::as_str) == Some("devices") {
                // The registry's own view; a REST caller's token is checked for the hub.
                if let Some(Value::String(mut token)) = request.get_mut("sas").map(Value::take) {
                    let checked =
                        decide::authenticate_service(&self.registry.current, &token, "", now);
                    token.zeroize();
                    if let Err(e) = checked {
                        let _ = reply.send(json!({"status": 401, "message": e.message()}));
                        continue;
                    }
                }
                let _ = reply.send(json!({"status": 200, "devices": self.devices()}));
                continue;
            }
            if request.get("op").and_then(Value::as_str) == Some("watch") {
                let device = request
                    .get("device")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if reply
                    .send(json!({"status": 200, "watching": device}))
                    .is_ok()
                {
                    self.watchers.push((device, reply));
                }
                continue;
            }
            let req = match Request::from_json(&request) {
                Ok(r) => r,
                Err(e) => {
                    let _ = reply.send(answer(400, e));
                    continue;
                }
            };
            let (device, module) = match req.device().split_once('/') {
                Some((d, m)) => (d.to_owned(), Some(m.to_owned())),
                None => (req.device().to_owned(), None),
            };
            let registry = &self.registry.current;
            if let Some(Value::String(mut token)) = request.get_mut("sas").map(Value::take) {
                let checked = decide::authenticate_service(registry, &token, &device, now);
                token.zeroize();
                if let Err(e) = checked {
                    log(
                        LOG_NOTICE,
                        &format!("service call refused: {e} ({})", e.code().name()),
                    );
                    let _ = reply.send(json!({"status": 401, "message": e.message()}));
                    continue;
                }
            }
            if registry.identity(&device, module.as_deref()).is_none() {
                let _ = reply.send(json!({"status": 404, "errorCode": 404001,
                    "message": format!("\"{}\" is not in the registry", req.device())}));
                continue;
            }
            let outs = self.service.request(req, reply, now);
            self.apply(outs);
        }
    }

    /// Re-reads the registry if it changed; logs the outcome. True when a new version is in
    /// force.
    fn refresh(&mut self) -> bool {
        self.last_look = Instant::now();
        let changed = match self.registry.refresh() {
            Ok(true) => {
                log(LOG_NOTICE, "registry changed: new version in force");
                self.certs.overlay(&mut self.registry.current);
                true
            }
            Ok(false) => false,
            Err(e) => {
                log(
                    LOG_WARNING,
                    &format!("registry not reloaded, the last good version stays in force: {e}"),
                );
                false
            }
        };
        let trusted_now = self
            .trusted
            .as_ref()
            .and_then(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok());
        if changed || trusted_now != self.trusted_seen {
            self.trusted_seen = trusted_now;
            self.write_trust();
        }
        changed
    }

    /// Rewrites the X.509 listener's trust folder from the registry and `trusted`.
    fn write_trust(&self) {
        let Some(dir) = &self.trust_dir else { return };
        let (certs, skipped) =
            crate::trust::certificates(&self.registry.current, self.trusted.as_deref());
        for s in skipped {
            log(
                LOG_WARNING,
                &format!("not trusted (not a certificate): {s}"),
            );
        }
        match crate::trust::write_hashed(dir, &certs, subject_hash) {
            Ok(n) => log(
                LOG_INFO,
                &format!("X.509 trust folder {}: {n} certificates", dir.display()),
            ),
            Err(e) => log(
                LOG_ERR,
                &format!("cannot write the X.509 trust folder {}: {e}", dir.display()),
            ),
        }
    }

    /// Why a connected session may no longer stay, if it may not.
    fn revoked(&self, s: &Session, now: u64) -> Option<String> {
        if s.kind == crate::certs::DPS_KIND {
            return None;
        }
        if let Some(at) = s.expires_unix {
            if now >= at {
                return Some(format!(
                    "SAS token expired at {}",
                    tether::internal::format_utc(at as i64)
                ));
            }
        }
        let registry = &self.registry.current;
        match registry.identity(&s.device_id, s.module_id.as_deref()) {
            None => Some("identity removed from the registry".into()),
            Some(i) if i.status == Status::Disabled => Some("disabled in the registry".into()),
            Some(i) if i.auth.kind() != s.kind => Some(format!(
                "authentication changed to {} in the registry",
                i.auth.kind()
            )),
            Some(_) => None,
        }
    }
}

/// The client certificate's DER, when the client sent one.
///
/// # Safety
/// `client` is the broker's client pointer from the current event.
unsafe fn client_certificate(client: *const c_void) -> Option<Vec<u8>> {
    // SAFETY: the broker gives a new reference to the peer's X509, or NULL.
    let x509 = unsafe { mosquitto_client_certificate(client) };
    if x509.is_null() {
        return None;
    }
    // SAFETY: x509 is a valid X509*; the first call asks the length, the second writes it
    // into a buffer of that length; the reference is released once.
    unsafe {
        let len = i2d_X509(x509, std::ptr::null_mut());
        let der = if len > 0 {
            let mut der = vec![0u8; len as usize];
            let mut out = der.as_mut_ptr();
            let written = i2d_X509(x509, &mut out);
            der.truncate(written.max(0) as usize);
            Some(der)
        } else {
            None
        };
        X509_free(x509);
        der
    }
}

extern "C" fn on_basic_auth(_event: c_int, data: *mut c_void, _user: *mut c_void) -> c_int {
    guard(ERR_AUTH, || {
        // SAFETY: the broker passes a mosquitto_evt_basic_auth for this event.
        let ev = unsafe { &*(data as *const EvtBasicAuth) };
        // SAFETY: the broker's strings live for the duration of the event.
        let (client_id, address, username, password) = unsafe {
            (
                text(mosquitto_client_id(ev.client)).unwrap_or(""),
                text(mosquitto_client_address(ev.client)).unwrap_or("?"),
                text(ev.username),
                text(ev.password),
            )
        };
        // SAFETY: the event's client pointer.
        let cert = unsafe { client_certificate(ev.client) };
        let now = now_unix();
        let mut guard = state();
        let Some(st) = guard.as_mut() else {
            return ERR_AUTH;
        };
        st.refresh();
        let registry = &st.registry.current;
        let dps_api = username
            .and_then(crate::certs::parse_dps_username)
            .map(|(_, _, v)| v.to_owned());
        let decision = match (&cert, username) {
            (_, Some(user)) if dps_api.is_some() => {
                crate::certs::authenticate_dps(registry, client_id, user, password, now)
            }
            (Some(der), _) => decide::authenticate_x509(registry, client_id, username, der, now)
                .and_then(|s| match st.certs.refuses(registry, &s.device_id, der) {
                    Some(why) => Err(tether::Error::new(tether::Code::ClientCertRejected, why)),
                    None => Ok(s),
                }),
            (None, _) => decide::authenticate_sas(registry, client_id, username, password, now),
        };
        match decision {
            Ok(session) => {
                log(
                    LOG_NOTICE,
                    &format!(
                        "accepted \"{client_id}\" from {address} ({})",
                        session.method
                    ),
                );
                st.connected.insert(
                    client_id.to_owned(),
                    Connected {
                        session,
                        client: ev.client as usize,
                        dps_api,
                    },
                );
                // SAFETY: the event's client pointer.
                let persistent = !unsafe { mosquitto_client_clean_session(ev.client) };
                st.activity.insert(client_id.to_owned(), (Some(now), now));
                let outs = st.service.connected(client_id, persistent, now);
                st.apply(outs);
                ERR_SUCCESS
            }
            Err(e) => {
                log(
                    LOG_NOTICE,
                    &format!(
                        "refused \"{client_id}\" from {address}: {e} ({})",
                        e.code().name()
                    ),
                );
                ERR_AUTH
            }
        }
    })
}

extern "C" fn on_acl_check(_event: c_int, data: *mut c_void, _user: *mut c_void) -> c_int {
    guard(ERR_ACL_DENIED, || {
        // SAFETY: the broker passes a mosquitto_evt_acl_check for this event.
        let ev = unsafe { &*(data as *const EvtAclCheck) };
        // SAFETY: the broker's strings live for the duration of the event.
        let (client_id, topic) = unsafe {
            (
                text(mosquitto_client_id(ev.client)).unwrap_or(""),
                text(ev.topic).unwrap_or(""),
            )
        };
        let access = match ev.access {
            ACL_READ => Access::Read,
            ACL_WRITE => Access::Write,
            ACL_SUBSCRIBE => Access::Subscribe,
            _ => Access::Unsubscribe,
        };
        let mut guard = state();
        let Some(st) = guard.as_mut() else {
            return ERR_ACL_DENIED;
        };
        let (session, dps_api) = st
            .connected
            .get(client_id)
            .filter(|c| c.client == ev.client as usize)
            .map(|c| (Some(c.session.clone()), c.dps_api.clone()))
            .unwrap_or((None, None));
        let Some(session) = session else {
            log(
                LOG_NOTICE,
                &format!("denied \"{client_id}\" on \"{topic}\": no authenticated session"),
            );
            return ERR_ACL_DENIED;
        };
        let decision = match access {
            Access::Write => {
                decide::publish(&session, topic, ev.qos, ev.retain, ev.payloadlen as usize)
            }
            _ => decide::authorize(&session, access, topic, ev.qos),
        };
        if let Err(e) = decision {
            log(LOG_NOTICE, &format!("denied: {e} ({})", e.code().name()));
            if access == Access::Write {
                // IoT Hub closes the connection of a device whose publish it refuses.
                st.connected.remove(client_id);
                st.service.disconnected(client_id);
                st.kicks.push((
                    client_id.to_owned(),
                    format!("refused publish: {}", e.message()),
                ));
            }
            return ERR_ACL_DENIED;
        }
        let outs = match access {
            Access::Write => {
                if let Some(a) = st.activity.get_mut(client_id) {
                    a.1 = now_unix();
                }
                let payload = if ev.payload.is_null() || ev.payloadlen == 0 {
                    &[][..]
                } else {
                    // SAFETY: the broker passes the message's `payloadlen` bytes.
                    unsafe {
                        std::slice::from_raw_parts(ev.payload as *const u8, ev.payloadlen as usize)
                    }
                };
                let now = now_unix();
                let issued = if let Some(api) = &dps_api {
                    let registry = &st.registry.current;
                    Some(
                        st.certs
                            .dps_publish(registry, &session, api, topic, payload, now),
                    )
                } else if topic.starts_with("$iothub/credentials/") {
                    let registry = &st.registry.current;
                    Some(
                        st.certs
                            .credentials_publish(registry, &session, topic, payload, now),
                    )
                } else {
                    None
                };
                if dps_api.is_some() {
                    // A device DPS just created is a device of the hub.
                    st.certs.overlay(&mut st.registry.current);
                }
                match issued {
                    Some(publishes) => {
                        for p in publishes {
                            publish_to(&p.client, &p.topic, &p.payload, 0);
                        }
                        Vec::new()
                    }
                    None => st
                        .service
                        .device_publish(client_id, topic, payload, ev.retain),
                }
            }
            Access::Subscribe => {
                st.certs.subscribe(client_id, topic);
                st.service.subscribe(client_id, topic, now_unix())
            }
            Access::Unsubscribe => {
                st.service.unsubscribe(client_id, topic);
                Vec::new()
            }
            Access::Read => Vec::new(),
        };
        st.apply(outs);
        ERR_SUCCESS
    })
}

/// IoT Hub does not keep retained messages: it passes them on with an `mqtt-retain` property.
/// The broker must not keep them either, or a later subscriber would get one replayed.
extern "C" fn on_message(_event: c_int, data: *mut c_void, _user: *mut c_void) -> c_int {
    guard(ERR_SUCCESS, || {
        // SAFETY: the broker passes a mosquitto_evt_message for this event, and reads back
        // the fields a plugin may change (retain among them).
        let ev = unsafe { &mut *(data as *mut EvtMessage) };
        ev.retain = false;
        ERR_SUCCESS
    })
}

extern "C" fn on_tick(_event: c_int, _data: *mut c_void, _user: *mut c_void) -> c_int {
    guard(ERR_SUCCESS, || {
        let now = now_unix();
        let mut kicks = Vec::new();
        {
            let mut guard = state();
            let Some(st) = guard.as_mut() else {
                return ERR_SUCCESS;
            };
            if st.last_look.elapsed() >= REGISTRY_LOOK_EVERY {
                st.refresh();
            }
            let revoked: Vec<(String, String)> = st
                .connected
                .iter()
                .filter_map(|(id, c)| st.revoked(&c.session, now).map(|why| (id.clone(), why)))
                .collect();
            for (id, why) in revoked {
                st.connected.remove(&id);
                st.service.disconnected(&id);
                kicks.push((id, why));
            }
            kicks.append(&mut st.kicks);
            st.serve_commands(now);
            let outs = st.service.tick(now);
            st.apply(outs);
            for p in st.certs.tick(now) {
                log(
                    LOG_NOTICE,
                    &format!("issued a renewed certificate to \"{}\"", p.client),
                );
                publish_to(&p.client, &p.topic, &p.payload, 0);
            }
        }
        // The lock is released: a kick reports the disconnect synchronously.
        for (id, why) in kicks {
            log(LOG_NOTICE, &format!("disconnecting \"{id}\": {why}"));
            if let Ok(c) = CString::new(id) {
                // SAFETY: a NUL-terminated client id.
                unsafe { mosquitto_kick_client_by_clientid(c.as_ptr(), false) };
            }
        }
        ERR_SUCCESS
    })
}

extern "C" fn on_disconnect(_event: c_int, data: *mut c_void, _user: *mut c_void) -> c_int {
    guard(ERR_SUCCESS, || {
        // SAFETY: the broker passes a mosquitto_evt_disconnect for this event.
        let ev = unsafe { &*(data as *const EvtDisconnect) };
        // SAFETY: the broker's string lives for the duration of the event.
        let client_id = unsafe { text(mosquitto_client_id(ev.client)) }.unwrap_or("");
        let mut guard = state();
        if let Some(st) = guard.as_mut() {
            if st
                .connected
                .get(client_id)
                .is_some_and(|c| c.client == ev.client as usize)
            {
                st.connected.remove(client_id);
                st.service.disconnected(client_id);
                st.certs.disconnected(client_id);
            }
        }
        ERR_SUCCESS
    })
}

const CALLBACKS: [(c_int, Callback); 5] = [
    (EVT_BASIC_AUTH, on_basic_auth),
    (EVT_ACL_CHECK, on_acl_check),
    (EVT_MESSAGE, on_message),
    (EVT_TICK, on_tick),
    (EVT_DISCONNECT, on_disconnect),
];

/// Answers 5 (plugin API v5) when the broker offers it.
///
/// # Safety
/// `versions` points to `count` ints.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_version(count: c_int, versions: *const c_int) -> c_int {
    if versions.is_null() || count <= 0 {
        return -1;
    }
    // SAFETY: the caller's contract.
    let offered = unsafe { std::slice::from_raw_parts(versions, count as usize) };
    if offered.contains(&5) {
        5
    } else {
        -1
    }
}

/// Reads the `registry` option, loads the registry and registers the callbacks.
///
/// # Safety
/// Called once by the broker with its plugin id and `count` options.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_init(
    id: *mut c_void,
    _userdata: *mut *mut c_void,
    options: *const MosquittoOpt,
    count: c_int,
) -> c_int {
    guard(ERR_INVAL, || {
        let opts = if options.is_null() || count <= 0 {
            &[][..]
        } else {
            // SAFETY: the broker passes `count` options.
            unsafe { std::slice::from_raw_parts(options, count as usize) }
        };
        let option = |name: &str| {
            opts.iter().rev().find_map(|o| {
                // SAFETY: option strings are NUL-terminated and outlive init.
                let (key, value) = unsafe { (text(o.key), text(o.value)) };
                (key == Some(name)).then(|| value.unwrap_or("").to_owned())
            })
        };
        let registry_path = option("registry");
        let Some(path) = registry_path else {
            log(
                LOG_ERR,
                "no registry: add `plugin_opt_registry /path/to/registry.json` to the configuration",
            );
            return ERR_INVAL;
        };
        let watched = match Watched::open(Path::new(&path)) {
            Ok(w) => w,
            Err(e) => {
                log(LOG_ERR, &format!("cannot load the registry: {e}"));
                return ERR_INVAL;
            }
        };
        log(
            LOG_INFO,
            &format!(
                "registry {path} loaded (host {})",
                watched.current.host_name
            ),
        );
        let dir = option("dir").map(PathBuf::from);
        let commands = match &dir {
            Some(d) => match crate::control::listen(d) {
                Ok((path, rx)) => {
                    log(LOG_INFO, &format!("control channel {}", path.display()));
                    Some(rx)
                }
                Err(e) => {
                    // The broker still checks devices; only the service side is missing.
                    log(
                        LOG_ERR,
                        &format!(
                            "cannot open the control channel in {}: {e}; tether hub c2d, invoke, \
                             twin, watch and the REST API will not work",
                            d.display()
                        ),
                    );
                    None
                }
            },
            None => None,
        };
        let issuer = match (option("issuer_cert"), option("issuer_key")) {
            (Some(cert), Some(key)) => {
                let validity = option("issued_validity")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(30 * 86_400);
                match crate::certs::Issuer::load(Path::new(&cert), Path::new(&key), validity) {
                    Ok(i) => {
                        log(
                            LOG_INFO,
                            &format!("issuing CA {cert}: certificates valid {validity} s"),
                        );
                        Some(i)
                    }
                    Err(e) => {
                        log(LOG_ERR, &format!("cannot load the issuing CA: {e}"));
                        return ERR_INVAL;
                    }
                }
            }
            _ => None,
        };
        let mut watched = watched;
        let certs = Certs::new(issuer);
        certs.overlay(&mut watched.current);
        let st = State {
            certs,
            service: Service::new(dir.as_ref().map(|d| d.join("twins.json"))),
            commands,
            watchers: Vec::new(),
            kicks: Vec::new(),
            activity: HashMap::new(),
            registry: watched,
            connected: HashMap::new(),
            last_look: Instant::now(),
            trust_dir: option("trust_dir").map(PathBuf::from),
            trusted: option("trusted").map(PathBuf::from),
            trusted_seen: None,
        };
        st.write_trust();
        *state() = Some(st);
        PLUGIN_ID.store(id, Ordering::SeqCst);
        for (event, cb) in CALLBACKS {
            // SAFETY: the broker's id; callbacks are 'static functions.
            let rc = unsafe {
                mosquitto_callback_register(id, event, cb, std::ptr::null(), std::ptr::null_mut())
            };
            if rc != ERR_SUCCESS {
                log(
                    LOG_ERR,
                    &format!("cannot register for event {event} ({rc})"),
                );
                return rc;
            }
        }
        ERR_SUCCESS
    })
}

/// Unregisters the callbacks and drops the state.
///
/// # Safety
/// Called once by the broker at shutdown.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    _userdata: *mut c_void,
    _options: *const MosquittoOpt,
    _count: c_int,
) -> c_int {
    guard(ERR_SUCCESS, || {
        let id = PLUGIN_ID.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !id.is_null() {
            for (event, cb) in CALLBACKS {
                // SAFETY: the id given at init; the callbacks registered there.
                unsafe { mosquitto_callback_unregister(id, event, cb, std::ptr::null()) };
            }
        }
        *state() = None;
        ERR_SUCCESS
    })
}
