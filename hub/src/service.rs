//! What IoT Hub does behind `$iothub/...` and `devices/{id}/messages/...`, as plain state
//! and functions: a twin store per device, cloud-to-device queues, direct-method calls in
//! flight, and the device-to-cloud messages watchers see. No FFI and no threads here: the
//! plugin (`plugin.rs`) feeds it events from the broker and requests from the control
//! channel (`control.rs`), and carries out the [`Out`]s it answers with.
//!
//! Identities are named as in client ids: `device` or `device/module`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use serde_json::{json, Map, Value};
use tether::internal::{url_decode, url_encode_string};

/// IoT Hub keeps at most 50 cloud-to-device messages per device.
pub const MAX_C2D_PENDING: usize = 50;
/// IoT Hub's largest cloud-to-device message: 64 KB.
pub const MAX_C2D_BYTES: usize = 64 * 1024;
/// IoT Hub's default time to live of a cloud-to-device message: one hour.
pub const DEFAULT_C2D_TTL_SECS: u64 = 3600;
/// IoT Hub's longest time to live of a cloud-to-device message: 48 hours.
pub const MAX_C2D_TTL_SECS: u64 = 48 * 3600;
/// IoT Hub's bounds on a direct method's response timeout.
pub const METHOD_TIMEOUT_SECS: (u64, u64) = (5, 300);
/// A twin document's largest size (IoT Hub: 32 KB for each of desired and reported).
pub const MAX_TWIN_BYTES: usize = 32 * 1024;

/// A subscription IoT Hub acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sub {
    C2d,
    Methods,
    Desired,
    TwinResponses,
}

/// Which of IoT Hub's subscriptions `filter` (by `client`) is.
pub fn subscription(client: &str, filter: &str) -> Option<Sub> {
    if filter.starts_with("$iothub/methods/POST/") {
        Some(Sub::Methods)
    } else if filter.starts_with("$iothub/twin/PATCH/properties/desired/") {
        Some(Sub::Desired)
    } else if filter.starts_with("$iothub/twin/res/") {
        Some(Sub::TwinResponses)
    } else {
        // Modules get no cloud-to-device messages (IoT Hub sends them to devices only).
        let c2d = format!("devices/{client}/messages/devicebound/");
        (!client.contains('/') && filter.starts_with(&c2d)).then_some(Sub::C2d)
    }
}

/// A request from the service side (the CLI or the REST API).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    C2d {
        device: String,
        properties: Vec<(String, String)>,
        payload: Vec<u8>,
        ttl_secs: u64,
    },
    Invoke {
        device: String,
        method: String,
        payload: Value,
        timeout_secs: u64,
    },
    TwinGet {
        device: String,
    },
    TwinPatch {
        device: String,
        desired: Value,
    },
}

impl Request {
    pub fn device(&self) -> &str {
        match self {
            Request::C2d { device, .. }
            | Request::Invoke { device, .. }
            | Request::TwinGet { device }
            | Request::TwinPatch { device, .. } => device,
        }
    }

    /// Reads a control-channel request: `{"op": "c2d"|"invoke"|"twin", "device": ...}`.
    pub fn from_json(v: &Value) -> Result<Request, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let device = s("device").ok_or("no \"device\"")?;
        match s("op").as_deref() {
            Some("c2d") => {
                let mut properties = Vec::new();
                if let Some(p) = v.get("properties").and_then(Value::as_object) {
                    for (k, val) in p {
                        let val = val.as_str().ok_or("property values are strings")?;
                        properties.push((k.clone(), val.to_owned()));
                    }
                }
                Ok(Request::C2d {
                    device,
                    properties,
                    payload: s("payload").unwrap_or_default().into_bytes(),
                    ttl_secs: v
                        .get("ttl")
                        .and_then(Value::as_u64)
                        .unwrap_or(DEFAULT_C2D_TTL_SECS),
                })
            }
            Some("invoke") => Ok(Request::Invoke {
                device,
                method: s("method").ok_or("no \"method\"")?,
                payload: v.get("payload").cloned().unwrap_or(Value::Null),
                timeout_secs: v.get("timeout").and_then(Value::as_u64).unwrap_or(30),
            }),
            Some("twin") => Ok(match v.get("desired") {
                Some(d) => Request::TwinPatch {
                    device,
                    desired: d.clone(),
                },
                None => Request::TwinGet { device },
            }),
            _ => Err("\"op\" is c2d, invoke or twin".into()),
        }
    }
}

/// What the plugin must do.
#[derive(Debug, PartialEq)]
pub enum Out<R> {
    /// Publish to exactly this client (never to other subscribers).
    Publish {
        client: String,
        topic: String,
        payload: Vec<u8>,
    },
    /// Answer a request: `{"status": N, ...}`.
    Reply(R, Value),
    /// A device-to-cloud message, for watchers.
    Watch(Value),
    /// The twin store changed: save it.
    Save,
}

/// A direct-method call waiting for the device.
struct Call<R> {
    client: String,
    reply: R,
    deadline: u64,
}

struct C2dMessage {
    topic: String,
    payload: Vec<u8>,
    expires: u64,
}

/// One identity's twin: desired and reported properties, each with its `$version`.
#[derive(Clone, Debug, PartialEq)]
pub struct Twin {
    pub desired: Map<String, Value>,
    pub desired_version: u64,
    pub reported: Map<String, Value>,
    pub reported_version: u64,
}

impl Default for Twin {
    fn default() -> Self {
        Twin {
            desired: Map::new(),
            desired_version: 1,
            reported: Map::new(),
            reported_version: 1,
        }
    }
}

impl Twin {
    fn section(props: &Map<String, Value>, version: u64) -> Value {
        let mut m = props.clone();
        m.insert("$version".into(), json!(version));
        Value::Object(m)
    }

    /// The document a device's twin GET receives.
    pub fn device_view(&self) -> Value {
        json!({
            "desired": Twin::section(&self.desired, self.desired_version),
            "reported": Twin::section(&self.reported, self.reported_version),
        })
    }

    /// The document the service API answers (IoT Hub's twin shape).
    pub fn service_view(&self, name: &str) -> Value {
        let (device, module) = match name.split_once('/') {
            Some((d, m)) => (d, Some(m)),
            None => (name, None),
        };
        let mut v = json!({
            "deviceId": device,
            "etag": format!("AAAAAAAAAA{}", self.desired_version),
            "version": self.desired_version + self.reported_version,
            "properties": {
                "desired": Twin::section(&self.desired, self.desired_version),
                "reported": Twin::section(&self.reported, self.reported_version),
            }
        });
        if let Some(m) = module {
            v["moduleId"] = json!(m);
        }
        v
    }

    fn from_saved(v: &Value) -> Option<Twin> {
        let section = |k: &str| -> Option<(Map<String, Value>, u64)> {
            let mut m = v.get(k)?.as_object()?.clone();
            let version = m.remove("$version")?.as_u64()?;
            Some((m, version))
        };
        let (desired, desired_version) = section("desired")?;
        let (reported, reported_version) = section("reported")?;
        Some(Twin {
            desired,
            desired_version,
            reported,
            reported_version,
        })
    }
}

/// JSON merge patch (RFC 7386), as twin patches apply: `null` removes a member. Keys
/// starting with `$` are IoT Hub's and are not taken from a patch.
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge(t, p);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

/// `$rid` (and the rest) from a topic's `?a=b&c=d` tail.
fn query<'t>(topic: &'t str, key: &str) -> Option<&'t str> {
    let (_, q) = topic.split_once('?')?;
    q.split('&')
        .find_map(|p| p.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

/// Properties in a topic's last level: `k=v&k2=v2`, URL-decoded.
pub fn topic_properties(level: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for pair in level.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = url_decode(k).unwrap_or_else(|| k.to_owned());
        let v = url_decode(v).unwrap_or_else(|| v.to_owned());
        out.insert(k, Value::String(v));
    }
    out
}

/// A payload as JSON when it is JSON, else as a string (lossy UTF-8).
pub fn payload_value(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

fn error(status: u16, code: u32, message: impl Into<String>) -> Value {
    json!({"status": status, "errorCode": code, "message": message.into()})
}

/// The hub's service side: twins, C2D queues, method calls. `R` is how a request is
/// answered (the plugin's reply channel).
pub struct Service<R> {
    /// Where the twins are saved (`twins.json`), if anywhere.
    pub twins_file: Option<PathBuf>,
    twins: BTreeMap<String, Twin>,
    c2d: HashMap<String, VecDeque<C2dMessage>>,
    subs: HashMap<String, HashSet<Sub>>,
    connected: HashSet<String>,
    calls: HashMap<u64, Call<R>>,
    next_id: u64,
}

impl<R> Service<R> {
    /// A service with the twins saved in `twins_file` (loaded when it exists).
    pub fn new(twins_file: Option<PathBuf>) -> Service<R> {
        let mut twins = BTreeMap::new();
        if let Some(saved) = twins_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            if let Some(m) = saved.as_object() {
                for (k, v) in m {
                    if let Some(t) = Twin::from_saved(v) {
                        twins.insert(k.clone(), t);
                    }
                }
            }
        }
        Service {
            twins_file,
            twins,
            c2d: HashMap::new(),
            subs: HashMap::new(),
            connected: HashSet::new(),
            calls: HashMap::new(),
            next_id: 1,
        }
    }

    /// The twins as saved: `{name: {"desired": {..., "$version"}, "reported": {...}}}`.
    pub fn saved(&self) -> Value {
        Value::Object(
            self.twins
                .iter()
                .map(|(k, t)| (k.clone(), t.device_view()))
                .collect(),
        )
    }

    /// Writes the twins to their file (a new file renamed over the old one).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.twins_file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.saved())?)?;
        std::fs::rename(&tmp, path)
    }

    pub fn twin(&self, name: &str) -> Twin {
        self.twins.get(name).cloned().unwrap_or_default()
    }

    /// Whether `client` is connected and subscribed to `sub`.
    pub fn subscribed(&self, client: &str, sub: Sub) -> bool {
        self.connected.contains(client) && self.subs.get(client).is_some_and(|s| s.contains(&sub))
    }

    /// How many C2D messages wait for `client`.
    pub fn pending(&self, client: &str) -> usize {
        self.c2d.get(client).map_or(0, VecDeque::len)
    }

    /// A client connected. With a persistent session (MQTT clean session 0) the broker kept
    /// its subscriptions, and queued C2D messages go out; otherwise they are gone.
    pub fn connected(&mut self, client: &str, persistent: bool, now: u64) -> Vec<Out<R>> {
        self.connected.insert(client.to_owned());
        if !persistent {
            self.subs.remove(client);
            return Vec::new();
        }
        if self.subscribed(client, Sub::C2d) {
            self.flush_c2d(client, now)
        } else {
            Vec::new()
        }
    }

    /// A client's connection ended (queued C2D messages stay).
    pub fn disconnected(&mut self, client: &str) {
        self.connected.remove(client);
    }

    /// A client subscribed to `filter`; queued C2D messages go out once it listens.
    pub fn subscribe(&mut self, client: &str, filter: &str, now: u64) -> Vec<Out<R>> {
        let Some(sub) = subscription(client, filter) else {
            return Vec::new();
        };
        self.subs.entry(client.to_owned()).or_default().insert(sub);
        if sub == Sub::C2d && self.connected.contains(client) {
            self.flush_c2d(client, now)
        } else {
            Vec::new()
        }
    }

    pub fn unsubscribe(&mut self, client: &str, filter: &str) {
        if let (Some(sub), Some(s)) = (subscription(client, filter), self.subs.get_mut(client)) {
            s.remove(&sub);
        }
    }

    fn flush_c2d(&mut self, client: &str, now: u64) -> Vec<Out<R>> {
        let Some(queue) = self.c2d.get_mut(client) else {
            return Vec::new();
        };
        queue
            .drain(..)
            .filter(|m| m.expires > now)
            .map(|m| Out::Publish {
                client: client.to_owned(),
                topic: m.topic,
                payload: m.payload,
            })
            .collect()
    }

    /// A publish the plugin let through from `client` (already checked by
    /// [`crate::decide::publish`]). Twin requests are answered only to a device subscribed to
    /// `$iothub/twin/res/#`, as IoT Hub requires; a reported patch is applied either way.
    pub fn device_publish(
        &mut self,
        client: &str,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Vec<Out<R>> {
        let answer = self.subscribed(client, Sub::TwinResponses);
        if let Some(rest) = topic.strip_prefix("$iothub/twin/GET/") {
            if !answer {
                return Vec::new();
            }
            let rid = query(rest, "$rid").unwrap_or("");
            let body = self.twin(client).device_view();
            return vec![Out::Publish {
                client: client.to_owned(),
                topic: format!("$iothub/twin/res/200/?$rid={rid}"),
                payload: body.to_string().into_bytes(),
            }];
        }
        if let Some(rest) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/") {
            let rid = query(rest, "$rid").unwrap_or("");
            let patch = serde_json::from_slice::<Value>(payload);
            let status_out = |status: u16, extra: String| Out::Publish {
                client: client.to_owned(),
                topic: format!("$iothub/twin/res/{status}/?$rid={rid}{extra}"),
                payload: Vec::new(),
            };
            let mut out = match patch {
                Ok(Value::Object(p)) if payload.len() <= MAX_TWIN_BYTES => {
                    let twin = self.twins.entry(client.to_owned()).or_default();
                    merge(&mut twin.reported, &p);
                    twin.reported_version += 1;
                    let v = twin.reported_version;
                    vec![status_out(204, format!("&$version={v}")), Out::Save]
                }
                Ok(Value::Object(_)) => vec![status_out(413, String::new())],
                _ => vec![status_out(400, String::new())],
            };
            if !answer {
                out.retain(|o| matches!(o, Out::Save));
            }
            return out;
        }
        if let Some(rest) = topic.strip_prefix("$iothub/methods/res/") {
            let (status, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let id = query(tail, "$rid").and_then(|r| r.parse::<u64>().ok());
            // Only the device the call went to can answer it.
            let mine = id.filter(|id| self.calls.get(id).is_some_and(|c| c.client == client));
            let Some(call) = mine.and_then(|id| self.calls.remove(&id)) else {
                return Vec::new();
            };
            let status: i64 = status.parse().unwrap_or(500);
            return vec![Out::Reply(
                call.reply,
                json!({"status": status, "payload": payload_value(payload)}),
            )];
        }
        if let Some(idx) = topic.find("/messages/events") {
            let props = topic[idx + "/messages/events".len()..].trim_start_matches('/');
            let mut properties = topic_properties(props);
            if retain {
                // As IoT Hub marks a message sent with the retain flag.
                properties.insert("mqtt-retain".into(), json!("true"));
            }
            return vec![Out::Watch(json!({
                "device": client,
                "properties": properties,
                "payload": payload_value(payload),
            }))];
        }
        Vec::new()
    }

    /// A service request for a known identity `R` is answered through.
    pub fn request(&mut self, req: Request, reply: R, now: u64) -> Vec<Out<R>> {
        match req {
            Request::C2d {
                device,
                properties,
                payload,
                ttl_secs,
            } => {
                if device.contains('/') {
                    return vec![Out::Reply(
                        reply,
                        error(
                            400,
                            400004,
                            "IoT Hub sends cloud-to-device messages to devices, not to modules",
                        ),
                    )];
                }
                if payload.len() > MAX_C2D_BYTES {
                    return vec![Out::Reply(
                        reply,
                        error(
                            400,
                            400004,
                            format!(
                                "message is {} bytes; IoT Hub's limit for cloud-to-device messages is {MAX_C2D_BYTES} (64 KB)",
                                payload.len()
                            ),
                        ),
                    )];
                }
                let ttl = ttl_secs.clamp(1, MAX_C2D_TTL_SECS);
                let queue = self.c2d.entry(device.clone()).or_default();
                queue.retain(|m| m.expires > now);
                if queue.len() >= MAX_C2D_PENDING {
                    return vec![Out::Reply(
                        reply,
                        error(
                            403,
                            403004,
                            format!(
                                "\"{device}\" already has {MAX_C2D_PENDING} cloud-to-device messages pending (IoT Hub's limit)"
                            ),
                        ),
                    )];
                }
                let id = self.next_id;
                self.next_id += 1;
                let to = format!("/devices/{device}/messages/devicebound");
                let mut props = vec![
                    ("$.mid".to_owned(), format!("c2d-{id}")),
                    ("$.to".to_owned(), to.clone()),
                ];
                props.extend(properties);
                let level: Vec<String> = props
                    .iter()
                    .map(|(k, v)| format!("{}={}", url_encode_string(k), url_encode_string(v)))
                    .collect();
                let topic = format!("{}/{}", &to[1..], level.join("&"));
                queue.push_back(C2dMessage {
                    topic,
                    payload,
                    expires: now + ttl,
                });
                let pending = queue.len();
                let mut out = vec![Out::Reply(
                    reply,
                    json!({"status": 200, "messageId": format!("c2d-{id}"), "pending": pending}),
                )];
                if self.subscribed(&device, Sub::C2d) {
                    out.extend(self.flush_c2d(&device, now));
                }
                out
            }
            Request::Invoke {
                device,
                method,
                payload,
                timeout_secs,
            } => {
                if !self.subscribed(&device, Sub::Methods) {
                    return vec![Out::Reply(
                        reply,
                        error(
                            404,
                            404103,
                            format!(
                                "\"{device}\" is not connected or not subscribed to direct methods"
                            ),
                        ),
                    )];
                }
                let id = self.next_id;
                self.next_id += 1;
                let timeout = timeout_secs.clamp(METHOD_TIMEOUT_SECS.0, METHOD_TIMEOUT_SECS.1);
                self.calls.insert(
                    id,
                    Call {
                        client: device.clone(),
                        reply,
                        deadline: now + timeout,
                    },
                );
                vec![Out::Publish {
                    client: device,
                    topic: format!("$iothub/methods/POST/{method}/?$rid={id}"),
                    payload: payload.to_string().into_bytes(),
                }]
            }
            Request::TwinGet { device } => {
                let body = self.twin(&device).service_view(&device);
                vec![Out::Reply(reply, json!({"status": 200, "twin": body}))]
            }
            Request::TwinPatch { device, desired } => {
                let Value::Object(patch) = desired else {
                    return vec![Out::Reply(
                        reply,
                        error(400, 400004, "desired properties must be a JSON object"),
                    )];
                };
                let twin = self.twins.entry(device.clone()).or_default();
                merge(&mut twin.desired, &patch);
                twin.desired_version += 1;
                let version = twin.desired_version;
                let body = twin.service_view(&device);
                let mut out = vec![
                    Out::Save,
                    Out::Reply(reply, json!({"status": 200, "twin": body})),
                ];
                if self.subscribed(&device, Sub::Desired) {
                    let mut p = patch;
                    p.insert("$version".into(), json!(version));
                    out.push(Out::Publish {
                        client: device,
                        topic: format!("$iothub/twin/PATCH/properties/desired/?$version={version}"),
                        payload: Value::Object(p).to_string().into_bytes(),
                    });
                }
                out
            }
        }
    }

    /// Calls past their deadline are answered 504; expired C2D messages are dropped.
    pub fn tick(&mut self, now: u64) -> Vec<Out<R>> {
        let late: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| now >= c.deadline)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in late {
            if let Some(call) = self.calls.remove(&id) {
                out.push(Out::Reply(
                    call.reply,
                    error(
                        504,
                        504101,
                        format!("\"{}\" did not answer the method in time", call.client),
                    ),
                ));
            }
        }
        for q in self.c2d.values_mut() {
            q.retain(|m| m.expires > now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publishes(out: &[Out<u32>]) -> Vec<(&str, &str, &[u8])> {
        out.iter()
            .filter_map(|o| match o {
                Out::Publish {
                    client,
                    topic,
                    payload,
                } => Some((client.as_str(), topic.as_str(), payload.as_slice())),
                _ => None,
            })
            .collect()
    }

    fn replies(out: &[Out<u32>]) -> Vec<(u32, &Value)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Reply(r, v) => Some((*r, v)),
                _ => None,
            })
            .collect()
    }

    fn c2d(device: &str, text: &str) -> Request {
        Request::C2d {
            device: device.into(),
            properties: vec![("k".into(), "v w".into())],
            payload: text.as_bytes().to_vec(),
            ttl_secs: 60,
        }
    }

    #[test]
    fn c2d_waits_for_the_subscription_and_goes_only_to_its_device() {
        let mut s = Service::<u32>::new(None);
        s.connected("d1", false, 100);
        s.connected("d2", false, 100);
        let out = s.request(c2d("d1", "hi"), 1, 100);
        assert_eq!(replies(&out)[0].1["status"], 200);
        assert!(publishes(&out).is_empty());
        assert!(s
            .subscribe("d2", "devices/d2/messages/devicebound/#", 100)
            .is_empty());
        let out = s.subscribe("d1", "devices/d1/messages/devicebound/#", 100);
        let p = publishes(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "d1");
        assert!(
            p[0].1
                .starts_with("devices/d1/messages/devicebound/%24.mid=c2d-1&%24.to=")
                && p[0].1.ends_with("&k=v%20w"),
            "{}",
            p[0].1
        );
        assert_eq!(p[0].2, b"hi");
        // Subscribed: delivered at once.
        let out = s.request(c2d("d1", "again"), 2, 100);
        assert_eq!(publishes(&out).len(), 1);
        // Disconnected: queued; a persistent session gets it when it comes back, a clean one
        // once it subscribes again.
        s.disconnected("d1");
        assert!(publishes(&s.request(c2d("d1", "later"), 3, 100)).is_empty());
        assert_eq!(publishes(&s.connected("d1", true, 100)).len(), 1);
        s.disconnected("d1");
        s.request(c2d("d1", "later still"), 4, 100);
        assert!(publishes(&s.connected("d1", false, 100)).is_empty());
        assert_eq!(s.pending("d1"), 1);
    }

    #[test]
    fn c2d_queue_is_bounded_and_expires() {
        let mut s = Service::<u32>::new(None);
        for i in 0..MAX_C2D_PENDING {
            let out = s.request(c2d("d1", "x"), i as u32, 100);
            assert_eq!(replies(&out)[0].1["status"], 200);
        }
        let out = s.request(c2d("d1", "x"), 99, 100);
        assert_eq!(replies(&out)[0].1["status"], 403);
        assert_eq!(s.pending("d1"), MAX_C2D_PENDING);
        s.tick(161);
        assert_eq!(s.pending("d1"), 0);
        let to_module = Request::C2d {
            device: "d1/m1".into(),
            properties: vec![],
            payload: b"x".to_vec(),
            ttl_secs: 60,
        };
        assert_eq!(replies(&s.request(to_module, 1, 100))[0].1["status"], 400);
        let big = Request::C2d {
            device: "d1".into(),
            properties: vec![],
            payload: vec![b'x'; MAX_C2D_BYTES + 1],
            ttl_secs: 60,
        };
        assert_eq!(replies(&s.request(big, 1, 100))[0].1["status"], 400);
    }

    #[test]
    fn methods_go_to_their_device_and_only_it_answers() {
        let mut s = Service::<u32>::new(None);
        let call = |m: &str| Request::Invoke {
            device: "d1".into(),
            method: m.into(),
            payload: json!({"a": 1}),
            timeout_secs: 10,
        };
        let out = s.request(call("reboot"), 1, 100);
        assert_eq!(replies(&out)[0].1["status"], 404);
        s.connected("d1", false, 100);
        s.subscribe("d1", "$iothub/methods/POST/#", 100);
        let out = s.request(call("reboot"), 2, 100);
        let p = publishes(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "d1");
        let rid = p[0]
            .1
            .strip_prefix("$iothub/methods/POST/reboot/?$rid=")
            .unwrap();
        assert_eq!(p[0].2, br#"{"a":1}"#);
        // Another device cannot answer it.
        let topic = format!("$iothub/methods/res/200/?$rid={rid}");
        assert!(s.device_publish("d2", &topic, b"{}", false).is_empty());
        let out = s.device_publish("d1", &topic, br#"{"ok":true}"#, false);
        assert_eq!(
            replies(&out),
            vec![(2, &json!({"status": 200, "payload": {"ok": true}}))]
        );
        // Twice is nothing.
        assert!(s.device_publish("d1", &topic, b"{}", false).is_empty());
        s.request(call("slow"), 3, 100);
        assert!(s.tick(104).is_empty());
        let out = s.tick(110);
        assert_eq!(replies(&out)[0].0, 3);
        assert_eq!(replies(&out)[0].1["status"], 504);
        s.disconnected("d1");
        assert_eq!(replies(&s.request(call("x"), 4, 100))[0].1["status"], 404);
    }

    #[test]
    fn twin_versions_patches_and_persistence() {
        let dir = std::env::temp_dir().join(format!("tether-hub-svc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("twins.json");
        let _ = std::fs::remove_file(&file);
        let mut s = Service::<u32>::new(Some(file.clone()));
        s.connected("d1", false, 0);
        // Not subscribed to the responses: no answer (a reported patch still applies).
        assert!(s
            .device_publish("d1", "$iothub/twin/GET/?$rid=6", b"", false)
            .is_empty());
        s.subscribe("d1", "$iothub/twin/res/#", 0);
        let out = s.device_publish("d1", "$iothub/twin/GET/?$rid=7", b"", false);
        let p = publishes(&out);
        assert_eq!(p[0].1, "$iothub/twin/res/200/?$rid=7");
        let doc: Value = serde_json::from_slice(p[0].2).unwrap();
        assert_eq!(doc["desired"]["$version"], 1);
        let out = s.device_publish(
            "d1",
            "$iothub/twin/PATCH/properties/reported/?$rid=8",
            br#"{"fw":"1.0","x":{"y":1}}"#,
            false,
        );
        assert_eq!(
            publishes(&out)[0].1,
            "$iothub/twin/res/204/?$rid=8&$version=2"
        );
        let out = s.device_publish(
            "d1",
            "$iothub/twin/PATCH/properties/reported/?$rid=9",
            b"not json",
            false,
        );
        assert_eq!(publishes(&out)[0].1, "$iothub/twin/res/400/?$rid=9");
        // Desired: stored, and delivered once subscribed.
        let patch = |v: Value| Request::TwinPatch {
            device: "d1".into(),
            desired: v,
        };
        let out = s.request(patch(json!({"rate": 5})), 1, 0);
        assert!(publishes(&out).is_empty());
        s.subscribe("d1", "$iothub/twin/PATCH/properties/desired/#", 0);
        let out = s.request(patch(json!({"rate": null, "mode": "on"})), 2, 0);
        let p = publishes(&out);
        assert_eq!(p[0].1, "$iothub/twin/PATCH/properties/desired/?$version=3");
        assert_eq!(
            serde_json::from_slice::<Value>(p[0].2).unwrap(),
            json!({"rate": null, "mode": "on", "$version": 3})
        );
        let twin = s.twin("d1");
        assert_eq!(
            twin.desired,
            json!({"mode": "on"}).as_object().unwrap().clone()
        );
        s.save().unwrap();
        let again = Service::<u32>::new(Some(file.clone()));
        assert_eq!(again.twin("d1"), twin);
        assert_eq!(again.twin("d1").reported["x"], json!({"y": 1}));
        let view = twin.service_view("d1");
        assert_eq!(view["properties"]["reported"]["$version"], 2);
        assert_eq!(view["deviceId"], "d1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn telemetry_is_watched_with_its_properties() {
        let mut s = Service::<u32>::new(None);
        let out = s.device_publish(
            "d1",
            "devices/d1/messages/events/a=1&%24.ct=text%2Fplain",
            b"{\"t\":2}",
            false,
        );
        assert_eq!(
            out,
            vec![Out::Watch(
                json!({"device": "d1", "properties": {"a": "1", "$.ct": "text/plain"}, "payload": {"t": 2}})
            )]
        );
        let out = s.device_publish("d1", "devices/d1/messages/events/", b"x", true);
        assert_eq!(
            out,
            vec![Out::Watch(
                json!({"device": "d1", "properties": {"mqtt-retain": "true"}, "payload": "x"})
            )]
        );
    }
}
