//! `tether hub --web [HOST:]PORT`: a small web view of the stand-in (devices, telemetry,
//! twin, direct method, cloud-to-device, registry), served over plain HTTP on 127.0.0.1 by
//! default. The page (HTML, JS and CSS embedded in the binary, no external resources) talks
//! only to the service REST API (`rest.rs`, `registry.rs`), served on this port too, plus
//! `GET /events[?device=ID]`: the telemetry as server-sent events (the control socket's
//! `watch`).
//!
//! Authentication: a random session token, printed in the ready line as a login URL
//! (`/login?token=...`) and written to `DIR/web-token` (owner-only). Opening that URL sets
//! an HttpOnly, SameSite=Strict cookie holding the token; every API call must carry it
//! (compared in constant time). Requests whose `Host` is not this server's are refused (a
//! DNS-rebinding page cannot reach the API), and so are changes (PUT, PATCH, POST) whose
//! `Origin` is not this server's (another local page is same-site and has the cookie).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ring::rand::SecureRandom;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tether::{Code, Error, Result};
use zeroize::Zeroizing;

use super::rest::{self, error_body, HttpRequest};
use crate::opts::usage_error;

const INDEX: &str = include_str!("web/index.html");
const APP: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");

/// How often an idle telemetry stream is written to (a comment line), to notice a page that
/// left.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The session cookie's name.
const COOKIE: &str = "tether_session";
/// The API version the page's calls carry (any non-empty value is served).
const API_VERSION: &str = "api-version=2021-04-12";

/// `[HOST:]PORT` (HOST defaults to 127.0.0.1).
pub fn parse_addr(text: &str) -> Result<SocketAddr> {
    let with_host = if text.parse::<u16>().is_ok() {
        format!("127.0.0.1:{text}")
    } else {
        text.to_owned()
    };
    with_host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| usage_error(format!("--web {text}: expected [HOST:]PORT")))
}

struct Web {
    dir: PathBuf,
    registry: PathBuf,
    token: Zeroizing<String>,
    /// `Host` header values this server answers to.
    hosts: Vec<String>,
}

/// Starts serving on `addr`; answers the login URL (holding the session token).
pub fn start(dir: &Path, registry: &Path, addr: SocketAddr) -> Result<Zeroizing<String>> {
    let listener =
        TcpListener::bind(addr).map_err(|e| Error::new(Code::Io, format!("--web {addr}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::new(Code::Io, e.to_string()))?;
    let mut bytes = Zeroizing::new([0u8; 24]);
    ring::rand::SystemRandom::new()
        .fill(&mut bytes[..])
        .map_err(|_| Error::new(Code::Io, "no random numbers for the web session"))?;
    let token = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..]));
    let file = dir.join("web-token");
    let _ = std::fs::remove_file(&file);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .map_err(|e| Error::new(Code::Io, format!("{}: {e}", file.display())))?;
    let port = addr.port();
    let mut hosts = vec![format!("{addr}"), format!("localhost:{port}")];
    if addr.ip().is_loopback() {
        hosts.push(format!("127.0.0.1:{port}"));
    }
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{port}")
    } else {
        format!("{addr}")
    };
    let url = Zeroizing::new(format!("http://{host}/login?token={}", token.as_str()));
    let web = Arc::new(Web {
        dir: dir.to_path_buf(),
        registry: registry.to_path_buf(),
        token,
        hosts,
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let web = web.clone();
            std::thread::spawn(move || serve(stream, &web));
        }
    });
    Ok(url)
}

fn respond(stream: &mut TcpStream, status: u16, kind: &str, extra: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'self'; connect-src 'self'; img-src 'self' data:\r\n\
         {extra}Connection: close\r\n\r\n{body}",
        rest::reason(status),
        body.len()
    );
    let _ = stream.flush();
}

fn json_reply(stream: &mut TcpStream, status: u16, body: &Value) {
    respond(
        stream,
        status,
        "application/json; charset=utf-8",
        "",
        &body.to_string(),
    );
}

impl Web {
    /// Whether the request carries this server's session cookie.
    fn session(&self, req: &HttpRequest) -> bool {
        req.cookie.split(';').any(|c| {
            c.trim()
                .strip_prefix(COOKIE)
                .and_then(|v| v.strip_prefix('='))
                .is_some_and(|v| bool::from(v.as_bytes().ct_eq(self.token.as_bytes())))
        })
    }

    fn query_token_ok(&self, query: &str) -> bool {
        query.split('&').any(|p| {
            p.strip_prefix("token=")
                .is_some_and(|v| bool::from(v.as_bytes().ct_eq(self.token.as_bytes())))
        })
    }
}

fn serve(stream: TcpStream, web: &Web) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut stream = stream;
    let Some(req) = rest::read_request(&mut BufReader::new(read_half)) else {
        return;
    };
    if !web.hosts.contains(&req.host) {
        return json_reply(
            &mut stream,
            400,
            &error_body(400000, "unexpected Host header"),
        );
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/") | ("GET", "/index.html") => {
            return respond(&mut stream, 200, "text/html; charset=utf-8", "", INDEX)
        }
        ("GET", "/app.js") => {
            return respond(&mut stream, 200, "text/javascript; charset=utf-8", "", APP)
        }
        ("GET", "/style.css") => {
            return respond(&mut stream, 200, "text/css; charset=utf-8", "", STYLE)
        }
        ("GET", "/login") => {
            if !web.query_token_ok(&req.query) {
                return json_reply(
                    &mut stream,
                    401,
                    &error_body(
                        401002,
                        "wrong or missing token: open the URL `tether hub` printed (the token \
                         is in DIR/web-token)",
                    ),
                );
            }
            let cookie = Zeroizing::new(format!(
                "Set-Cookie: {COOKIE}={}; HttpOnly; SameSite=Strict; Path=/\r\nLocation: /\r\n",
                web.token.as_str()
            ));
            return respond(&mut stream, 303, "text/plain; charset=utf-8", &cookie, "");
        }
        _ => {}
    }
    if !web.session(&req) {
        return json_reply(
            &mut stream,
            401,
            &error_body(
                401002,
                "no session: open the login URL that `tether hub` printed",
            ),
        );
    }
    // A change must come from this page: another page on this machine (same site, since
    // ports do not count) would carry the cookie, but not this origin.
    if req.method != "GET"
        && !req
            .origin
            .strip_prefix("http://")
            .is_some_and(|o| web.hosts.iter().any(|h| h == o))
    {
        return json_reply(
            &mut stream,
            403,
            &error_body(
                403000,
                "changes are accepted only from the web view's own page",
            ),
        );
    }
    if req.method == "GET" && req.path == "/events" {
        return events(stream, web, &req.query);
    }
    // The service API, as the local user's session (no service token to pass on).
    let mut req = req;
    req.query = API_VERSION.to_owned();
    let (status, body) = rest::answer(&req, &web.dir, &web.registry);
    json_reply(&mut stream, status, &body);
}

/// Server-sent events: one `data:` line per device-to-cloud message, until the page leaves.
fn events(mut stream: TcpStream, web: &Web, query: &str) {
    let mut request = json!({"op": "watch"});
    if let Some(d) = query.split('&').find_map(|p| p.strip_prefix("device=")) {
        let d = tether::internal::url_decode(d).unwrap_or_else(|| d.to_owned());
        if !d.is_empty() {
            request["device"] = json!(d);
        }
    }
    let mut reader = match super::service::connect(&web.dir, &request)
        .and_then(|mut r| super::service::read_answer(&mut r).map(|_| r))
    {
        Ok(r) => r,
        Err(e) => return json_reply(&mut stream, 503, &error_body(503000, e.message())),
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    if write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n: watching\n\n"
    )
    .and_then(|_| stream.flush())
    .is_err()
    {
        return;
    }
    // A reader thread, so that a page that left is noticed within KEEP_ALIVE even when no
    // device sends: then the control connection is shut down and the plugin drops the watch.
    let control = reader.get_ref().try_clone().ok();
    let (tx, messages) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(message) = super::service::read_answer(&mut reader) {
            if tx.send(message).is_err() {
                return;
            }
        }
    });
    loop {
        let chunk = match messages.recv_timeout(KEEP_ALIVE) {
            Ok(message) => format!("data: {message}\n\n"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => ": keep-alive\n\n".to_owned(),
            Err(_) => break,
        };
        if stream
            .write_all(chunk.as_bytes())
            .and_then(|_| stream.flush())
            .is_err()
        {
            break;
        }
    }
    if let Some(c) = control {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
}
