//! A gateway: one thread drives N device sessions (one TLS connection per leaf-device
//! identity) with epoll, and reports connects/s, heap per session, CPU per 1,000 msg/s and
//! messages lost.
//!
//!     gateway CA_PEM DEVICES_FILE PORT [RATE_MSG_PER_S] [SECONDS] [--full-handshakes]
//!
//! DEVICES_FILE holds one device connection string per line (`GatewayHostName` names the
//! host to dial, e.g. the local stand-in: `tether hub`). Every session sends QoS 1 telemetry
//! of 256 B; together they send RATE messages per second (default 1000) for SECONDS
//! (default 10). The sessions share one TLS configuration, so they resume each other's TLS
//! sessions; `--full-handshakes` turns resumption off. See docs/performance.md ("Gateway").
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BinaryHeap, VecDeque};
use std::io::Read;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tether::auth::connection_string::ConnectionString;
use tether::client::monotonic_now_ms as now;
use tether::mqtt::properties::PropertyBag;
use tether::policy::TlsPolicy;
use tether::session::{Event, Session, SessionConfig};

/// Counts the bytes of heap in use, to report heap per session.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

struct Device {
    session: Session,
    stream: Option<TcpStream>,
    connected: bool,
}

#[derive(Default)]
struct Stats {
    connects: usize,
    disconnects: usize,
    sent: u64,
    acked: u64,
}

struct Gateway {
    devices: Vec<Device>,
    epoll: i32,
    port: u16,
    timers: BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    reconnect: VecDeque<(u64, usize)>,
    stats: Stats,
}

impl Gateway {
    fn open(&mut self, i: usize) {
        let host = self.devices[i].session.config().server_name.clone();
        let d = &mut self.devices[i];
        let stream = TcpStream::connect((host.as_str(), self.port)).expect("TCP connect");
        stream.set_nonblocking(true).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: a valid epoll fd and socket.
        unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut ev) };
        d.stream = Some(stream);
        d.session.connect(now()).expect("session connect");
        self.after_io(i);
    }

    /// After anything happened to session `i`: send its output (as much as the socket takes;
    /// the rest waits in the session, and EPOLLOUT tells when to go on), take its events,
    /// and re-arm its timer if its next deadline changed.
    fn after_io(&mut self, i: usize) {
        let d = &mut self.devices[i];
        if let Some(stream) = d.stream.as_mut() {
            if let Err(e) = d.session.write_output(stream) {
                d.session
                    .connection_lost(tether::handshake::io_error(e, "sending"));
            }
            let want = libc::EPOLLIN as u32
                | if d.session.wants_output() {
                    libc::EPOLLOUT as u32
                } else {
                    0
                };
            let mut ev = libc::epoll_event {
                events: want,
                u64: i as u64,
            };
            // SAFETY: a valid epoll fd and registered socket.
            unsafe {
                libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_MOD, stream.as_raw_fd(), &mut ev)
            };
        }
        while let Some(event) = d.session.poll_event() {
            match event {
                Event::Connected { .. } => {
                    d.connected = true;
                    self.stats.connects += 1;
                }
                Event::TelemetryAcked { .. } => self.stats.acked += 1,
                Event::Disconnected(why) => {
                    self.stats.disconnects += 1;
                    d.connected = false;
                    if let Some(stream) = d.stream.take() {
                        let _ = d.session.write_output(&mut &stream);
                        // SAFETY: a valid epoll fd; the socket is closed right after.
                        unsafe {
                            libc::epoll_ctl(
                                self.epoll,
                                libc::EPOLL_CTL_DEL,
                                stream.as_raw_fd(),
                                std::ptr::null_mut(),
                            )
                        };
                    }
                    if why.will_retry() {
                        eprintln!("session {i}: {why:?}; reconnecting");
                        self.reconnect.push_back((now() + 500, i));
                    } else if why != tether::session::Disconnect::Requested {
                        eprintln!("session {i}: {why:?}; not retrying");
                    }
                }
                _ => {}
            }
        }
        if let Some(Some(deadline)) = d.session.poll_deadline() {
            self.timers.push(std::cmp::Reverse((deadline, i)));
        }
    }

    /// Waits up to `wait_ms` for sockets, then fires due timers and reconnections.
    fn turn(&mut self, wait_ms: u64, buf: &mut [u8]) {
        let next = self
            .timers
            .peek()
            .map(|t| t.0 .0.saturating_sub(now()))
            .unwrap_or(wait_ms);
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: a valid epoll fd and event buffer.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll,
                events.as_mut_ptr(),
                256,
                next.min(wait_ms) as i32,
            )
        };
        for ev in &events[..n.max(0) as usize] {
            let i = ev.u64 as usize;
            let d = &mut self.devices[i];
            while let Some(stream) = d.stream.as_mut() {
                match stream.read(buf) {
                    Ok(0) => d.session.connection_lost(tether::Error::new(
                        tether::Code::ConnectionClosed,
                        "closed by the hub",
                    )),
                    Ok(n) => {
                        let _ = d.session.handle_input(&buf[..n], now());
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => d
                        .session
                        .connection_lost(tether::handshake::io_error(e, "receiving")),
                }
                break;
            }
            self.after_io(i);
        }
        while let Some(&std::cmp::Reverse((at, i))) = self.timers.peek() {
            if at > now() {
                break;
            }
            self.timers.pop();
            // Entries left by a deadline that has since moved are skipped.
            if self.devices[i]
                .session
                .next_deadline()
                .is_some_and(|d| d <= now())
            {
                self.devices[i].session.handle_timeout(now());
                self.after_io(i);
            }
        }
        while self.reconnect.front().is_some_and(|&(at, _)| at <= now()) {
            let (_, i) = self.reconnect.pop_front().unwrap();
            self.open(i);
        }
    }
}

fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: gateway CA_PEM DEVICES_FILE PORT [RATE] [SECONDS] [--full-handshakes]");
        std::process::exit(2);
    }
    let arg = |n: usize, default: u64| args.get(n).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (port, rate, seconds) = (arg(3, 0) as u16, arg(4, 1000), arg(5, 10));
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&args[1]).expect("CA file");
    // One configuration for every leaf identity: they resume each other's TLS sessions
    // (SAS identities are in the MQTT CONNECT), unless --full-handshakes.
    policy.enable_resumption(!args.iter().any(|a| a == "--full-handshakes"));
    let tls = policy.build().expect("TLS policy");
    let heap_before = LIVE.load(Relaxed);
    let mut devices = Vec::new();
    for line in std::fs::read_to_string(&args[2])
        .expect("devices file")
        .lines()
        .filter(|l| !l.is_empty())
    {
        let cs = ConnectionString::parse(line).expect("connection string");
        let config =
            SessionConfig::from_connection_string(&cs, tls.clone(), false).expect("config");
        devices.push(Device {
            session: Session::new(config).expect("session"),
            stream: None,
            connected: false,
        });
    }
    let n = devices.len();
    // SAFETY: plain syscall.
    let epoll = unsafe { libc::epoll_create1(0) };
    let mut gw = Gateway {
        devices,
        epoll,
        port,
        timers: BinaryHeap::new(),
        reconnect: VecDeque::new(),
        stats: Stats::default(),
    };
    let mut buf = vec![0u8; 16 * 1024];

    // Connect everyone, at most 64 handshakes at a time.
    let started = Instant::now();
    let mut opened = 0;
    while gw.stats.connects < n {
        while opened < n && opened - gw.stats.connects.min(opened) < 64 {
            gw.open(opened);
            opened += 1;
        }
        gw.turn(10, &mut buf);
        assert!(
            started.elapsed() < Duration::from_secs(30 + n as u64 / 10),
            "not all sessions connected"
        );
    }
    let connect_secs = started.elapsed().as_secs_f64();
    gw.turn(50, &mut buf); // let the last outputs leave
    let heap_per_session = (LIVE.load(Relaxed) - heap_before) / n;

    // Telemetry at RATE msg/s in total, round-robin, for SECONDS.
    let payload = [b'x'; 256];
    let bag = PropertyBag::new();
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    let total = rate * seconds;
    let mut next = 0usize;
    while gw.stats.sent < total {
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while gw.stats.sent < due {
            let i = next % n;
            next += 1;
            if gw.devices[i].connected
                && gw.devices[i]
                    .session
                    .send_telemetry(&payload, &bag, 1, now())
                    .is_ok()
            {
                gw.stats.sent += 1;
                gw.after_io(i);
            }
        }
        gw.turn(1, &mut buf);
    }
    let drain_until = Instant::now() + Duration::from_secs(30);
    while gw.stats.acked < gw.stats.sent && Instant::now() < drain_until {
        gw.turn(10, &mut buf);
    }
    let (cpu, wall) = (cpu_secs() - cpu0, t0.elapsed().as_secs_f64());
    let s = &gw.stats;
    println!("sessions {n}");
    println!(
        "connected {n} in {connect_secs:.2} s: {:.0} connects/s",
        n as f64 / connect_secs
    );
    println!("heap per session {heap_per_session} B");
    println!("messages {} in {wall:.2} s at {rate} msg/s: CPU {:.1} % of a core, {:.1} % per 1,000 msg/s", s.sent, cpu / wall * 100.0, cpu / wall * 100.0 * 1000.0 / rate as f64);
    println!(
        "acked {} lost {} disconnects {}",
        s.acked,
        s.sent - s.acked,
        s.disconnects
    );
}
