// tether hub's web view. Talks only to the stand-in's service REST API on this origin (the
// session cookie set by /login authenticates it) and to /events (telemetry, server-sent).
"use strict";

const $ = (id) => document.getElementById(id);
const API = "api-version=2021-04-12";

// The hub's error body: {"Message": "{\"errorCode\":..,\"message\":..}"}; answers its text.
function hubMessage(body) {
  if (body && typeof body.Message === "string") {
    try { return JSON.parse(body.Message).message || body.Message; } catch (e) { return body.Message; }
  }
  return body === undefined ? "" : JSON.stringify(body);
}

// Calls the API; answers {status, body}. A network failure is status 0 with its reason.
async function api(method, path, body) {
  const sep = path.includes("?") ? "&" : "?";
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    const r = await fetch(path + sep + API, init);
    const text = await r.text();
    let parsed;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = text; }
    if (r.status === 401) banner("Not signed in to the stand-in: " + hubMessage(parsed));
    return { status: r.status, body: parsed };
  } catch (e) {
    return { status: 0, body: { Message: JSON.stringify({ message: "the stand-in is unreachable: " + e.message }) } };
  }
}

function banner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

function show(el, ok, text) {
  el.textContent = text;
  el.className = "status " + (ok ? "ok" : "error");
}

function failure(r) {
  return (r.status ? r.status + ": " : "") + (hubMessage(r.body) || "no answer");
}

// JSON typed into a form: answers [value] or shows why it is refused and answers null.
function parseJson(text, what, statusEl, wantObject) {
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    show(statusEl, false, what + " is not valid JSON: " + e.message + " (not sent)");
    return null;
  }
  if (wantObject && (v === null || typeof v !== "object" || Array.isArray(v))) {
    show(statusEl, false, what + " must be a JSON object (not sent)");
    return null;
  }
  return [v];
}

function deviceId(statusEl) {
  const id = $("device").value.trim();
  if (!id) show(statusEl, false, "choose a device first (the Device field at the top)");
  return id;
}

const enc = encodeURIComponent;
const time = (unix) => (unix ? new Date(unix * 1000).toLocaleTimeString() : "");
function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) {
    const s = document.createElement("span");
    s.className = "badge " + cls;
    s.textContent = text;
    td.appendChild(s);
  } else {
    td.textContent = text;
  }
  tr.appendChild(td);
  return td;
}

// ---- tabs ----
let current = "devices";
function select(view) {
  current = view;
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  document.querySelectorAll(".view").forEach((s) => { s.hidden = s.id !== "view-" + view; });
  if (view === "devices" || view === "registry") refreshDevices();
  if (view === "twin" && $("device").value.trim()) loadTwin();
}
document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => select(b.dataset.view)));

// ---- devices (and the registry table, from the same list) ----
let devices = [];
let shown = "";
let picked = false;
async function refreshDevices() {
  const r = await api("GET", "/devices");
  if (r.status !== 200) {
    show($("registry-status"), false, failure(r));
    return;
  }
  banner("");
  // Tables are rebuilt only when something changed (a button stays where it was clicked).
  const text = JSON.stringify(r.body);
  if (text === shown) return;
  shown = text;
  devices = r.body;
  const ids = devices.map((d) => (d.moduleId ? d.deviceId + "/" + d.moduleId : d.deviceId));
  const list = $("device-ids");
  list.replaceChildren(...ids.map((id) => Object.assign(document.createElement("option"), { value: id })));
  const tsel = $("telemetry-device");
  const chosen = tsel.value;
  tsel.replaceChildren(Object.assign(document.createElement("option"), { value: "", textContent: "all devices" }),
    ...ids.map((id) => Object.assign(document.createElement("option"), { value: id, textContent: id })));
  tsel.value = ids.includes(chosen) ? chosen : "";
  // The first list picks a device once; later the field is the user's, even when empty.
  if (!picked && ids.length) {
    picked = true;
    if (!$("device").value) $("device").value = ids[0];
  }

  const body = $("devices-table").tBodies[0];
  body.replaceChildren();
  devices.forEach((d, i) => {
    const tr = document.createElement("tr");
    tr.id = "device-row-" + ids[i];
    cell(tr, ids[i]);
    cell(tr, d.status, d.status);
    cell(tr, d.authentication);
    const connected = d.connectionState === "Connected";
    cell(tr, connected ? "connected" : "disconnected", connected ? "connected" : "disconnected");
    cell(tr, time(d.connectedSince));
    cell(tr, time(d.lastActivityTime));
    cell(tr, d.lastTlsVerdict || "");
    cell(tr, String(d.cloudToDeviceMessageCount));
    body.appendChild(tr);
  });

  const reg = $("registry-table").tBodies[0];
  reg.replaceChildren();
  devices.forEach((d, i) => {
    const tr = document.createElement("tr");
    tr.id = "registry-row-" + ids[i];
    cell(tr, ids[i]);
    cell(tr, d.authentication);
    cell(tr, d.status, d.status);
    const td = cell(tr, "");
    if (!d.moduleId) {
      const button = (label, cls, fn) => {
        const b = document.createElement("button");
        b.textContent = label;
        b.className = cls;
        b.addEventListener("click", fn);
        td.appendChild(b);
      };
      const other = d.status === "enabled" ? "disabled" : "enabled";
      button(d.status === "enabled" ? "Disable" : "Enable", "toggle", () => setStatus(d.deviceId, other));
      if (d.authentication === "sas") {
        button("Rotate primary key", "rotate-primary", () => rotate(d.deviceId, "primary"));
        button("Rotate secondary key", "rotate-secondary", () => rotate(d.deviceId, "secondary"));
        button("Show connection string", "show-secret", () => showConnectionString(d.deviceId));
      }
    }
    reg.appendChild(tr);
  });
}

// ---- registry ----
async function setStatus(id, status) {
  const r = await api("PUT", "/devices/" + enc(id), { status });
  show($("registry-status"), r.status === 200, r.status === 200 ? id + " is " + status : failure(r));
  refreshDevices();
}
async function rotate(id, which) {
  const r = await api("POST", "/devices/" + enc(id) + "/keys/" + which);
  show($("registry-status"), r.status === 200,
    r.status === 200 ? id + ": new " + which + " key (devices using the old one are refused at their next connection)" : failure(r));
  if (!$("registry-secret").hidden && $("registry-secret-id").textContent === id) showConnectionString(id);
}
async function showConnectionString(id) {
  const r = await api("GET", "/devices/" + enc(id));
  if (r.status !== 200) {
    show($("registry-status"), false, failure(r));
    return;
  }
  const key = r.body.authentication && r.body.authentication.symmetricKey && r.body.authentication.symmetricKey.primaryKey;
  $("registry-secret-id").textContent = id;
  $("registry-connection-string").textContent =
    "HostName=" + r.body.hostName + ";DeviceId=" + id + ";SharedAccessKey=" + key;
  $("registry-secret").hidden = false;
}
$("registry-secret-hide").addEventListener("click", () => {
  $("registry-connection-string").textContent = "";
  $("registry-secret").hidden = true;
});
$("registry-add").addEventListener("click", async () => {
  const id = $("registry-new-id").value.trim();
  if (!id) return show($("registry-status"), false, "type the new device's id");
  const r = await api("PUT", "/devices/" + enc(id), { status: "enabled" });
  show($("registry-status"), r.status === 200, r.status === 200 ? "added " + id + " (SAS, keys generated)" : failure(r));
  refreshDevices();
});

// ---- telemetry ----
let source = null;
let paused = false;
let arrivals = [];
let hidden = 0;
function matches(li) {
  const f = $("telemetry-filter").value.trim().toLowerCase();
  return !f || li.textContent.toLowerCase().includes(f);
}
function listen() {
  if (source) source.close();
  const d = $("telemetry-device").value;
  source = new EventSource("/events" + (d ? "?device=" + enc(d) : ""));
  source.onopen = () => { $("telemetry-state").textContent = "live"; };
  source.onerror = () => { $("telemetry-state").textContent = "reconnecting..."; };
  source.onmessage = (ev) => {
    arrivals.push(Date.now());
    if (paused) { hidden++; $("telemetry-state").textContent = "paused (" + hidden + " not shown)"; return; }
    const m = JSON.parse(ev.data);
    const li = document.createElement("li");
    li.className = "message";
    const name = document.createElement("span");
    name.className = "device-name";
    name.textContent = m.device;
    const props = document.createElement("span");
    props.className = "props";
    props.textContent = " " + Object.entries(m.properties || {}).map(([k, v]) => k + "=" + v).join(" ");
    const payload = document.createElement("span");
    payload.className = "payload";
    payload.textContent = " " + (typeof m.payload === "string" ? m.payload : JSON.stringify(m.payload));
    li.append(new Date().toLocaleTimeString() + " ", name, payload, props);
    li.hidden = !matches(li);
    const list = $("telemetry-list");
    list.prepend(li);
    while (list.children.length > 500) list.lastChild.remove();
  };
}
setInterval(() => {
  const now = Date.now();
  arrivals = arrivals.filter((t) => now - t < 10000);
  $("telemetry-rate").textContent = (arrivals.length / 10).toFixed(1) + " msg/s";
}, 1000);
$("telemetry-device").addEventListener("change", listen);
$("telemetry-filter").addEventListener("input", () => {
  document.querySelectorAll("#telemetry-list li").forEach((li) => { li.hidden = !matches(li); });
});
$("telemetry-pause").addEventListener("click", () => {
  paused = !paused;
  hidden = 0;
  $("telemetry-pause").textContent = paused ? "Resume" : "Pause";
  $("telemetry-state").textContent = paused ? "paused" : "live";
});
$("telemetry-clear").addEventListener("click", () => $("telemetry-list").replaceChildren());

// ---- twin ----
async function loadTwin() {
  const st = $("twin-status");
  const id = deviceId(st);
  if (!id) return;
  const r = await api("GET", "/twins/" + enc(id));
  if (r.status !== 200) {
    $("twin-desired").textContent = "";
    $("twin-reported").textContent = "";
    $("twin-desired-version").textContent = "";
    $("twin-reported-version").textContent = "";
    return show(st, false, failure(r));
  }
  const p = r.body.properties || {};
  $("twin-desired").textContent = JSON.stringify(p.desired, null, 2);
  $("twin-reported").textContent = JSON.stringify(p.reported, null, 2);
  $("twin-desired-version").textContent = "$version " + (p.desired || {}).$version;
  $("twin-reported-version").textContent = "$version " + (p.reported || {}).$version;
  show(st, true, "twin of " + id);
}
$("twin-load").addEventListener("click", loadTwin);
$("twin-send").addEventListener("click", async () => {
  const st = $("twin-status");
  const patch = parseJson($("twin-patch").value, "The desired patch", st, true);
  if (!patch) return;
  const id = deviceId(st);
  if (!id) return;
  const r = await api("PATCH", "/twins/" + enc(id), { properties: { desired: patch[0] } });
  if (r.status !== 200) return show(st, false, failure(r));
  await loadTwin();
  show(st, true, "desired patch sent to " + id + " ($version " + r.body.properties.desired.$version + ")");
});

// ---- direct method ----
$("method-invoke").addEventListener("click", async () => {
  const st = $("method-status");
  $("method-result").textContent = "";
  const payload = parseJson($("method-payload").value, "The payload", st, false);
  if (!payload) return;
  const id = deviceId(st);
  if (!id) return;
  const name = $("method-name").value.trim();
  if (!name) return show(st, false, "type the method's name");
  const timeout = parseInt($("method-timeout").value, 10) || 30;
  show(st, true, "invoking " + name + " on " + id + " (up to " + timeout + " s)...");
  const r = await api("POST", "/twins/" + enc(id) + "/methods",
    { methodName: name, payload: payload[0], responseTimeoutInSeconds: timeout });
  if (r.status !== 200) return show(st, false, failure(r));
  show(st, r.body.status >= 200 && r.body.status < 300, "device answered status " + r.body.status);
  $("method-result").textContent = JSON.stringify(r.body.payload, null, 2);
});

// ---- cloud-to-device ----
$("c2d-send").addEventListener("click", async () => {
  const st = $("c2d-status");
  const id = deviceId(st);
  if (!id) return;
  const properties = {};
  for (const line of $("c2d-props").value.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at < 1) return show(st, false, "property line \"" + line + "\" is not K=V (not sent)");
    properties[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  const r = await api("POST", "/devices/" + enc(id) + "/messages/devicebound", { body: $("c2d-body").value, properties });
  if (r.status !== 200) return show(st, false, failure(r));
  show(st, true, "queued " + r.body.messageId + " for " + id + " (" + r.body.pending + " pending)");
  refreshDevices();
});

refreshDevices();
listen();
// The registry file is read again by the stand-in within about a second: keep both tables fresh.
setInterval(() => { if (current === "devices" || current === "registry") refreshDevices(); }, 1000);
