//! The stand-in's control channel: a Unix socket (`DIR/control.sock`, owner-only) that
//! `tether hub c2d|invoke|twin|watch` and the REST front end talk to. One JSON request line
//! per connection, answered with one JSON line (`watch`: a line per message until the
//! client hangs up).
//!
//! The socket's threads never touch the broker: each request goes to the broker's thread
//! through a channel and is carried out on its next tick (mosquitto's plugin functions are
//! not thread-safe); the answer comes back through the request's own channel.
//!
//! Requests: `{"op": "c2d", "device", "payload", "properties": {...}, "ttl"}`,
//! `{"op": "invoke", "device", "method", "payload", "timeout"}`,
//! `{"op": "twin", "device"[, "desired": {...}]}`, `{"op": "watch"[, "device"]}`,
//! `{"op": "devices"}` (every identity with status, authentication kind, connection state,
//! since, last activity and pending cloud-to-device count; never a key). A request
//! with `"sas"` (the REST front end's `Authorization` header) is served only when that token
//! is a valid service policy token.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use serde_json::{json, Value};
use zeroize::Zeroize;

/// The socket's file name in the stand-in's folder.
pub const SOCKET_FILE: &str = "control.sock";

/// A request and where its answers go.
pub struct Command {
    pub request: Value,
    pub reply: Sender<Value>,
}

/// Longest wait for the broker's answer beyond a method's own timeout.
const ANSWER_MARGIN: Duration = Duration::from_secs(15);

/// Starts listening on `dir/control.sock` (replacing a stale socket) and answers connections
/// on a thread; the broker takes the commands from the receiver.
pub fn listen(dir: &Path) -> std::io::Result<(PathBuf, Receiver<Command>)> {
    let path = dir.join(SOCKET_FILE);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tether-hub-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let tx = tx.clone();
                let _ = std::thread::Builder::new()
                    .name("tether-hub-request".into())
                    .spawn(move || serve(stream, tx));
            }
        })?;
    Ok((path, rx))
}

fn serve(stream: UnixStream, commands: Sender<Command>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let parsed = serde_json::from_str(&line);
    // The line may carry a service token (`sas`).
    line.zeroize();
    let request: Value = match parsed {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(
                writer,
                "{}",
                json!({"status": 400, "message": format!("request is not JSON: {e}")})
            );
            return;
        }
    };
    let watch = request.get("op").and_then(Value::as_str) == Some("watch");
    let wait = Duration::from_secs(request.get("timeout").and_then(Value::as_u64).unwrap_or(30))
        + ANSWER_MARGIN;
    let (reply, answers) = mpsc::channel();
    if commands.send(Command { request, reply }).is_err() {
        return;
    }
    loop {
        let answer = if watch {
            answers.recv().ok()
        } else {
            answers.recv_timeout(wait).ok()
        };
        let answer = answer.unwrap_or_else(
            || json!({"status": 503, "message": "the broker did not answer in time"}),
        );
        if writeln!(writer, "{answer}")
            .and_then(|_| writer.flush())
            .is_err()
            || !watch
        {
            return;
        }
    }
}
