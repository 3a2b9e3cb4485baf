//! The stand-in's service REST API: the subset of IoT Hub's service API a backend needs to
//! drive devices, on a local HTTPS port (the stand-in's server certificate, IoT Hub's TLS
//! policy), answered through the control socket like `tether hub invoke|twin`:
//!
//! - `GET /twins/{id}?api-version=...`: the twin;
//! - `PATCH /twins/{id}?api-version=...` with `{"properties": {"desired": {...}}}`: patches the
//!   desired properties (the device gets the patch) and answers the twin;
//! - `POST /twins/{id}/methods?api-version=...` with `{"methodName", "payload",
//!   "responseTimeoutInSeconds"}`: answers `{"status", "payload"}` (404 not connected or not
//!   subscribed, 504 timeout, as IoT Hub).
//!
//! - `GET /devices?api-version=...`: every identity with status, authentication kind,
//!   `connectionState`, `connectedSince`, `lastActivityTime`, `cloudToDeviceMessageCount`,
//!   `lastTlsVerdict` (the audit relay's verdict on its last connection); no keys;
//! - `GET /devices/{id}?api-version=...`: one identity as the registry holds it, keys
//!   included (as IoT Hub answers it), with the registry's `hostName`;
//! - `PUT /devices/{id}?api-version=...` with `{"status"}`: adds a SAS device with
//!   generated keys, or sets an identity's status (`enabled`, `disabled`); answers the
//!   identity without keys;
//! - `POST /devices/{id}/keys/{primary|secondary}?api-version=...`: a new generated key;
//! - `POST /devices/{id}/messages/devicebound?api-version=...` with `{"body", "properties",
//!   "ttl"}`: queues a cloud-to-device message, answers `{"messageId", "pending"}`.
//!
//! Registry changes are written to the registry file, which the plugin reads again (a
//! disabled device is disconnected and refused).
//!
//! `Authorization: SharedAccessSignature sr={host}&sig=...&se=...&skn={policy}`: the plugin
//! checks it against the registry's `authorizationPolicies` (ServiceConnect, constant-time
//! signature check); an unauthorized call is 401. Each connection carries one request.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};
use tether::{Code, Error, Result};
use zeroize::{Zeroize, Zeroizing};

use super::service::call;

/// The largest request body accepted (a twin patch or a method payload is far smaller).
const MAX_BODY: usize = 256 * 1024;

/// TLS 1.2 with the hub's suites and the stand-in's certificate (the service API and the
/// WebSocket front).
pub(super) fn tls_config(dir: &Path) -> Result<Arc<ServerConfig>> {
    let read = |f: &str| tether::internal::read_file(&dir.join(f).to_string_lossy());
    let certs = tether::policy::load_certificates(&read("server.pem")?)?;
    let key = tether::policy::load_private_key(&read("server.key")?)?;
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: tether::policy::TlsPolicy::new().suites(),
        ..rustls::crypto::ring::default_provider()
    };
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| Error::new(Code::KeyCertMismatch, format!("stand-in TLS: {e}")))?;
    Ok(Arc::new(config))
}

/// Listens on 127.0.0.1:`port` (0: any free port) and serves on a thread; answers the port.
pub fn start(dir: &Path, registry: &Path, port: u16) -> Result<u16> {
    let config = tls_config(dir)?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| Error::new(Code::Io, format!("service API port {port}: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::new(Code::Io, e.to_string()))?
        .port();
    let (dir, registry) = (dir.to_path_buf(), registry.to_path_buf());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (config, dir, registry) = (config.clone(), dir.clone(), registry.clone());
            std::thread::spawn(move || serve(stream, config, dir, registry));
        }
    });
    Ok(port)
}

pub(super) struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Authorization` header: a SAS token, wiped when dropped.
    pub authorization: Zeroizing<String>,
    /// The `Cookie` header (the web view's session), wiped when dropped.
    pub cookie: Zeroizing<String>,
    /// The `Host` and `Origin` headers.
    pub host: String,
    pub origin: String,
    pub body: Vec<u8>,
}

pub(super) fn read_request(reader: &mut impl BufRead) -> Option<HttpRequest> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (mut length, mut authorization) = (0usize, Zeroizing::new(String::new()));
    let (mut cookie, mut host, mut origin) =
        (Zeroizing::new(String::new()), String::new(), String::new());
    loop {
        // A header line may hold the token: wiped when dropped.
        let mut raw = Zeroizing::new(String::new());
        reader.read_line(&mut raw).ok()?;
        let header = raw.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => *authorization = value.trim().to_owned(),
            "cookie" => *cookie = value.trim().to_owned(),
            "host" => host = value.trim().to_owned(),
            "origin" => origin = value.trim().to_owned(),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return None;
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        authorization,
        cookie,
        host,
        origin,
        body,
    })
}

/// IoT Hub's error body: `{"Message": "<JSON with errorCode and message>", ...}`.
pub(super) fn error_body(code: u64, message: &str) -> Value {
    json!({
        "Message": json!({"errorCode": code, "message": message}).to_string(),
        "ExceptionMessage": "",
    })
}

/// The HTTP status and body for a request. An empty `authorization` is the local user's
/// session (the web view, checked by its own server): the control socket trusts it as it
/// trusts `tether hub twin`.
pub(super) fn answer(req: &HttpRequest, dir: &Path, registry: &Path) -> (u16, Value) {
    if !req.query.split('&').any(|p| {
        p.strip_prefix("api-version=")
            .is_some_and(|v| !v.is_empty())
    }) {
        return (
            400,
            error_body(400001, "the api-version query parameter is required"),
        );
    }
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    if parts[0] == "devices" {
        return super::registry::answer(req, &parts, dir, registry);
    }
    let device = match parts.get(1) {
        Some(d) if parts[0] == "twins" => {
            tether::internal::url_decode(d).unwrap_or_else(|| (*d).to_owned())
        }
        _ => return (404, error_body(404000, "no such resource")),
    };
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return (400, error_body(400004, &format!("body is not JSON: {e}"))),
        }
    };
    let request = match (req.method.as_str(), parts.len(), parts.get(2)) {
        ("GET", 2, _) => json!({"op": "twin", "device": device}),
        ("PATCH", 2, _) => match body.pointer("/properties/desired") {
            Some(d) if d.is_object() => json!({"op": "twin", "device": device, "desired": d}),
            _ => {
                return (
                    400,
                    error_body(400004, "a twin PATCH needs properties.desired (an object)"),
                )
            }
        },
        ("POST", 3, Some(&"methods")) => {
            let Some(method) = body["methodName"].as_str() else {
                return (400, error_body(400004, "methodName is required"));
            };
            json!({"op": "invoke", "device": device, "method": method,
                   "payload": body["payload"],
                   "timeout": body["responseTimeoutInSeconds"].as_u64().unwrap_or(30)})
        }
        _ => return (405, error_body(405000, "not served by the stand-in")),
    };
    let hub = match call_as(req, dir, request.clone()) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let status = hub["status"].as_u64().unwrap_or(500);
    let message = hub["message"].as_str().unwrap_or("");
    match (request["op"].as_str(), status) {
        (_, 401) => (401, error_body(401002, message)),
        (Some("twin"), 200) => (200, hub["twin"].clone()),
        (Some("invoke"), 200..=599) if hub.get("payload").is_some() => (
            200,
            json!({"status": hub["status"], "payload": hub["payload"]}),
        ),
        (_, s) => (
            s.clamp(400, 599) as u16,
            error_body(hub["errorCode"].as_u64().unwrap_or(s * 1000), message),
        ),
    }
}

/// Sends `request` to the plugin with the caller's token (none: the local user's session),
/// wiping the token's copy; a control socket failure is 503.
pub(super) fn call_as(
    req: &HttpRequest,
    dir: &Path,
    mut request: Value,
) -> std::result::Result<Value, (u16, Value)> {
    if !req.authorization.is_empty() {
        request["sas"] = json!(req.authorization.as_str());
    }
    let called = call(dir, &request);
    if let Some(Value::String(mut token)) = request.get_mut("sas").map(Value::take) {
        token.zeroize();
    }
    called.map_err(|e| (503, error_body(503000, e.message())))
}

/// An HTTP status line's reason.
pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

fn serve(stream: TcpStream, config: Arc<ServerConfig>, dir: PathBuf, registry: PathBuf) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = BufReader::new(StreamOwned::new(conn, stream));
    let Some(req) = read_request(&mut tls) else {
        return;
    };
    // The HTTPS port serves only callers with a service token.
    let (status, body) = if req.authorization.is_empty() {
        (
            401,
            error_body(
                401002,
                "an Authorization header with a service token is required",
            ),
        )
    } else {
        answer(&req, &dir, &registry)
    };
    let reason = reason(status);
    let body = body.to_string();
    let tls = tls.get_mut();
    let _ = write!(
        tls,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
