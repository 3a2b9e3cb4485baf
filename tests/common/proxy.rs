//! A real HTTP CONNECT proxy for tests: tinyproxy on 127.0.0.1, optionally with Basic
//! authentication, allowing CONNECT to the ports given (and refusing every other port).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require, temp_dir, wait_for_port};

/// A running tinyproxy, stopped when dropped.
pub struct Tinyproxy {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Tinyproxy {
    /// tinyproxy allowing CONNECT to `connect_ports` only, requiring `basic` (user,
    /// password) when given.
    pub fn start(connect_ports: &[u16], basic: Option<(&str, &str)>) -> Tinyproxy {
        require("tinyproxy", "tinyproxy");
        let dir = temp_dir("tinyproxy");
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nLogLevel Info\n\
             MaxClients 50\nLogFile \"{}\"\n",
            log.display()
        );
        for p in connect_ports {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        if let Some((user, password)) = basic {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let path = dir.join("tinyproxy.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        let mut proxy = Tinyproxy { child, port, log };
        if !wait_for_port(port, Duration::from_secs(10)) {
            let _ = proxy.child.kill();
            panic!("tinyproxy did not start:\n{}", proxy.log());
        }
        proxy
    }

    /// `http://[user:password@]127.0.0.1:PORT`.
    pub fn url(&self, basic: Option<(&str, &str)>) -> String {
        match basic {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The CONNECT requests tinyproxy logged (`CONNECT host:port`).
    pub fn connects(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("Request (file descriptor "))
            .filter_map(|(_, rest)| rest.split_once("): CONNECT "))
            .map(|(_, target)| target.trim_end_matches(" HTTP/1.1").to_owned())
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
