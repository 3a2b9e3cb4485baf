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
    let venv = common::root().join("target/web-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import selenium, azure.iot.device, paho.mqtt.client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready(&py) {
        common::require("python3", "python3 python3-venv");
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).output().unwrap();
        assert!(made.status.success(), "cannot make a venv (install python3-venv)");
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "selenium", "azure-iot-device"])
            .output()
            .unwrap();
        assert!(
            pip.status.success() && ready(&py),
            "this test needs Selenium and the Azure IoT device SDK: `pip install selenium \
             azure-iot-device` into {} failed (run .ci/setup): {}",
            venv.display(),
            String::from_utf8_lossy(&pip.stderr)
        );
    }
    py
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
    let mode = std::fs::metadata(hub.dir.join("web-token")).unwrap().permissions().mode();
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
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    println!("{out}");
    assert!(
        status.is_some_and(|s| s.success()) && out.contains("browser: all checks passed"),
        "the browser test failed ({status:?}):\n{out}\n{err}\nhub log:\n{}",
        hub.log()
    );
    for view in ["devices", "telemetry", "twin", "method", "c2d", "registry"] {
        assert!(shots.join(format!("{view}.png")).is_file(), "no screenshot of {view}");
    }
    // No key reached the hub's log.
    let log = hub.log();
    for key in [KEY1, KEY2, token.as_str()] {
        assert!(!log.contains(key), "a secret is in the hub's log");
    }
}
