//! HTTP CONNECT proxies: the tunnel a device behind a corporate proxy opens before TLS.
//!
//! A [`Proxy`] comes from an explicit URL (`http://[user:password@]host[:port]`) or from the
//! environment ([`Proxy::from_env`]: `TETHER_PROXY`, then `HTTPS_PROXY` / `https_proxy`,
//! with `NO_PROXY` / `no_proxy` naming hosts reached directly). [`connect`] opens the TCP
//! connection to the proxy, asks it for `CONNECT host:port HTTP/1.1` (with
//! `Proxy-Authorization: Basic ...` when credentials are set) and returns the stream once
//! the proxy answers 2xx; the TLS handshake then runs through the tunnel as on a direct
//! connection. Everything is bounded by one deadline.
//!
//! The credentials are a secret: they are kept base64-encoded in memory that is wiped on
//! drop, never logged and never put in an error message ([`Proxy`]'s `Debug` and
//! [`Proxy::display`] show `host:port` only).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;
use zeroize::Zeroizing;

use crate::error::{Code, Error, Result};
use crate::handshake::{connect_tcp, io_error};

/// The environment variable naming tether's own proxy (it wins over `HTTPS_PROXY`).
pub const ENV_PROXY: &str = "TETHER_PROXY";
/// The conventional proxy variables, in the order they are read.
pub const ENV_HTTPS_PROXY: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
/// The conventional list of hosts reached without the proxy.
pub const ENV_NO_PROXY: [&str; 2] = ["NO_PROXY", "no_proxy"];
/// The port of a proxy URL that names none (the `http` scheme's).
pub const DEFAULT_PROXY_PORT: u16 = 80;
/// The longest proxy answer (status line and headers) read.
const MAX_RESPONSE: usize = 8 * 1024;

/// An HTTP proxy reached with CONNECT.
#[derive(Clone)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `base64(user:password)`, wiped on drop.
    basic: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.basic.as_ref().map(|_| "(set)"))
            .finish()
    }
}

fn malformed(why: &str) -> Error {
    // The URL itself is never echoed: it may carry a password.
    Error::new(
        Code::InvalidArgument,
        format!("proxy URL is malformed: {why}"),
    )
}

/// Decodes `%XX` escapes (user names and passwords in URLs), into wiped memory.
fn percent_decode(text: &str) -> Result<Zeroizing<String>> {
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| malformed("a %-escape in the credentials is not two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = std::str::from_utf8(&out)
        .map_err(|_| malformed("the credentials are not UTF-8"))?
        .to_owned();
    Ok(Zeroizing::new(text))
}

impl Proxy {
    /// A proxy from `http://[user[:password]@]host[:port][/]` (the scheme may be left out;
    /// the port defaults to 80). `https://` proxies (TLS to the proxy) are not supported.
    pub fn parse(url: &str) -> Result<Proxy> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(Error::new(
                    Code::InvalidArgument,
                    "proxy URL: https:// proxies (TLS to the proxy) are not supported; use \
                     http://host:port (the tunnel through it is TLS end to end)",
                ))
            }
            Some(_) => return Err(malformed("the scheme must be http://")),
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(malformed("a proxy URL has no path"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| malformed("an IPv6 address lacks its closing ]"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(malformed("no host"));
        }
        let port = match port {
            None => DEFAULT_PROXY_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(malformed("the port is not a number from 1 to 65535")),
            },
        };
        let basic = match userinfo {
            None => None,
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                let mut pair = percent_decode(user)?;
                pair.push(':');
                pair.push_str(&percent_decode(password)?);
                Some(Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()),
                ))
            }
        };
        Ok(Proxy {
            host: host.to_owned(),
            port,
            basic,
        })
    }

    /// The proxy's host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether Basic credentials are set.
    pub fn has_credentials(&self) -> bool {
        self.basic.is_some()
    }

    /// `host:port`, for logs and messages (never the credentials).
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The proxy the environment names for connections to `target_host`: `TETHER_PROXY`,
    /// else `HTTPS_PROXY`, else `https_proxy`; `None` when none is set (an empty variable
    /// counts as unset) or when `NO_PROXY` / `no_proxy` lists the target.
    pub fn from_env(target_host: &str) -> Result<Option<Proxy>> {
        let read = |name: &str| -> Result<Option<String>> {
            match std::env::var(name) {
                Ok(v) if v.trim().is_empty() => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => Err(Error::new(
                    Code::InvalidUtf8,
                    format!("{name} is not valid UTF-8"),
                )),
            }
        };
        let mut found = None;
        for name in std::iter::once(ENV_PROXY).chain(ENV_HTTPS_PROXY) {
            if let Some(url) = read(name)? {
                found = Some((name, Zeroizing::new(url)));
                break;
            }
        }
        let Some((name, url)) = found else {
            return Ok(None);
        };
        for no in ENV_NO_PROXY {
            if let Some(list) = read(no)? {
                if bypassed(&list, target_host) {
                    return Ok(None);
                }
                break;
            }
        }
        Proxy::parse(url.trim())
            .map(Some)
            .map_err(|e| e.context(name))
    }
}

/// Whether `NO_PROXY`-style `list` (comma or space separated: `*`, host names, `.domain` or
/// `domain` matching it and its subdomains, IP addresses; a `:port` suffix is ignored)
/// names `host`.
pub fn bypassed(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    list.split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('[');
            let entry = match entry.split_once(']') {
                Some((v6, _)) => v6,
                None => match entry.rsplit_once(':') {
                    // host:port, but not a bare IPv6 address
                    Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
                    _ => entry,
                },
            };
            let entry = entry
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !entry.is_empty()
                && (host == entry
                    || (host.len() > entry.len()
                        && host.ends_with(&entry)
                        && host.as_bytes()[host.len() - entry.len() - 1] == b'.'))
        })
}

/// The CONNECT request for `host:port`, in wiped memory (it may carry the credentials).
fn request(proxy: &Proxy, host: &str, port: u16) -> Zeroizing<Vec<u8>> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = Zeroizing::new(Vec::with_capacity(256));
    req.extend_from_slice(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").as_bytes());
    if let Some(basic) = &proxy.basic {
        req.extend_from_slice(b"Proxy-Authorization: Basic ");
        req.extend_from_slice(basic.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(
        format!(
            "User-Agent: tether/{}\r\nProxy-Connection: Keep-Alive\r\n\r\n",
            crate::VERSION
        )
        .as_bytes(),
    );
    req
}

/// What a proxy's status line means for the device.
pub fn refusal(proxy: &Proxy, target: &str, status: u16, line: &str) -> Error {
    let via = proxy.display();
    match status {
        // 407 is HTTP's answer; some proxies (tinyproxy) answer a CONNECT with 401.
        401 | 407 => Error::new(
            Code::ProxyAuthRequired,
            format!(
                "proxy {via} refused CONNECT {target}: \"{line}\": {}",
                if proxy.has_credentials() {
                    "it did not accept the proxy credentials"
                } else {
                    "it needs credentials (http://user:password@host:port)"
                }
            ),
        ),
        // The proxy could not reach the hub (502; tinyproxy says 500 "Unable to connect")
        // or timed out: like a failed TCP connection, worth retrying.
        500..=599 => Error::new(
            Code::ConnectFailed,
            format!("proxy {via} could not reach {target}: \"{line}\""),
        ),
        _ => Error::new(
            Code::ProxyRefused,
            format!("proxy {via} refused CONNECT {target}: \"{line}\""),
        ),
    }
}

/// Parses a proxy's answer to CONNECT: `Ok(None)` while incomplete, `Ok(Some(len))` (the
/// header length) on 2xx, the refusal otherwise.
pub fn parse_response(proxy: &Proxy, target: &str, buf: &[u8]) -> Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_RESPONSE {
            return Err(Error::new(
                Code::ProxyRefused,
                format!(
                    "proxy {} answered CONNECT with more than {MAX_RESPONSE} bytes of headers",
                    proxy.display()
                ),
            ));
        }
        return Ok(None);
    };
    let head = &buf[..end];
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line: String = String::from_utf8_lossy(&head[..line_end])
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let mut words = line.split(' ');
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    };
    match status {
        Some(200..=299) => Ok(Some(end + 4)),
        Some(status) => Err(refusal(proxy, target, status, &line)),
        None => Err(Error::new(
            Code::ProxyRefused,
            format!(
                "proxy {} did not answer CONNECT in HTTP: \"{line}\"",
                proxy.display()
            ),
        )),
    }
}

/// Asks `proxy`, over `stream`, for a tunnel to `host:port`, by `deadline`.
pub fn tunnel(
    stream: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<()> {
    let target = format!("{host}:{port}");
    let left = |what: &str| -> Result<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(
                Code::Timeout,
                format!("proxy {} {what} in time", proxy.display()),
            ));
        }
        Ok(left)
    };
    stream
        .set_write_timeout(Some(left("took the CONNECT request")?))
        .map_err(|e| io_error(e, "socket"))?;
    stream
        .write_all(&request(proxy, host, port))
        .map_err(|e| io_error(e, &format!("sending CONNECT to proxy {}", proxy.display())))?;
    // Read one byte at a time: whatever follows the answer's headers belongs to the TLS
    // handshake and must stay in the socket.
    let mut answer = Vec::with_capacity(256);
    loop {
        stream
            .set_read_timeout(Some(left("did not answer CONNECT")?))
            .map_err(|e| io_error(e, "socket"))?;
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(Error::new(
                    Code::ConnectionClosed,
                    format!(
                        "proxy {} closed the connection instead of answering CONNECT {target}",
                        proxy.display()
                    ),
                ))
            }
            Ok(_) => answer.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::new(
                    Code::Timeout,
                    format!(
                        "proxy {} did not answer CONNECT {target} in time",
                        proxy.display()
                    ),
                ))
            }
            Err(e) => {
                return Err(io_error(
                    e,
                    &format!("waiting for proxy {}", proxy.display()),
                ))
            }
        }
        if answer.ends_with(b"\n") {
            if let Some(_len) = parse_response(proxy, &target, &answer)? {
                return Ok(());
            }
        } else if answer.len() >= MAX_RESPONSE {
            parse_response(proxy, &target, &answer)?;
        }
    }
}

/// Opens a TCP connection to `host:port`: directly, or through `proxy` with CONNECT; both
/// within `timeout`, name resolution included.
pub fn connect(
    host: &str,
    port: u16,
    proxy: Option<&Proxy>,
    timeout: Duration,
) -> Result<TcpStream> {
    let Some(proxy) = proxy else {
        return connect_tcp(host, port, timeout);
    };
    let deadline = Instant::now() + timeout;
    let mut stream = connect_tcp(proxy.host(), proxy.port(), timeout)
        .map_err(|e| e.context(format!("proxy {}", proxy.display())))?;
    tunnel(&mut stream, proxy, host, port, deadline)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| io_error(e, "configuring the socket"))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_keeps_credentials_out_of_debug() {
        let p = Proxy::parse("http://alice:s%40cret@proxy.example:3128/").unwrap();
        assert_eq!((p.host(), p.port()), ("proxy.example", 3128));
        assert!(p.has_credentials());
        let shown = format!("{p:?} {}", p.display());
        assert!(
            !shown.contains("s@cret") && !shown.contains("alice"),
            "{shown}"
        );
        let req = request(&p, "hub.example", 443);
        let text = String::from_utf8(req.to_vec()).unwrap();
        assert!(text.starts_with("CONNECT hub.example:443 HTTP/1.1\r\nHost: hub.example:443\r\n"));
        // base64("alice:s@cret")
        assert!(
            text.contains("Proxy-Authorization: Basic YWxpY2U6c0BjcmV0\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"));

        let p = Proxy::parse("10.0.0.1").unwrap();
        assert_eq!(
            (p.host(), p.port(), p.has_credentials()),
            ("10.0.0.1", 80, false)
        );
        let p = Proxy::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (p.host(), p.port(), p.display().as_str()),
            ("::1", 8080, "[::1]:8080")
        );
        for bad in [
            "https://p:1",
            "socks5://p:1",
            "http://:1",
            "http://p:0",
            "http://p:x",
            "http://p/path",
            "http://u:%zz@p:1",
        ] {
            let e = Proxy::parse(bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        }
        let e = Proxy::parse("http://u:topsecret@p:notaport").unwrap_err();
        assert!(!e.message().contains("topsecret"), "{}", e.message());
    }

    #[test]
    fn no_proxy_matching() {
        assert!(bypassed("*", "anything"));
        assert!(bypassed(
            "localhost, .azure-devices.net",
            "hub.azure-devices.net"
        ));
        assert!(bypassed("azure-devices.net", "hub.azure-devices.net"));
        assert!(bypassed("azure-devices.net", "AZURE-DEVICES.NET"));
        assert!(!bypassed("azure-devices.net", "evilazure-devices.net"));
        assert!(bypassed("127.0.0.1:8883", "127.0.0.1"));
        assert!(bypassed("[::1]", "::1"));
        assert!(!bypassed("", "hub"));
        assert!(!bypassed("other.example", "hub.example"));
    }

    #[test]
    fn names_each_refusal() {
        let p = Proxy::parse("http://u:pw@proxy:3128").unwrap();
        let t = "hub:8883";
        let e = parse_response(
            &p,
            t,
            b"HTTP/1.1 407 Proxy Authentication Required\r\nX: y\r\n\r\n",
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::ProxyAuthRequired);
        assert!(
            e.message()
                .contains("\"HTTP/1.1 407 Proxy Authentication Required\""),
            "{}",
            e.message()
        );
        assert!(!e.message().contains("pw"));
        let e = parse_response(&p, t, b"HTTP/1.0 403 Access violation\r\n\r\n").unwrap_err();
        assert_eq!(e.code(), Code::ProxyRefused);
        assert!(e.message().contains("403 Access violation"));
        let e = parse_response(&p, t, b"HTTP/1.1 502 Bad Gateway\r\n\r\n").unwrap_err();
        assert_eq!(e.code(), Code::ConnectFailed);
        assert!(
            e.message().contains("could not reach hub:8883"),
            "{}",
            e.message()
        );
        let e = parse_response(&p, t, b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert_eq!(e.code(), Code::ProxyRefused);
        assert_eq!(
            parse_response(&p, t, b"HTTP/1.1 200 Connection established\r\n").unwrap(),
            None
        );
        assert_eq!(
            parse_response(&p, t, b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap(),
            Some(39)
        );
        let e = parse_response(&p, t, &vec![b'a'; MAX_RESPONSE]).unwrap_err();
        assert_eq!(e.code(), Code::ProxyRefused);
    }
}
