//! Fault injection for the reliability tests: a TCP proxy between the client and a real
//! broker that corrupts, truncates, delays, stalls and resets connections at chosen points;
//! a scripted TLS 1.2 broker (rustls over real TCP) for faults that need a crafted packet;
//! a broker with a plain service listener and a `mosquitto_sub` that counts what arrived;
//! and the process's resource counters (RSS, open descriptors).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::v4;

use super::{free_port, require, wait_for_port, Mosquitto, Pki};

/// The device the fault tests and the soak run connect as (mosquitto accepts anyone).
pub const DEVICE: &str = "dev-1";
pub const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

/// A client for [`DEVICE`] on 127.0.0.1:`port` (as `localhost`, trusting the test CA).
pub fn device_client(
    port: u16,
    keep_alive_secs: u16,
    retry_min_ms: u32,
    retry_max_ms: u32,
) -> tether::client::Client {
    let cs = tether::auth::connection_string::ConnectionString::parse(&format!(
        "HostName=localhost;DeviceId={DEVICE};SharedAccessKey={KEY}"
    ))
    .unwrap();
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    let mut config =
        tether::session::SessionConfig::from_connection_string(&cs, policy.build().unwrap(), false)
            .unwrap();
    config.options.keep_alive_secs = keep_alive_secs;
    tether::client::Client::new(
        config,
        tether::client::ClientOptions {
            port,
            retry_min_ms,
            retry_max_ms,
            retry_jitter_ms: 100,
            ..tether::client::ClientOptions::default()
        },
    )
    .unwrap()
}

/// What the proxy does to one connection. Times count from when it accepted the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully.
    Clean,
    /// Flip one bit in the first chunk going to the client after `after_ms` (a corrupted
    /// TLS record).
    CorruptToClient { after_ms: u64 },
    /// The same towards the broker.
    CorruptToBroker { after_ms: u64 },
    /// Forward half of the first chunk to the client after `after_ms`, then close both
    /// sides (a record cut in the middle).
    Truncate { after_ms: u64 },
    /// Hold every chunk, both ways, for `ms` before forwarding it.
    Delay { ms: u64 },
    /// After `after_ms`, forward nothing more either way but keep both sockets open (a
    /// black hole: only timeouts can tell).
    Stall { after_ms: u64 },
    /// After `after_ms`, reset the client's connection (TCP RST).
    Reset { after_ms: u64 },
}

/// A TCP proxy to 127.0.0.1:`upstream` that applies one planned [`Fault`] per accepted
/// connection (then [`Fault::Clean`] once the plan is used up).
pub struct FaultProxy {
    pub port: u16,
    plan: Arc<Mutex<VecDeque<Fault>>>,
    accepts: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: u16, plan: &[Fault]) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let proxy = FaultProxy {
            port,
            plan: Arc::new(Mutex::new(plan.iter().copied().collect())),
            accepts: Arc::default(),
            stop: Arc::default(),
        };
        let (plan, accepts, stop) = (
            proxy.plan.clone(),
            proxy.accepts.clone(),
            proxy.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        accepts.lock().unwrap().push(Instant::now());
                        let fault = plan.lock().unwrap().pop_front().unwrap_or(Fault::Clean);
                        let stop = stop.clone();
                        std::thread::spawn(move || relay(client, upstream, fault, stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        proxy
    }

    /// When each client connection was accepted.
    pub fn accepts(&self) -> Vec<Instant> {
        self.accepts.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sets SO_LINGER to 0 so that closing `stream` sends a TCP RST.
fn linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

fn relay(client: TcpStream, upstream: u16, fault: Fault, stop: Arc<AtomicBool>) {
    let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let opened = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let pair =
        |from: &TcpStream, to: &TcpStream| (from.try_clone().unwrap(), to.try_clone().unwrap());
    let (c_in, b_out) = pair(&client, &broker);
    let (b_in, c_out) = pair(&broker, &client);
    let (d1, s1) = (done.clone(), stop.clone());
    let up = std::thread::spawn(move || pump(c_in, b_out, fault, false, opened, d1, s1));
    pump(b_in, c_out, fault, true, opened, done.clone(), stop);
    let _ = up.join();
    if let Fault::Reset { after_ms } = fault {
        if opened.elapsed() >= Duration::from_millis(after_ms) {
            linger_zero(&client);
            return; // dropping the last descriptor now sends the RST
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
}

/// Moves bytes `from` → `to`, applying `fault` (`to_client`: the direction it applies to).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    fault: Fault,
    to_client: bool,
    opened: Instant,
    done: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let due = |ms: u64| opened.elapsed() >= Duration::from_millis(ms);
    let mut corrupted = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if done.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
            break;
        }
        if let Fault::Reset { after_ms } = fault {
            if due(after_ms) {
                break;
            }
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let chunk = &mut buf[..n];
        match fault {
            Fault::Stall { after_ms } if due(after_ms) => continue, // swallowed
            Fault::Delay { ms } => std::thread::sleep(Duration::from_millis(ms)),
            Fault::Truncate { after_ms } if to_client && due(after_ms) => {
                let _ = to.write_all(&chunk[..n.div_ceil(2)]);
                break;
            }
            Fault::CorruptToClient { after_ms } if to_client && due(after_ms) && !corrupted => {
                chunk[n - 1] ^= 0x10;
                corrupted = true;
            }
            Fault::CorruptToBroker { after_ms } if !to_client && due(after_ms) && !corrupted => {
                chunk[n - 1] ^= 0x10;
                corrupted = true;
            }
            _ => {}
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    if let Fault::Stall { .. } = fault {
        // Hold the connection open until the client gives up on it.
        while !stop.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
    done.store(true, Ordering::Relaxed);
}

/// mosquitto with a TLS listener configured like IoT Hub's endpoint for the device, and a
/// plain listener for the "service" side; both anonymous (these tests are about the link,
/// not authentication, which tests/client.rs and tests/hub.rs cover).
pub struct ServiceBroker {
    pub broker: Mosquitto,
    pub service_port: u16,
}

impl ServiceBroker {
    pub fn start() -> ServiceBroker {
        let service_port = free_port();
        let broker = Mosquitto::start(&format!(
            "{}listener {service_port} 127.0.0.1\nallow_anonymous true\n",
            Mosquitto::tls_listener("{port}", Pki::shared(), "allow_anonymous true")
        ));
        assert!(
            wait_for_port(service_port, Duration::from_secs(10)),
            "mosquitto's service listener did not open:\n{}",
            broker.log()
        );
        ServiceBroker {
            broker,
            service_port,
        }
    }

    pub fn port(&self) -> u16 {
        self.broker.port
    }

    /// Starts `mosquitto_sub` on `filter` (QoS 1) and waits until the broker has its
    /// subscription.
    pub fn subscribe(&self, filter: &str) -> Received {
        require("mosquitto_sub", "mosquitto-clients");
        let id = format!("faults-sub-{}", free_port());
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-q",
                "1",
                "-F",
                "%p",
            ])
            .args([
                "-p",
                &self.service_port.to_string(),
                "-i",
                &id,
                "-t",
                filter,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .broker
            .log()
            .contains(&format!("Received SUBSCRIBE from {id}"))
        {
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub did not subscribe:\n{}",
                self.broker.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The SUBACK follows the SUBSCRIBE log line.
        std::thread::sleep(Duration::from_millis(100));
        Received { child, lines }
    }
}

/// Payloads a `mosquitto_sub` printed, one per line.
pub struct Received {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Received {
    /// Waits until every payload of `wanted` arrived (or `timeout`); returns
    /// `(missing, duplicates)`.
    pub fn wait_all(&self, wanted: &[String], timeout: Duration) -> (Vec<String>, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines.lock().unwrap().clone();
            let unique: std::collections::HashSet<&String> = lines.iter().collect();
            let missing: Vec<String> = wanted
                .iter()
                .filter(|w| !unique.contains(w))
                .cloned()
                .collect();
            let duplicates = lines.len() - unique.len();
            if missing.is_empty() || Instant::now() >= deadline {
                return (missing, duplicates);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a scripted broker saw from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Connect,
    Publish {
        pkid: u16,
        dup: bool,
        payload: Vec<u8>,
    },
    PubAck {
        pkid: u16,
    },
    Other(String),
}

/// One connection of a [`ScriptedBroker`]: a rustls TLS 1.2 server over the accepted socket.
pub struct BrokerConn {
    pub index: usize,
    tls: rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
    rx: BytesMut,
    seen: Arc<Mutex<Vec<(usize, Seen)>>>,
}

impl BrokerConn {
    /// The next packet from the client within `timeout` (recorded in the broker's log).
    pub fn next(&mut self, timeout: Duration) -> Option<v4::Packet> {
        let deadline = Instant::now() + timeout;
        loop {
            match v4::read(&mut self.rx, 1 << 20) {
                Ok(packet) => {
                    let seen = match &packet {
                        v4::Packet::Connect(_) => Seen::Connect,
                        v4::Packet::Publish(p) => Seen::Publish {
                            pkid: p.pkid,
                            dup: p.dup,
                            payload: p.payload.to_vec(),
                        },
                        v4::Packet::PubAck(a) => Seen::PubAck { pkid: a.pkid },
                        other => Seen::Other(format!("{other:?}")),
                    };
                    self.seen.lock().unwrap().push((self.index, seen));
                    return Some(packet);
                }
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("the client sent a malformed packet: {e:?}"),
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.tls
                .sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut buf = [0u8; 64 * 1024];
            match self.tls.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads the CONNECT and accepts it.
    pub fn accept(&mut self) {
        match self.next(Duration::from_secs(20)) {
            Some(v4::Packet::Connect(_)) => {}
            other => panic!("expected CONNECT, got {other:?}"),
        }
        self.send(|b| {
            v4::ConnAck::new(v4::ConnectReturnCode::Success, false)
                .write(b)
                .unwrap();
        });
    }

    /// Writes a packet made by `write`.
    pub fn send(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let mut buf = BytesMut::new();
        write(&mut buf);
        self.send_raw(&buf);
    }

    /// Writes raw MQTT bytes (crafted packets).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.tls.write_all(bytes);
        let _ = self.tls.flush();
    }

    /// A PUBLISH from the broker.
    pub fn publish(&mut self, topic: &str, qos: u8, pkid: u16, payload: &[u8]) {
        self.send_raw(&raw_publish(topic, qos, pkid, payload));
    }

    pub fn puback(&mut self, pkid: u16) {
        self.send(|b| {
            v4::PubAck::new(pkid).write(b).unwrap();
        });
    }
}

/// A PUBLISH encoded by hand, so that QoS 2 and any topic can be sent.
pub fn raw_publish(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let mut out = vec![0x30 | (qos << 1)];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

type Script = dyn Fn(&mut BrokerConn) + Send + Sync;

/// A TLS 1.2 broker on 127.0.0.1 (the test PKI's `server.pem`, rustls) that runs `script`
/// on each accepted connection, one at a time, and logs what the client sent.
pub struct ScriptedBroker {
    pub port: u16,
    seen: Arc<Mutex<Vec<(usize, Seen)>>>,
    accepts: Arc<Mutex<Vec<Instant>>>,
}

impl ScriptedBroker {
    pub fn start(script: impl Fn(&mut BrokerConn) + Send + Sync + 'static) -> ScriptedBroker {
        let script: Arc<Script> = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = ScriptedBroker {
            port,
            seen: Arc::default(),
            accepts: Arc::default(),
        };
        let (seen, accepts) = (broker.seen.clone(), broker.accepts.clone());
        let config = server_config();
        std::thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { break };
                accepts.lock().unwrap().push(Instant::now());
                let tls = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut conn = BrokerConn {
                    index,
                    tls: rustls::StreamOwned::new(tls, stream),
                    rx: BytesMut::new(),
                    seen: seen.clone(),
                };
                script(&mut conn);
                let _ = conn.tls.sock.shutdown(Shutdown::Both);
            }
        });
        broker
    }

    /// Everything the client sent so far, with the connection index.
    pub fn seen(&self) -> Vec<(usize, Seen)> {
        self.seen.lock().unwrap().clone()
    }

    pub fn accepts(&self) -> Vec<Instant> {
        self.accepts.lock().unwrap().clone()
    }

    /// The packet ids of the PUBACKs the client sent, in order.
    pub fn acks(&self) -> Vec<u16> {
        self.seen()
            .into_iter()
            .filter_map(|(_, s)| match s {
                Seen::PubAck { pkid } => Some(pkid),
                _ => None,
            })
            .collect()
    }
}

/// A TLS 1.2 server configuration with the test PKI's server certificate.
pub fn server_config() -> Arc<rustls::ServerConfig> {
    let pki = Pki::shared();
    let certs =
        tether::policy::load_certificates(&std::fs::read(pki.path("server.pem")).unwrap()).unwrap();
    let key =
        tether::policy::load_private_key(&std::fs::read(pki.path("server.key")).unwrap()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    )
}

/// The process's resident set size, KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Open file descriptors of the process (sockets included).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
