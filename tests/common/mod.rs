//! Test harness: real peers (openssl s_server, mosquitto), a test PKI made with openssl, and
//! small helpers. A peer that is missing makes the test fail with the package to install.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod hub;
pub mod pkcs11;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod faults;

/// Panics with an install hint unless `tool` is on PATH.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: this test needs it. Install it with \
         `apt-get install -y {package}` (or run .ci/run, which installs every peer)"
    );
}

/// A new empty directory under cargo's per-target temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    require("openssl", "openssl");
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// A test PKI: a CA, server certificates for each TLS case, and device certificates.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// The PKI shared by every test of this binary (made once, RSA 2048 so the ECDHE-RSA
    /// suites apply).
    pub fn shared() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| Pki::create(&temp_dir("pki")))
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Makes the PKI in `dir`.
    pub fn create(dir: &Path) -> Pki {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=Tether Test Root CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "other-ca.key",
                "-out",
                "other-ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=Unknown Test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        pki.leaf(
            "server",
            "localhost",
            "serverAuth",
            "DNS:localhost,IP:127.0.0.1",
            "ca",
        );
        pki.leaf(
            "wrong-host",
            "wrong.example.com",
            "serverAuth",
            "DNS:wrong.example.com",
            "ca",
        );
        pki.leaf(
            "untrusted",
            "localhost",
            "serverAuth",
            "DNS:localhost,IP:127.0.0.1",
            "other-ca",
        );
        pki.leaf("device", "my-device", "clientAuth", "", "ca");
        pki.expired_server();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "self-signed.key",
                "-out",
                "self-signed.pem",
                "-days",
                "365",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
        );
        // The same device key in DER forms, for the loaders.
        openssl(
            dir,
            &[
                "pkey",
                "-in",
                "device.key",
                "-outform",
                "DER",
                "-out",
                "device.key.der",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-in",
                "device.pem",
                "-outform",
                "DER",
                "-out",
                "device.der",
            ],
        );
        pki
    }

    /// Issues `name.pem`/`name.key` signed by `ca`.
    pub fn leaf(&self, name: &str, cn: &str, usage: &str, san: &str, ca: &str) {
        let mut ext = format!("extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n");
        if !san.is_empty() {
            ext.push_str(&format!("subjectAltName={san}\n"));
        }
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "825",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }

    fn expired_server(&self) {
        let dir = &self.dir;
        std::fs::create_dir_all(dir.join("ca-db")).unwrap();
        std::fs::write(dir.join("ca-db/index.txt"), "").unwrap();
        std::fs::write(dir.join("ca-db/serial"), "1000\n").unwrap();
        std::fs::write(
            dir.join("expired.cnf"),
            "[ca]\ndefault_ca=test\n[test]\ndir=ca-db\ndatabase=ca-db/index.txt\n\
             serial=ca-db/serial\nnew_certs_dir=ca-db\ncertificate=ca.pem\nprivate_key=ca.key\n\
             default_md=sha256\npolicy=any\ncopy_extensions=none\nx509_extensions=ext\n\
             [any]\ncommonName=supplied\n[ext]\nextendedKeyUsage=serverAuth\n\
             subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "expired.key",
                "-out",
                "expired.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                "expired.cnf",
                "-in",
                "expired.csr",
                "-out",
                "expired.pem",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
            ],
        );
    }
}

/// A running `openssl s_server` that accepts one connection and logs what it saw.
pub struct SServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl SServer {
    /// Starts `openssl s_server -accept 127.0.0.1:0 -naccept 1 -rev ARGS` in `dir`.
    #[allow(clippy::zombie_processes)] // the child is reaped by `Drop`
    pub fn start(dir: &Path, args: &[&str]) -> SServer {
        require("openssl", "openssl");
        let log = temp_dir("s_server").join("log");
        let file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("openssl")
            .current_dir(dir)
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-naccept",
                "1",
                "-rev",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("openssl s_server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = text
                .lines()
                .find_map(|l| l.strip_prefix("ACCEPT 127.0.0.1:"))
                .and_then(|p| p.trim().parse().ok())
            {
                return SServer { child, port, log };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("openssl s_server did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything s_server printed so far (waits briefly for it to finish its last line).
    pub fn log(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OpenSSL configuration that caps the protocol at TLS 1.2 (mosquitto's `tls_version`
/// is only a minimum).
pub fn tls12_cap_openssl_conf(dir: &Path) -> PathBuf {
    let path = dir.join("openssl-tls12.cnf");
    std::fs::write(
        &path,
        "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n\
         [ssl_sect]\nsystem_default = system_default_sect\n\
         [system_default_sect]\nMinProtocol = TLSv1.2\nMaxProtocol = TLSv1.2\n",
    )
    .unwrap();
    path
}

/// The cipher suites IoT Hub accepts, in OpenSSL's names.
pub const HUB_CIPHERS: &str =
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384";

/// A running mosquitto broker on 127.0.0.1.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts mosquitto with `listeners` (configuration text placed after the global
    /// settings; use `{port}` for the main port, which is picked here). Every listener binds
    /// 127.0.0.1. TLS listeners are capped at TLS 1.2 by an OpenSSL configuration.
    pub fn start(listeners: &str) -> Mosquitto {
        Mosquitto::start_on(listeners, None)
    }

    /// As [`Mosquitto::start`], on `port` when given (to restart a broker where its
    /// clients expect it).
    pub fn start_on(listeners: &str, port: Option<u16>) -> Mosquitto {
        Mosquitto::start_with("log_type all\n", listeners, port)
    }

    /// As [`Mosquitto::start_on`] with `globals` (configuration lines) in place of the
    /// default `log_type all` (benchmarks: logging every packet costs the broker 20-30 %).
    pub fn start_with(globals: &str, listeners: &str, port: Option<u16>) -> Mosquitto {
        require("mosquitto", "mosquitto");
        let dir = temp_dir("mosquitto");
        let port = port.unwrap_or_else(free_port);
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nlog_dest stderr\n{globals}\
                 per_listener_settings true\n{}\n",
                listeners.replace("{port}", &port.to_string())
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .env("OPENSSL_CONF", tls12_cap_openssl_conf(&dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("mosquitto starts");
        let mut broker = Mosquitto {
            child,
            port,
            dir,
            log,
        };
        if !wait_for_port(port, Duration::from_secs(10)) {
            let _ = broker.child.kill();
            panic!("mosquitto did not start:\n{}", broker.log());
        }
        broker
    }

    /// A TLS 1.2 listener configured like IoT Hub's endpoint, with `extra` settings.
    pub fn tls_listener(port: &str, pki: &Pki, extra: &str) -> String {
        format!(
            "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\n\
             tls_version tlsv1.2\nciphers {HUB_CIPHERS}\n{extra}\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem"),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the broker (as a crash would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake TLS server that answers the first ClientHello with `reply` and then waits for
/// the client to give up. Returns its port.
pub fn fake_tls_server(reply: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(&reply);
            let _ = stream.read(&mut buf);
        }
    });
    port
}

/// A ServerHello record with `version` and `suite` (no extensions).
pub fn server_hello(version: u16, suite: u16) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&suite.to_be_bytes());
    body.push(0);
    let mut hs = vec![2, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend(body);
    let mut record = vec![22, (version >> 8) as u8, version as u8];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

/// A command that runs `program`, a binary built for the test target: through
/// `TETHER_TEST_RUNNER` when it is set (a cross target under qemu-user, which cannot start a
/// foreign binary by itself without binfmt: `.ci/arm` sets it to the cargo runner), else directly.
pub fn target_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match std::env::var("TETHER_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// Runs the `tether` CLI and returns (exit code, stdout, stderr).
pub fn tether_cli(args: &[&str]) -> (i32, String, String) {
    let out = target_command(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .output()
        .expect("the tether binary runs");
    assert!(
        !(out.status.code() == Some(127) && out.stdout.is_empty()),
        "the tether binary did not start (exit 127: {}). A cross-built test under qemu-user \
         needs TETHER_TEST_RUNNER set to the cargo runner, e.g. \
         TETHER_TEST_RUNNER=\"qemu-arm -L /usr/arm-linux-gnueabihf\" (see .ci/arm)",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>, where cargo left libtether.{a,so} for this test run.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        dir.join("libtether.a").exists() && dir.join("libtether.so").exists(),
        "libtether.a/.so not found in {}: `cargo test` builds only the rlib; run \
         `cargo build --lib` first (.ci/test does)",
        dir.display()
    );
    dir
}

/// The python of `target/{venv}`, a venv where `import {imports}` works: made and filled
/// with `pip install {packages}` when it does not (.ci/setup makes it ahead of time). One
/// test at a time builds it; a failed install fails the test naming `what` and the packages.
pub fn python_venv(venv: &str, imports: &str, packages: &[&str], what: &str) -> PathBuf {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = MAKING.lock();
    let venv = root().join("target").join(venv);
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", &format!("import {imports}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready(&py) {
        require("python3", "python3 python3-venv");
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "cannot make a venv (install python3-venv): {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .args(packages)
            .output()
            .unwrap();
        assert!(
            pip.status.success() && ready(&py),
            "this test needs {what}: `pip install {}` into {} failed (run .ci/setup): {}",
            packages.join(" "),
            venv.display(),
            String::from_utf8_lossy(&pip.stderr)
        );
    }
    py
}

/// The system libraries a program linking `libtether.a` needs (what the Rust standard library
/// uses; `cargo rustc -- --print native-static-libs` lists them).
pub const STATIC_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// Compiles `tests/c/{name}.c` (or any `source` under the project root) as strict C99 against
/// `include/tether.h` (and rustls-ffi's `rustls.h`), linked with `libtether.a`; `cflags` go
/// before the source, `libs` after the library. Returns the program's path.
pub fn compile_c(name: &str, source: &str, cflags: &[&str], libs: &[&str]) -> PathBuf {
    require("cc", "gcc");
    let out = temp_dir(name).join(name);
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .args(cflags)
        .arg(format!("-I{}", env!("TETHER_RUSTLS_INCLUDE")))
        .arg(format!("-I{}", root().join("include").display()))
        .arg(root().join(source))
        .arg("-o")
        .arg(&out)
        .arg(lib_dir().join("libtether.a"))
        .args(libs)
        .args(STATIC_LIBS));
    out
}

/// Installs the libraries of this test run into a new prefix with cmake/install.sh.
pub fn install_prefix() -> PathBuf {
    let prefix = temp_dir("prefix");
    let profile = lib_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    run(Command::new("sh")
        .arg(root().join("cmake/install.sh"))
        .args(["--no-build", "--profile", &profile])
        .arg(&prefix)
        .current_dir(root()));
    prefix
}

/// Configures and builds c-examples/ with CMake against `prefix`; returns the build folder.
pub fn build_examples(prefix: &Path, link_static: bool) -> PathBuf {
    require("cmake", "cmake");
    let build = temp_dir("cmake-build");
    run(Command::new("cmake")
        .arg("-S")
        .arg(root().join("c-examples"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .arg(format!(
            "-DTETHER_LINK_STATIC={}",
            if link_static { "ON" } else { "OFF" }
        )));
    run(Command::new("cmake").arg("--build").arg(&build));
    build
}
