//! `tether hub --web`: the web view in a real browser. Headless Debian Chromium, driven by
//! Selenium (from pip) through Debian's chromedriver, opens the page of a running stand-in;
//! devices written with the official Azure IoT Python SDK send telemetry, answer methods and
//! get desired patches and cloud-to-device messages sent from the page
//! (`tests/web/browser.py`). Screenshots of each view go to `target/web-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (apt) and a venv `target/web-venv` with `selenium`
//! and `azure-iot-device` (made on first use; `.ci/setup` makes it too).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::hub::{sas_device, Hub, HOST};

const KEY1: &str = "a2V5IG9mIHNlbnNvci0xLCBmb3IgdGhlIHdlYiB0ZXN0IQ==";
const KEY2: &str = "a2V5IG9mIHNlbnNvci0yLCBmb3IgdGhlIHdlYiB0ZXN0IQ==";

/// The venv's python with selenium and azure-iot-device, made when missing.
fn python() -> PathBuf {
    common::python_venv(
        "web-venv",
        "selenium, azure.iot.device, paho.mqtt.client",
        &["selenium", "azure-iot-device"],
        "Selenium and the Azure IoT device SDK",
    )
}

#[test]
fn web_view_shows_devices_telemetry_and_drives_methods_twins_c2d_and_the_registry() {
    common::require("chromium", "chromium");
    common::require("chromedriver", "chromium-driver");
    let py = python();
    let registry = format!(
        r#"{{"hostName": "{HOST}", "devices": [{}, {}]}}"#,
        sas_device("sensor-1", "enabled", KEY1, ""),
        sas_device("sensor-2", "enabled", KEY2, "")
    );
    let hub = Hub::start_full(&registry, |_| {}, &["--web", "0"]);
    let login = hub
        .ready
        .split(' ')
        .find_map(|w| w.strip_prefix("web="))
        .unwrap_or_else(|| panic!("no web= in the ready line {:?}", hub.ready))
        .to_owned();
    assert!(login.starts_with("http://127.0.0.1:"), "{login}");
    let token = std::fs::read_to_string(hub.dir.join("web-token")).unwrap();
    assert!(login.ends_with(&format!("/login?token={token}")), "{login}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(hub.dir.join("web-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "web-token is readable by others: {mode:o}");

    let shots = common::root().join("target/web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new(py)
        .arg(common::root().join("tests/web/browser.py"))
        .args([&login, &hub.ca(), &hub.sas.to_string(), HOST, KEY1])
        .arg(&shots)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    println!("{out}");
    assert!(
        status.is_some_and(|s| s.success()) && out.contains("browser: all checks passed"),
        "the browser test failed ({status:?}):\n{out}\n{err}\nhub log:\n{}",
        hub.log()
    );
    for view in ["devices", "telemetry", "twin", "method", "c2d", "registry"] {
        assert!(
            shots.join(format!("{view}.png")).is_file(),
            "no screenshot of {view}"
        );
    }
    // No key reached the hub's log.
    let log = hub.log();
    for key in [KEY1, KEY2, token.as_str()] {
        assert!(!log.contains(key), "a secret is in the hub's log");
    }
}

const SERVICE_KEY: &str = "c2VydmljZSBwb2xpY3kga2V5IG9mIHRoZSB3ZWIgdGVzdA==";

fn service_token(policy: &str) -> String {
    use tether::auth::sas::{write_token, Resource, SasKey, MAX_TOKEN_LEN};
    let key = SasKey::from_base64(SERVICE_KEY).unwrap();
    let mut buf = [0u8; MAX_TOKEN_LEN];
    write_token(
        &Resource::parse(HOST).unwrap(),
        &key,
        Some(policy),
        common::hub::now() + 600,
        &mut buf,
    )
    .unwrap()
    .to_owned()
}

/// One HTTP(S) call with Python's own client (tests/hub_service/rest_call.py): (status, body).
fn call(
    py: &Path,
    hub: &Hub,
    url: &str,
    method: &str,
    auth: &str,
    body: Option<&str>,
) -> (u64, serde_json::Value) {
    let mut cmd = Command::new(py);
    cmd.arg(common::root().join("tests/hub_service/rest_call.py"))
        .args([method, url])
        .arg(hub.ca())
        .arg(auth);
    if let Some(b) = body {
        cmd.arg(b);
    }
    let out = cmd.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("call failed: {}", String::from_utf8_lossy(&out.stderr)));
    (v["status"].as_u64().unwrap(), v["body"].clone())
}

#[test]
fn registry_routes_need_a_service_token_on_https_and_the_session_on_the_web_port() {
    let py = python();
    let registry = format!(
        r#"{{"hostName": "{HOST}", "devices": [{}],
            "authorizationPolicies": [
              {{"keyName": "service", "primaryKey": "{SERVICE_KEY}", "rights": "ServiceConnect"}},
              {{"keyName": "reader", "primaryKey": "{SERVICE_KEY}", "rights": "RegistryRead"}}]}}"#,
        sas_device("sensor-1", "enabled", KEY1, KEY2)
    );
    let hub = Hub::start_full(&registry, |_| {}, &["--web", "127.0.0.1:0"]);
    let https = |path: &str| {
        format!(
            "https://localhost:{}{path}?api-version=2021-04-12",
            hub.service
        )
    };
    let token = service_token("service");

    // HTTPS: no token, or a policy without ServiceConnect, is 401 on every route.
    for (auth, what) in [
        ("", "no token"),
        (&service_token("reader")[..], "RegistryRead only"),
    ] {
        for (method, path) in [
            ("GET", "/devices"),
            ("GET", "/devices/sensor-1"),
            ("GET", "/twins/sensor-1"),
        ] {
            let (status, body) = call(&py, &hub, &https(path), method, auth, None);
            assert_eq!(status, 401, "{what} {method} {path}: {body}");
            assert!(!body.to_string().contains(KEY1));
        }
    }
    // The list names status, authentication and connection, and no key.
    let (status, list) = call(&py, &hub, &https("/devices"), "GET", &token, None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["deviceId"], "sensor-1");
    assert_eq!(list[0]["status"], "enabled");
    assert_eq!(list[0]["authentication"], "sas");
    assert_eq!(list[0]["connectionState"], "Disconnected");
    assert!(!list.to_string().contains(KEY1) && !list.to_string().contains(KEY2));
    // Adding a device generates two 32-byte keys, written to the registry file; the answer
    // holds none; GET of the one identity shows them.
    let (status, added) = call(
        &py,
        &hub,
        &https("/devices/new-1"),
        "PUT",
        &token,
        Some(r#"{"status":"enabled"}"#),
    );
    assert_eq!(status, 200, "{added}");
    assert_eq!(
        added["authentication"]["symmetricKey"],
        serde_json::json!({})
    );
    let (status, one) = call(&py, &hub, &https("/devices/new-1"), "GET", &token, None);
    assert_eq!(status, 200, "{one}");
    let primary = one["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let secondary = one["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .unwrap();
    assert_eq!(
        tether::auth::sas::SasKey::from_base64(&primary)
            .unwrap()
            .to_base64()
            .len(),
        44
    );
    assert_ne!(primary, secondary);
    let file = std::fs::read_to_string(&hub.registry).unwrap();
    assert!(
        file.contains(&primary),
        "the key is not in the registry file"
    );
    // Rotation replaces exactly that key.
    let (status, _) = call(
        &py,
        &hub,
        &https("/devices/new-1/keys/primary"),
        "POST",
        &token,
        None,
    );
    assert_eq!(status, 200);
    let file = std::fs::read_to_string(&hub.registry).unwrap();
    assert!(!file.contains(&primary) && file.contains(secondary));
    // Bad input: an unknown status, an invalid id, an unknown device.
    let (status, _) = call(
        &py,
        &hub,
        &https("/devices/new-1"),
        "PUT",
        &token,
        Some(r#"{"status":"gone"}"#),
    );
    assert_eq!(status, 400);
    let (status, _) = call(
        &py,
        &hub,
        &https("/devices/bad%20id"),
        "PUT",
        &token,
        Some("{}"),
    );
    assert_eq!(status, 400);
    let (status, _) = call(
        &py,
        &hub,
        &https("/devices/nobody/keys/primary"),
        "POST",
        &token,
        None,
    );
    assert_eq!(status, 404);

    // The web port: without the session cookie, the API is refused; a wrong login token too.
    let web = hub
        .ready
        .split(' ')
        .find_map(|w| w.strip_prefix("web="))
        .unwrap();
    let base = web.split("/login").next().unwrap();
    for path in ["/devices", "/twins/sensor-1", "/events"] {
        let (status, body) = call(&py, &hub, &format!("{base}{path}"), "GET", "", None);
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, _) = call(
        &py,
        &hub,
        &format!("{base}/login?token=wrong"),
        "GET",
        "",
        None,
    );
    assert_eq!(status, 401);
    // With the session: a change from another origin (another local page is same-site and
    // would carry the cookie) is refused; from the page's own origin it is carried out.
    common::require("curl", "curl");
    let session = std::fs::read_to_string(hub.dir.join("web-token")).unwrap();
    let put = |origin: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["-b", &format!("tether_session={session}")])
            .args([
                "-H",
                &format!("Origin: {origin}"),
                "-d",
                r#"{"status":"disabled"}"#,
            ])
            .arg(format!("{base}/devices/sensor-1"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(put("http://127.0.0.1:1"), "403");
    let in_file = || {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&hub.registry).unwrap()).unwrap();
        let d = doc["devices"].as_array().unwrap().iter();
        d.filter(|d| d["deviceId"] == "sensor-1")
            .map(|d| d["status"].clone())
            .next()
            .unwrap()
    };
    assert_eq!(in_file(), "enabled");
    assert_eq!(put(base), "200");
    assert_eq!(in_file(), "disabled");
    // The plugin reads the registry file again: the list shows sensor-1 disabled.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, list) = call(&py, &hub, &https("/devices"), "GET", &token, None);
        assert_eq!(status, 200, "{list}");
        let sensor = list
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["deviceId"] == "sensor-1");
        if sensor.unwrap()["status"] == "disabled" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sensor-1 never shown disabled: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!hub.log().contains(&primary) && !hub.log().contains(KEY1));
}
