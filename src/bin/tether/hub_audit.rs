//! The stand-in's ClientHello audit: `tether hub` puts a small TCP relay on each public port
//! in front of mosquitto (which listens on an internal loopback port and terminates TLS).
//! The relay reads the device's first bytes (its ClientHello), logs one line with the
//! verdict IoT Hub's enforced policy would give, forwards those bytes unchanged and then
//! copies both directions until either side closes. mosquitto sees the relay's address, not
//! the device's; the audit line names the device's.
//!
//! Why a relay and not a mosquitto plugin: mosquitto hands plugins the connection only after
//! the TLS handshake, and OpenSSL has already consumed the hello; a relay sees the bytes as
//! they arrive, with no change to mosquitto or the plugin.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use tether::audit::{audit, read_client_hello, HelloError, Verdict};
use tether::{Code, Error, Result};

/// Binds `127.0.0.1:public` now (so a taken port fails before mosquitto starts) and serves
/// it on a thread, relaying each connection to `127.0.0.1:backend`.
pub fn start(public: u16, backend: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", public)).map_err(|e| {
        Error::new(
            Code::Io,
            format!("cannot listen on 127.0.0.1:{public}: {e}"),
        )
    })?;
    std::thread::spawn(move || {
        for device in listener.incoming().flatten() {
            std::thread::spawn(move || relay(device, backend));
        }
    });
    Ok(())
}

/// One line for the log: `audit DEVICE sni=NAME VERDICT[: reason; reason]`.
fn audit_line(
    peer: &str,
    hello: &std::result::Result<tether::audit::ClientHello, HelloError>,
) -> String {
    match hello {
        Ok(h) => {
            let report = audit(h);
            let reasons: Vec<String> = report
                .findings
                .iter()
                .filter(|f| report.verdict != Verdict::WillFail || f.severity == Verdict::WillFail)
                .map(|f| format!("{} (fix: {})", f.problem, f.fix))
                .collect();
            let sni = h.sni.as_deref().unwrap_or("none");
            let mut line = format!("audit {peer} sni={sni} {}", report.verdict.name());
            if !reasons.is_empty() {
                line.push_str(&format!(": {}", reasons.join("; ")));
            }
            line
        }
        Err(e) => format!("audit {peer} unreadable hello: {e}"),
    }
}

/// Each relayed connection's verdict (`sni=NAME VERDICT[: reasons]`), by the relay's port
/// towards mosquitto; and each client id's verdict, once mosquitto has named the client on
/// that port (`note_client`). For the web view's devices list.
static BY_PORT: Mutex<Option<HashMap<u16, String>>> = Mutex::new(None);
static BY_CLIENT: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
/// More entries than this and a map starts again (a stand-in runs for hours, not years).
const KEEP: usize = 4096;

fn remember<K: std::hash::Hash + Eq>(map: &Mutex<Option<HashMap<K, String>>>, k: K, v: String) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    if map.len() >= KEEP {
        map.clear();
    }
    map.insert(k, v);
}

/// mosquitto named the client on the relay's port `port`: that connection's verdict is now
/// the client's last.
pub fn note_client(client_id: &str, port: u16) {
    let verdict = BY_PORT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|m| m.remove(&port));
    if let Some(v) = verdict {
        remember(&BY_CLIENT, client_id.to_owned(), v);
    }
}

/// The TLS verdict of the client's last connection, if one was seen.
pub fn last_verdict(client_id: &str) -> Option<String> {
    BY_CLIENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(client_id).cloned())
}

/// Reads mosquitto's log line `... New client connected from 127.0.0.1:PORT as ID (...`.
pub fn client_connected(line: &str) -> Option<(&str, u16)> {
    let rest = line.split_once("New client connected from ")?.1;
    let (addr, rest) = rest.split_once(" as ")?;
    let port = addr.rsplit_once(':')?.1.parse().ok()?;
    let id = rest.split(' ').next()?;
    Some((id, port))
}

fn relay(mut device: TcpStream, backend: u16) {
    let peer = device
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let _ = device.set_read_timeout(Some(Duration::from_secs(30)));
    let (hello, first) = read_client_hello(&mut device);
    let _ = device.set_read_timeout(None);
    let line = (hello != Err(HelloError::Empty)).then(|| audit_line(&peer, &hello));
    if let Some(line) = &line {
        eprintln!("{line}");
    }
    let Ok(mut broker) = TcpStream::connect(("127.0.0.1", backend)) else {
        return;
    };
    if let (Some(line), Ok(local)) = (line, broker.local_addr()) {
        let verdict = line
            .split_once(&format!("{peer} "))
            .map_or(line.as_str(), |(_, v)| v);
        remember(&BY_PORT, local.port(), verdict.to_owned());
    }
    let _ = broker.set_nodelay(true);
    let _ = device.set_nodelay(true);
    if broker.write_all(&first).is_err() {
        return;
    }
    if first.is_empty() {
        let _ = broker.shutdown(Shutdown::Write);
    }
    let (Ok(device_read), Ok(broker_write)) = (device.try_clone(), broker.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || copy(device_read, broker_write));
    copy(broker, device);
    let _ = up.join();
}

/// Copies until EOF or error, then half-closes the destination.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A loopback port that was free a moment ago, for mosquitto's internal listener.
pub fn internal_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::new(Code::Io, format!("no free loopback port: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquittos_connect_line_names_the_client_and_the_relays_port() {
        let line = "1796143412: New client connected from 127.0.0.1:56936 as sensor-1 (p2, c0, k60, u'x').";
        assert_eq!(client_connected(line), Some(("sensor-1", 56936)));
        assert_eq!(
            client_connected("1796143412: New connection from 127.0.0.1:1 on port 2."),
            None
        );
        remember(&BY_PORT, 56936, "sni=localhost ok".into());
        note_client("sensor-1", 56936);
        assert_eq!(
            last_verdict("sensor-1").as_deref(),
            Some("sni=localhost ok")
        );
        assert_eq!(last_verdict("other"), None);
    }
}
