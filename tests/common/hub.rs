//! The local IoT Hub stand-in (`tether hub`) for tests: start it with a registry, connect
//! to it with mosquitto_pub/_sub, stop it with SIGTERM (so its mosquitto stops too).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{free_port, require, temp_dir};
use tether::auth::sas::{write_token, Resource, SasKey, MAX_TOKEN_LEN};

pub const HOST: &str = "test-hub.azure-devices.net";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(device: &str, key: &str, expiry: u64) -> String {
    let key = SasKey::from_base64(key).unwrap();
    let mut buf = [0u8; MAX_TOKEN_LEN];
    write_token(
        &Resource::device(HOST, device).unwrap(),
        &key,
        None,
        expiry,
        &mut buf,
    )
    .unwrap()
    .to_owned()
}

pub fn username(device: &str) -> String {
    format!("{HOST}/{device}/?api-version=2021-04-12")
}

pub fn sas_device(id: &str, status: &str, primary: &str, secondary: &str) -> String {
    format!(
        r#"{{"deviceId": "{id}", "status": "{status}", "authentication": {{"type": "sas",
            "symmetricKey": {{"primaryKey": "{primary}", "secondaryKey": "{secondary}"}}}}}}"#
    )
}

pub fn registry(cas: &[String], devices: &[String]) -> String {
    let cas: Vec<String> = cas.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        r#"{{"hostName": "{HOST}", "certificateAuthorities": [{}], "devices": [{}]}}"#,
        cas.join(", "),
        devices.join(",\n")
    )
}

/// A running `tether hub`, stopped with SIGTERM when dropped.
pub struct Hub {
    pub child: Child,
    pub dir: PathBuf,
    pub registry: PathBuf,
    pub sas: u16,
    pub x509: u16,
    /// The service REST API's HTTPS port (`service=` in the ready line).
    pub service: u16,
    pub log: PathBuf,
    /// The ready line `tether hub` printed.
    pub ready: String,
}

pub fn plugin_beside_cli() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_tether"))
        .parent()
        .unwrap()
        .join("libtether_hub.so");
    assert!(
        path.is_file(),
        "{} is missing: build the plugin first with `cargo build -p tether-hub` (.ci/test does)",
        path.display()
    );
    path
}

impl Hub {
    /// Starts `tether hub` with `registry_text`; `prepare` may add files to the hub's folder
    /// (such as `trusted/` certificates) before it starts.
    pub fn start_with(registry_text: &str, prepare: impl Fn(&Path)) -> Hub {
        Hub::start_full(registry_text, prepare, &[])
    }

    /// As `start_with`, with more `tether hub` arguments (such as `--web 0`). The ports are
    /// picked free just before the hub binds them; when another process took one in between
    /// (the hub says "Address already in use"), the hub is started again on fresh ports.
    pub fn start_full(registry_text: &str, prepare: impl Fn(&Path), extra: &[&str]) -> Hub {
        let mut attempt = 0;
        loop {
            match Hub::try_start_full(registry_text, &prepare, extra) {
                Ok(hub) => return hub,
                Err(log) if log.contains("Address already in use") && attempt < 3 => attempt += 1,
                Err(log) => panic!("tether hub did not get ready:\n{log}"),
            }
        }
    }

    /// One attempt of [`Hub::start_full`]: the hub, or its log when it did not get ready.
    pub fn try_start_full(
        registry_text: &str,
        prepare: impl FnOnce(&Path),
        extra: &[&str],
    ) -> Result<Hub, String> {
        require("mosquitto", "mosquitto");
        require("openssl", "openssl");
        plugin_beside_cli();
        let root = temp_dir("hub");
        let dir = root.join("hub");
        std::fs::create_dir_all(dir.join("trusted")).unwrap();
        prepare(&dir);
        let registry = root.join("registry.json");
        std::fs::write(&registry, registry_text).unwrap();
        let (sas, x509) = (free_port(), free_port());
        let log = root.join("hub.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["hub", "--registry"])
            .arg(&registry)
            .args(["--port", &sas.to_string(), "--x509-port", &x509.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("tether hub starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut hub = Hub {
            child,
            dir,
            registry,
            sas,
            x509,
            service: 0,
            log,
            ready: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let service = line
                    .strip_prefix(&format!("ready sas={sas} x509={x509} service="))
                    .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
                hub.service = service.split(' ').next().unwrap().parse().unwrap();
                hub.ready = line.clone();
            }
            Err(_) => return Err(hub.log()),
        }
        Ok(hub)
    }

    pub fn start(registry_text: &str) -> Hub {
        Hub::start_with(registry_text, |_| {})
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for `needle` in the broker's log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Replaces the registry file atomically (write, then rename).
    pub fn set_registry(&self, text: &str) {
        let tmp = self.registry.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.registry).unwrap();
    }

    pub fn ca(&self) -> String {
        self.dir.join("ca.pem").to_string_lossy().into_owned()
    }

    /// mosquitto_pub (or _sub) over TLS to the SAS port with `token`.
    pub fn sas_client(&self, tool: &str, client_id: &str, user: &str, token: &str) -> Command {
        require(tool, "mosquitto-clients");
        let mut cmd = Command::new(tool);
        cmd.args(["-h", "localhost", "-p", &self.sas.to_string(), "--cafile"])
            .arg(self.ca())
            .args(["-i", client_id, "-u", &username(user), "-P", token]);
        cmd
    }

    /// Publishes one QoS 1 message as `client_id` on its own telemetry topic.
    pub fn publish(&self, client_id: &str, token: &str) -> Output {
        self.sas_client("mosquitto_pub", client_id, client_id, token)
            .args([
                "-t",
                &format!("devices/{client_id}/messages/events/"),
                "-m",
                "hello",
                "-q",
                "1",
            ])
            .output()
            .unwrap()
    }

    /// Publishes once over the X.509 port with a client certificate.
    pub fn publish_x509(&self, client_id: &str, cert: &str, key: &str) -> Output {
        require("mosquitto_pub", "mosquitto-clients");
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &self.x509.to_string(), "--cafile"])
            .arg(self.ca())
            .args(["--cert", cert, "--key", key])
            .args(["-i", client_id, "-u", &username(client_id)])
            .args([
                "-t",
                &format!("devices/{client_id}/messages/events/"),
                "-m",
                "hello",
                "-q",
                "1",
            ])
            .output()
            .unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
