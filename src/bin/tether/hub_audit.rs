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

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
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

fn relay(mut device: TcpStream, backend: u16) {
    let peer = device
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let _ = device.set_read_timeout(Some(Duration::from_secs(30)));
    let (hello, first) = read_client_hello(&mut device);
    let _ = device.set_read_timeout(None);
    if hello != Err(HelloError::Empty) {
        eprintln!("{}", audit_line(&peer, &hello));
    }
    let Ok(mut broker) = TcpStream::connect(("127.0.0.1", backend)) else {
        return;
    };
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
