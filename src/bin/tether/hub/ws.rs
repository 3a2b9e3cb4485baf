//! The stand-in's MQTT-over-WebSockets front (`tether hub --ws-port PORT`), like IoT Hub's
//! port 443: TLS 1.2 with the hub's suites and the stand-in's certificate, an HTTP upgrade
//! on `/$iothub/websocket` with the subprotocol `mqtt`, then binary frames whose payload is
//! relayed to a plain MQTT listener of the stand-in's mosquitto on loopback (the same
//! plugin checks the SAS token, the identity and the topics). SAS devices only: a client
//! certificate presented here would not reach the plugin. TLS is the service API's
//! configuration ([`super::rest::tls_config`]).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};
use tether::transport::ws::{self, accept_for, read_client_frame, server_frame};
use tether::{Code, Error, Result};

/// Largest frame taken from a device: IoT Hub's largest message plus its topic.
const MAX_FRAME: usize = 512 * 1024;

/// Binds `127.0.0.1:public` now and serves it on a thread, relaying each WebSocket's MQTT
/// bytes to `127.0.0.1:backend`.
pub fn start(config: Arc<ServerConfig>, public: u16, backend: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", public)).map_err(|e| {
        Error::new(
            Code::Io,
            format!("cannot listen on 127.0.0.1:{public} (--ws-port): {e}"),
        )
    })?;
    std::thread::spawn(move || {
        for device in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let peer = device
                    .peer_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string());
                if let Err(e) = serve(device, config, backend) {
                    eprintln!("websocket {peer}: {e}");
                }
            });
        }
    });
    Ok(())
}

/// The TLS side of one device, shared by the two directions.
struct Tls {
    conn: ServerConnection,
    socket: TcpStream,
}

impl Tls {
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.conn.writer().write_all(bytes)?;
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.socket)?;
        }
        Ok(())
    }
}

fn io(e: std::io::Error) -> Error {
    Error::new(Code::Io, e.to_string())
}

/// Reads what TLS decrypts from `socket` into `plain`; `false` at the end.
fn read_plain(tls: &Mutex<Tls>, socket: &mut TcpStream, plain: &mut Vec<u8>) -> Result<bool> {
    let mut buf = [0u8; 16 * 1024];
    let n = socket.read(&mut buf).map_err(io)?;
    if n == 0 {
        return Ok(false);
    }
    let mut tls = tls.lock().unwrap_or_else(|e| e.into_inner());
    let mut chunk = &buf[..n];
    while !chunk.is_empty() {
        tls.conn.read_tls(&mut chunk).map_err(io)?;
        tls.conn
            .process_new_packets()
            .map_err(|e| Error::new(Code::TlsHandshakeFailed, e.to_string()))?;
    }
    let mut out = [0u8; 16 * 1024];
    loop {
        match tls.conn.reader().read(&mut out) {
            Ok(0) => return Ok(false),
            Ok(k) => plain.extend_from_slice(&out[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(io(e)),
        }
    }
    while tls.conn.wants_write() {
        let Tls { conn, socket } = &mut *tls;
        conn.write_tls(socket).map_err(io)?;
    }
    Ok(true)
}

/// The answer to an upgrade request, or the refusal to send.
fn upgrade_answer(head: &str) -> std::result::Result<String, String> {
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or("");
    let path = request.split(' ').nth(1).unwrap_or("");
    if !request.starts_with("GET ") || path.split('?').next() != Some(ws::PATH) {
        return Err(format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n{}",
            ""
        ));
    }
    let (mut key, mut protocols) = (None, String::new());
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "sec-websocket-key" => key = Some(value.trim().to_owned()),
                "sec-websocket-protocol" => protocols = value.to_owned(),
                _ => {}
            }
        }
    }
    let Some(key) = key else {
        return Err("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".into());
    };
    if !protocols
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case(ws::SUBPROTOCOL))
    {
        return Err("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".into());
    }
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        accept_for(&key),
        ws::SUBPROTOCOL
    ))
}

fn serve(device: TcpStream, config: Arc<ServerConfig>, backend: u16) -> Result<()> {
    let _ = device.set_nodelay(true);
    let conn = ServerConnection::new(config).map_err(|e| Error::new(Code::Io, e.to_string()))?;
    let mut reader = device.try_clone().map_err(io)?;
    let tls = Arc::new(Mutex::new(Tls {
        conn,
        socket: device,
    }));
    // The upgrade request, within 30 s of connecting.
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut plain = Vec::new();
    let head_end = loop {
        if let Some(end) = plain.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if plain.len() > 16 * 1024 || !read_plain(&tls, &mut reader, &mut plain)? {
            return Ok(());
        }
    };
    reader.set_read_timeout(None).map_err(io)?;
    let head = String::from_utf8_lossy(&plain[..head_end]).into_owned();
    plain.drain(..head_end);
    match upgrade_answer(&head) {
        Ok(answer) => tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(answer.as_bytes())
            .map_err(io)?,
        Err(refusal) => {
            let _ = tls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(refusal.as_bytes());
            return Ok(());
        }
    }
    let broker = TcpStream::connect(("127.0.0.1", backend)).map_err(io)?;
    let _ = broker.set_nodelay(true);
    let mut broker_read = broker.try_clone().map_err(io)?;
    let down_tls = tls.clone();
    // Broker to device: each read becomes one binary frame.
    let down = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match broker_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = server_frame(0x2, true, &buf[..n]);
                    let mut tls = down_tls.lock().unwrap_or_else(|e| e.into_inner());
                    if tls.send(&frame).is_err() {
                        break;
                    }
                }
            }
        }
        let mut tls = down_tls.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tls.send(&server_frame(0x8, true, &1000u16.to_be_bytes()));
        tls.conn.send_close_notify();
        let Tls { conn, socket } = &mut *tls;
        let _ = conn.write_tls(socket);
        let _ = socket.shutdown(Shutdown::Both);
    });
    // Device to broker: binary payloads to the broker, pings answered, close ends it.
    let mut broker_write = broker;
    'device: loop {
        loop {
            match read_client_frame(&plain, MAX_FRAME) {
                Ok(Some((frame, used))) => {
                    plain.drain(..used);
                    match frame.opcode {
                        0x0 | 0x2 => {
                            if broker_write.write_all(&frame.payload).is_err() {
                                break 'device;
                            }
                        }
                        0x9 => {
                            let pong = server_frame(0xA, true, &frame.payload);
                            let _ = tls.lock().unwrap_or_else(|e| e.into_inner()).send(&pong);
                        }
                        0xA => {}
                        _ => break 'device, // close, text or unknown: end the connection
                    }
                }
                Ok(None) => break,
                Err(_) => break 'device,
            }
        }
        match read_plain(&tls, &mut reader, &mut plain) {
            Ok(true) => {}
            _ => break,
        }
    }
    let _ = broker_write.shutdown(Shutdown::Both);
    let _ = down.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_mqtt_upgrades_on_the_hub_path() {
        let ok = upgrade_answer(
            "GET /$iothub/websocket?iothub-no-client-cert=true HTTP/1.1\r\nHost: h\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
        )
        .unwrap();
        assert!(ok.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(ok.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(upgrade_answer("GET /other HTTP/1.1\r\n\r\n")
            .unwrap_err()
            .contains("404"));
        assert!(upgrade_answer(
            "GET /$iothub/websocket HTTP/1.1\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Protocol: amqp\r\n\r\n"
        )
        .unwrap_err()
        .contains("400"));
    }
}
