//! The service API's registry routes (`/devices...`, see `rest.rs`): the identity list from
//! the plugin, and changes written to the registry file, which the plugin reads again.

use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use ring::rand::SecureRandom;
use serde_json::{json, Value};
use tether::internal::{check_id, IdKind};
use zeroize::{Zeroize, Zeroizing};

use super::rest::{call_as, error_body, HttpRequest};

/// One registry change at a time (read, change, write).
static WRITING: Mutex<()> = Mutex::new(());

/// A new SAS key: 32 random bytes, base64, as IoT Hub generates them.
fn new_key() -> Option<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    ring::rand::SystemRandom::new().fill(&mut bytes[..]).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(&bytes[..]))
}

/// Wipes every string in `v` (registry text holds keys).
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => m.values_mut().for_each(wipe),
        _ => {}
    }
}

/// The identity without its keys.
fn without_keys(entry: &Value) -> Value {
    let mut e = entry.clone();
    if let Some(sym) = e.pointer_mut("/authentication/symmetricKey") {
        wipe(sym);
        *sym = json!({});
    }
    e
}

fn is_device(entry: &Value, id: &str) -> bool {
    entry["deviceId"] == id && entry.get("moduleId").map_or(true, Value::is_null)
}

/// Reads the registry file, lets `change` edit it (answering the HTTP result), and writes it
/// back (through a temporary file and a rename) when `change` answered 2xx.
fn edit(registry: &Path, change: impl FnOnce(&mut Value) -> (u16, Value)) -> (u16, Value) {
    let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let text = match std::fs::read_to_string(registry) {
        Ok(t) => Zeroizing::new(t),
        Err(e) => return (500, error_body(500000, &format!("registry: {e}"))),
    };
    let mut doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return (
                500,
                error_body(500000, &format!("registry is not JSON: {e}")),
            )
        }
    };
    let (status, body) = change(&mut doc);
    if (200..300).contains(&status) {
        let out = Zeroizing::new(serde_json::to_string_pretty(&doc).unwrap_or_default());
        let tmp = registry.with_extension("json.new");
        // The new file keeps the registry's permissions (it holds keys).
        if let Err(e) = std::fs::write(&tmp, out.as_bytes())
            .and_then(|_| std::fs::metadata(registry))
            .and_then(|m| std::fs::set_permissions(&tmp, m.permissions()))
            .and_then(|_| std::fs::rename(&tmp, registry))
        {
            wipe(&mut doc);
            return (500, error_body(500000, &format!("registry: {e}")));
        }
    }
    wipe(&mut doc);
    (status, body)
}

/// Answers a `/devices...` request (`parts`: the path's segments).
pub(super) fn answer(
    req: &HttpRequest,
    parts: &[&str],
    dir: &Path,
    registry: &Path,
) -> (u16, Value) {
    // The plugin checks the caller's token (or trusts the local user's session) and lists.
    let listed = match call_as(req, dir, json!({"op": "devices"})) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if listed["status"] != 200 {
        let message = listed["message"].as_str().unwrap_or("refused");
        return (401, error_body(401002, message));
    }
    let id = parts
        .get(1)
        .map(|d| tether::internal::url_decode(d).unwrap_or_else(|| (*d).to_owned()));
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return (400, error_body(400004, &format!("body is not JSON: {e}"))),
        }
    };
    let not_found = |id: &str| {
        (
            404,
            error_body(404001, &format!("\"{id}\" is not in the registry")),
        )
    };
    match (
        req.method.as_str(),
        id.as_deref(),
        &parts[1.min(parts.len())..],
    ) {
        ("GET", None, _) => {
            let mut devices = listed["devices"].clone();
            for d in devices.as_array_mut().into_iter().flatten() {
                let id = match d["moduleId"].as_str() {
                    Some(m) => format!("{}/{m}", d["deviceId"].as_str().unwrap_or("")),
                    None => d["deviceId"].as_str().unwrap_or("").to_owned(),
                };
                d["lastTlsVerdict"] = json!(crate::hub_audit::last_verdict(&id));
            }
            (200, devices)
        }
        ("GET", Some(id), [_]) => {
            let mut found = None;
            let (status, body) = edit(registry, |doc| {
                found = doc["devices"]
                    .as_array()
                    .and_then(|a| a.iter().find(|e| is_device(e, id)))
                    .cloned()
                    .map(|mut e| {
                        // The stand-in's addition: the host a connection string names.
                        e["hostName"] = doc["hostName"].clone();
                        e
                    });
                (304, Value::Null)
            });
            if status == 500 {
                return (status, body);
            }
            match found {
                Some(entry) => (200, entry),
                None => not_found(id),
            }
        }
        ("PUT", Some(id), [_]) => {
            let status = match body["status"].as_str() {
                Some(s @ ("enabled" | "disabled")) => s.to_owned(),
                None => "enabled".to_owned(),
                Some(other) => {
                    return (
                        400,
                        error_body(
                            400004,
                            &format!("status must be enabled or disabled, not \"{other}\""),
                        ),
                    )
                }
            };
            if let Err(e) = check_id(IdKind::Device, id) {
                return (400, error_body(400004, e.message()));
            }
            edit(registry, |doc| {
                let Some(devices) = doc
                    .as_object_mut()
                    .map(|m| m.entry("devices").or_insert_with(|| json!([])))
                    .and_then(Value::as_array_mut)
                else {
                    return (500, error_body(500000, "registry has no devices list"));
                };
                if let Some(entry) = devices.iter_mut().find(|e| is_device(e, id)) {
                    entry["status"] = json!(status);
                    return (200, without_keys(entry));
                }
                let (Some(primary), Some(secondary)) = (new_key(), new_key()) else {
                    return (500, error_body(500000, "no random numbers for a key"));
                };
                let entry = json!({"deviceId": id, "status": status, "authentication": {
                    "type": "sas",
                    "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}}});
                let shown = without_keys(&entry);
                devices.push(entry);
                (200, shown)
            })
        }
        ("POST", Some(id), [_, "keys", which @ ("primary" | "secondary")]) => {
            edit(registry, |doc| {
                let Some(entry) = doc["devices"]
                    .as_array_mut()
                    .and_then(|a| a.iter_mut().find(|e| is_device(e, id)))
                else {
                    return not_found(id);
                };
                if entry["authentication"]["type"] != "sas" {
                    return (
                        400,
                        error_body(400004, &format!("\"{id}\" does not use SAS keys")),
                    );
                }
                let Some(key) = new_key() else {
                    return (500, error_body(500000, "no random numbers for a key"));
                };
                let slot = &mut entry["authentication"]["symmetricKey"][format!("{which}Key")];
                wipe(slot);
                *slot = json!(key);
                (200, json!({"deviceId": id, "rotated": which}))
            })
        }
        ("POST", Some(id), [_, "messages", "devicebound"]) => {
            let text = match &body["body"] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let request = json!({"op": "c2d", "device": id, "payload": text,
                "properties": body.get("properties").cloned().unwrap_or(json!({})),
                "ttl": body["ttl"].as_u64().unwrap_or(3600)});
            let hub = match call_as(req, dir, request) {
                Ok(v) => v,
                Err(e) => return e,
            };
            let status = hub["status"].as_u64().unwrap_or(500);
            if status == 200 {
                (
                    200,
                    json!({"messageId": hub["messageId"], "pending": hub["pending"]}),
                )
            } else {
                let message = hub["message"].as_str().unwrap_or("");
                (
                    status.clamp(400, 599) as u16,
                    error_body(hub["errorCode"].as_u64().unwrap_or(status * 1000), message),
                )
            }
        }
        _ => (405, error_body(405000, "not served by the stand-in")),
    }
}
