//! ARM Linux cross builds (aarch64, armv7 hard float) proven on emulated CPUs: each target is
//! cross-built and installed into a prefix with `cmake/install.sh --target`, the installed CLI
//! answers known inputs under qemu-user, and the C example, cross-built with CMake and our
//! toolchain file against that prefix (static and shared), completes a TLS 1.2 handshake with
//! a TLS-1.2-only mosquitto listener on 127.0.0.1, and the cross-built `telemetry_sas` sends
//! telemetry through the local IoT Hub stand-in under qemu. The C ABI contract program of
//! tests/c_abi.rs (tests/c/abi_checks.c) is cross-compiled through the installed pkg-config
//! file and runs under qemu as well.
//!
//! These tests cross-compile the library (minutes), so a plain `cargo test` lists them as
//! ignored; `.ci/arm` (called by `.ci/test`) runs them with `cargo test --test arm -- --ignored`.
//! A missing cross compiler, sysroot, qemu or Rust target fails with what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use common::{fake_tls_server, require, run, server_hello, temp_dir, Mosquitto, Pki, SServer};

struct Target {
    /// Rust target triple.
    rust: &'static str,
    /// Debian's GNU triple: compiler prefix and sysroot /usr/<gnu>.
    gnu: &'static str,
    gcc_package: &'static str,
    libc_package: &'static str,
    qemu: &'static str,
    toolchain: &'static str,
    /// What `readelf -h` says in its Machine line.
    machine: &'static str,
}

const AARCH64: Target = Target {
    rust: "aarch64-unknown-linux-gnu",
    gnu: "aarch64-linux-gnu",
    gcc_package: "gcc-aarch64-linux-gnu",
    libc_package: "libc6-dev-arm64-cross",
    qemu: "qemu-aarch64",
    toolchain: "cmake/toolchain-aarch64-linux-gnu.cmake",
    machine: "AArch64",
};

const ARMV7: Target = Target {
    rust: "armv7-unknown-linux-gnueabihf",
    gnu: "arm-linux-gnueabihf",
    gcc_package: "gcc-arm-linux-gnueabihf",
    libc_package: "libc6-dev-armhf-cross",
    qemu: "qemu-arm",
    toolchain: "cmake/toolchain-armv7-linux-gnueabihf.cmake",
    machine: "ARM",
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl Target {
    fn sysroot(&self) -> PathBuf {
        PathBuf::from(format!("/usr/{}", self.gnu))
    }

    /// Fails with the package or command to install when something the cross build needs is
    /// missing.
    fn require_tools(&self) {
        require(&format!("{}-gcc", self.gnu), self.gcc_package);
        require(self.qemu, "qemu-user");
        require("cmake", "cmake");
        require("readelf", "binutils");
        assert!(
            self.sysroot().join("lib/libc.so.6").exists(),
            "the {} C library is missing from {}: install it with `apt-get install -y {}`",
            self.rust,
            self.sysroot().display(),
            self.libc_package
        );
        let sysroot = run(Command::new("rustc").args(["--print", "sysroot"]));
        let rustlib = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim())
            .join("lib/rustlib")
            .join(self.rust);
        assert!(
            rustlib.exists(),
            "the Rust standard library for {} is not installed: run `rustup target add {}`",
            self.rust,
            self.rust
        );
    }

    /// A prefix holding this target's cross build (debug profile: the tests are about
    /// behaviour; sizes are measured by benches/sizes.sh). Built once per test run.
    fn prefix(&self) -> PathBuf {
        static PREFIXES: Mutex<Vec<(&'static str, PathBuf)>> = Mutex::new(Vec::new());
        let mut prefixes = PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = prefixes.iter().find(|(t, _)| *t == self.rust) {
            return p.clone();
        }
        self.require_tools();
        let prefix = temp_dir(&format!("prefix-{}", self.rust));
        run(Command::new("sh")
            .arg(root().join("cmake/install.sh"))
            .args(["--target", self.rust, "--profile", "debug"])
            .arg(&prefix)
            .current_dir(root()));
        prefixes.push((self.rust, prefix.clone()));
        prefix
    }

    /// A command running `program` (built for this target) under qemu-user.
    fn emulated(&self, program: &Path) -> Command {
        let mut cmd = Command::new(self.qemu);
        cmd.arg("-L").arg(self.sysroot()).arg(program);
        cmd
    }

    fn readelf(&self, args: &[&str], file: &Path) -> String {
        let out = run(Command::new("readelf").args(args).arg(file));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn assert_machine(&self, file: &Path) {
        let header = self.readelf(&["-h"], file);
        let machine = header
            .lines()
            .find_map(|l| l.trim().strip_prefix("Machine:"))
            .unwrap_or_default()
            .trim();
        assert_eq!(machine, self.machine, "{}", file.display());
        if self.rust.ends_with("gnueabihf") {
            // Hard-float calling convention, as Debian's armhf libraries expect.
            let attrs = self.readelf(&["-A"], file);
            assert!(attrs.contains("Tag_ABI_VFP_args: VFP registers"), "{attrs}");
        }
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- the installed prefix ----

fn prefix_is_complete_and_built_for_the_target(t: &Target) {
    let prefix = t.prefix();
    for file in [
        "lib/libtether.a",
        "lib/libtether.so",
        "lib/libtether.so.0.1",
        "bin/tether",
        "include/tether.h",
        "include/rustls.h",
        "lib/cmake/tether/tetherConfig.cmake",
        "lib/cmake/tether/tetherConfigVersion.cmake",
        "lib/pkgconfig/tether.pc",
    ] {
        assert!(prefix.join(file).exists(), "{file} is not installed");
    }
    let so = prefix.join("lib/libtether.so.0.1");
    t.assert_machine(&so);
    t.assert_machine(&prefix.join("bin/tether"));
    let dynamic = t.readelf(&["-d"], &so);
    assert!(
        dynamic.contains(&format!("Library soname: [{}]", env!("TETHER_SONAME"))),
        "{dynamic}"
    );
    // Only our symbols (and rustls-ffi's) are exported on ARM too.
    let symbols = t.readelf(&["--dyn-syms", "-W"], &so);
    let exported: Vec<&str> = symbols
        .lines()
        .filter(|l| l.contains(" GLOBAL ") && !l.contains(" UND "))
        .filter_map(|l| l.split_whitespace().nth(7))
        .collect();
    assert!(
        exported.contains(&"tether_tls_config_builder_new"),
        "{exported:?}"
    );
    assert!(
        exported.contains(&"rustls_client_connection_new"),
        "{exported:?}"
    );
    let foreign: Vec<&&str> = exported
        .iter()
        .filter(|s| {
            !(s.starts_with("tether_") || s.starts_with("rustls_") || s.starts_with("RUSTLS_"))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "unexpected exported symbols: {foreign:?}"
    );
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn aarch64_prefix_is_complete_and_built_for_the_target() {
    prefix_is_complete_and_built_for_the_target(&AARCH64);
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn armv7_prefix_is_complete_and_built_for_the_target() {
    prefix_is_complete_and_built_for_the_target(&ARMV7);
}

// ---- the CLI's known answers under qemu ----

fn cli_gives_known_answers_under_qemu(t: &Target) {
    let cli = t.prefix().join("bin/tether");
    let pki = Pki::shared();
    let ca = pki.path("ca.pem");

    let out = run(t.emulated(&cli).arg("version"));
    assert_eq!(
        text(&out).0,
        format!("tether {}\n", env!("CARGO_PKG_VERSION"))
    );

    // Against openssl s_server: the exact first lines.
    let server = SServer::start(
        &pki.dir,
        &["-cert", "server.pem", "-key", "server.key", "-tls1_2"],
    );
    let target = format!("localhost:{}", server.port);
    let out = run(t
        .emulated(&cli)
        .args(["tls-check", &target, "--ca", &ca, "--timeout", "20"]));
    let (stdout, _) = text(&out);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
    );
    assert_eq!(lines.next(), Some("0 subject: CN=localhost"));
    assert_eq!(lines.next(), Some("  issuer: CN=Tether Test Root CA"));
    assert!(
        server.log().contains("Protocol version: TLSv1.2"),
        "{}",
        server.log()
    );

    // A server limited to TLS 1.1: refused, with the TLS exit status and the cause.
    let old = SServer::start(
        &pki.dir,
        &[
            "-cert",
            "server.pem",
            "-key",
            "server.key",
            "-min_protocol",
            "TLSv1",
            "-max_protocol",
            "TLSv1.1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
    );
    let target = format!("localhost:{}", old.port);
    let out = t
        .emulated(&cli)
        .args(["tls-check", &target, "--ca", &ca, "--timeout", "20"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert_eq!(
        stderr.lines().next().unwrap_or_default(),
        "tether: server does not accept TLS 1.2 (protocol_version alert); \
         IoT Hub policy requires TLS 1.2 (TETHER_RESULT_TLS_VERSION_REFUSED)"
    );

    // A server answering with a downgraded ServerHello: refused by the client itself.
    let port = fake_tls_server(server_hello(0x0302, 0xc02f));
    let target = format!("localhost:{port}");
    let out = t
        .emulated(&cli)
        .args(["tls-check", &target, "--ca", &ca, "--timeout", "20"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert_eq!(
        stderr.lines().next().unwrap_or_default(),
        "tether: server offered TLSv1.1; IoT Hub policy requires TLS 1.2 \
         (TETHER_RESULT_TLS_VERSION_REFUSED)"
    );
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn aarch64_cli_gives_known_answers_under_qemu() {
    cli_gives_known_answers_under_qemu(&AARCH64);
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn armv7_cli_gives_known_answers_under_qemu() {
    cli_gives_known_answers_under_qemu(&ARMV7);
}

// ---- the C example, cross-built with CMake and our toolchain file ----

fn cmake_cross_built_example_talks_tls12_to_the_local_broker(t: &Target) {
    let prefix = t.prefix();
    let pki = Pki::shared();
    let broker = Mosquitto::start(&Mosquitto::tls_listener(
        "{port}",
        pki,
        "allow_anonymous true",
    ));
    let mut static_build = None;
    for link_static in ["ON", "OFF"] {
        let build = temp_dir(&format!("cmake-{}", t.rust));
        if link_static == "ON" {
            static_build = Some(build.clone());
        }
        run(Command::new("cmake")
            .arg("-S")
            .arg(root().join("c-examples"))
            .arg("-B")
            .arg(&build)
            .arg(format!(
                "-DCMAKE_TOOLCHAIN_FILE={}",
                root().join(t.toolchain).display()
            ))
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
            .arg(format!("-DTETHER_LINK_STATIC={link_static}")));
        run(Command::new("cmake").arg("--build").arg(&build));
        let program = build.join("tls_check");
        t.assert_machine(&program);
        let needed = t.readelf(&["-d"], &program);
        assert_eq!(
            needed.contains("Shared library: [libtether.so.0.1]"),
            link_static == "OFF",
            "static={link_static}: {needed}"
        );
        // ctest starts the program through the toolchain file's CMAKE_CROSSCOMPILING_EMULATOR.
        run(Command::new("ctest")
            .arg("--output-on-failure")
            .current_dir(&build));
        let out = run(t
            .emulated(&program)
            .arg("localhost")
            .arg(broker.port.to_string())
            .arg(pki.path("ca.pem")));
        assert_eq!(
            text(&out).0,
            "TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n",
            "static={link_static}\nbroker log:\n{}",
            broker.log()
        );
    }
    // The cross-built device example sends telemetry through the local IoT Hub stand-in
    // (host `tether hub`: mosquitto with the plugin verifying the SAS token it makes).
    let hub = StandIn::start("arm-dev", ARM_DEVICE_KEY);
    let program = static_build.expect("built").join("telemetry_sas");
    let out = run(t
        .emulated(&program)
        .arg("3")
        .env(
            "TETHER_CONNECTION_STRING",
            format!(
                "HostName=arm-hub.azure-devices.net;DeviceId=arm-dev;\
                 SharedAccessKey={ARM_DEVICE_KEY};GatewayHostName=localhost"
            ),
        )
        .env("TETHER_PORT", hub.port.to_string())
        .env("TETHER_CA_FILE", hub.dir.join("ca.pem")));
    assert!(text(&out).0.ends_with("acked 3\n"), "{:?}", text(&out));
    assert!(hub.log().contains("accepted \"arm-dev\""), "{}", hub.log());
}

const ARM_DEVICE_KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

/// The local IoT Hub stand-in (`tether hub`, built for the host) with one SAS device.
struct StandIn {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl StandIn {
    fn start(device: &str, key: &str) -> StandIn {
        use std::io::BufRead;
        let cli = PathBuf::from(env!("CARGO_BIN_EXE_tether"));
        assert!(
            cli.with_file_name("libtether_hub.so").is_file(),
            "the hub plugin is missing beside {}: run `cargo build --workspace --lib` (.ci/test does)",
            cli.display()
        );
        let root = temp_dir("arm-hub");
        let dir = root.join("hub");
        let registry = root.join("registry.json");
        std::fs::write(
            &registry,
            format!(
                "{{\"hostName\": \"arm-hub.azure-devices.net\", \"certificateAuthorities\": [], \
                 \"devices\": [{{\"deviceId\": \"{device}\", \"status\": \"enabled\", \
                 \"authentication\": {{\"type\": \"sas\", \"symmetricKey\": \
                 {{\"primaryKey\": \"{key}\"}}}}}}]}}"
            ),
        )
        .unwrap();
        let (port, x509) = (common::free_port(), common::free_port());
        let log = root.join("hub.log");
        let mut child = Command::new(&cli)
            .args(["hub", "--registry"])
            .arg(&registry)
            .args([
                "--port",
                &port.to_string(),
                "--x509-port",
                &x509.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("tether hub starts");
        let mut line = String::new();
        let _ = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let hub = StandIn {
            child,
            port,
            dir,
            log,
        };
        assert!(
            line.trim()
                .starts_with(&format!("ready sas={port} x509={x509} service=")),
            "{line}: {}",
            hub.log()
        );
        hub
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // SIGTERM, so that `tether hub` stops its mosquitto too (SIGKILL would orphan it).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn aarch64_cmake_cross_built_example_talks_tls12_to_the_local_broker() {
    cmake_cross_built_example_talks_tls12_to_the_local_broker(&AARCH64);
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn armv7_cmake_cross_built_example_talks_tls12_to_the_local_broker() {
    cmake_cross_built_example_talks_tls12_to_the_local_broker(&ARMV7);
}

// ---- the C ABI contract, checked from C on the emulated CPU ----

/// tests/c/abi_checks.c (the program tests/c_abi.rs runs on the host), cross-compiled against
/// the installed prefix: statically with libtether.a, and dynamically with the flags of the
/// installed pkg-config file; each run under qemu against an s_server.
fn c_abi_contract_holds_under_qemu(t: &Target) {
    require("pkg-config", "pkg-config");
    let prefix = t.prefix();
    let pki = Pki::shared();
    let sources = [
        root().join("tests/c/abi_checks.c"),
        root().join("tests/c/two_units.c"),
    ];
    let pc = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .env("PKG_CONFIG_LIBDIR", "")
        .args(["--cflags", "--libs", "--static", "tether"]));
    let pc = String::from_utf8_lossy(&pc.stdout).into_owned();
    let static_libs: Vec<&str> = pc
        .split_whitespace()
        .filter(|f| f.starts_with("-l") && *f != "-ltether")
        .collect();
    for link_static in [true, false] {
        let program = temp_dir(&format!("abi-{}", t.rust)).join("abi_checks");
        let mut cc = Command::new(format!("{}-gcc", t.gnu));
        cc.args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
            .args(&sources)
            .arg("-o")
            .arg(&program);
        if link_static {
            cc.arg(format!("-I{}", prefix.join("include").display()))
                .arg(prefix.join("lib/libtether.a"))
                .args(&static_libs)
                .arg("-Wl,--gc-sections");
        } else {
            cc.args(pc.split_whitespace().filter(|f| !static_libs.contains(f)))
                .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()));
        }
        run(&mut cc);
        t.assert_machine(&program);
        let server = SServer::start(
            &pki.dir,
            &["-cert", "server.pem", "-key", "server.key", "-tls1_2"],
        );
        let out = t
            .emulated(&program)
            .arg(server.port.to_string())
            .arg(pki.path("ca.pem"))
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "static={link_static}\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(" passed, 0 failed"),
            "static={link_static}: {stdout}"
        );
    }
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn aarch64_c_abi_contract_holds_under_qemu() {
    c_abi_contract_holds_under_qemu(&AARCH64);
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn armv7_c_abi_contract_holds_under_qemu() {
    c_abi_contract_holds_under_qemu(&ARMV7);
}

// ---- identity through the C ABI on the emulated CPU ----

/// HMAC-SHA256 of `message` under the base64 `key`, base64-encoded, computed by openssl alone.
fn openssl_hmac_base64(key: &str, message: &str) -> String {
    require("openssl", "openssl");
    let script = "key=$(printf %s \"$1\" | openssl base64 -d -A | od -An -v -tx1 | tr -d ' \\n'); \
                  printf %s \"$2\" | openssl dgst -sha256 -mac HMAC -macopt \"hexkey:$key\" -binary \
                  | openssl base64 -A";
    let out = run(Command::new("sh").args(["-c", script, "sh", key, message]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// tests/c/identity_checks.c (the program tests/identity.rs runs on the host), cross-compiled
/// statically against the installed prefix: its own checks pass under qemu, and the SAS token
/// the ARM library made matches one computed by openssl on the host.
fn c_identity_checks_pass_under_qemu(t: &Target) {
    let prefix = t.prefix();
    let program = temp_dir(&format!("identity-{}", t.rust)).join("identity_checks");
    run(Command::new(format!("{}-gcc", t.gnu))
        .args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .arg("-D_POSIX_C_SOURCE=200809L")
        .arg(format!("-I{}", prefix.join("include").display()))
        .arg(root().join("tests/c/identity_checks.c"))
        .arg("-o")
        .arg(&program)
        .arg(prefix.join("lib/libtether.a"))
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ]));
    t.assert_machine(&program);
    let out = t
        .emulated(&program)
        .arg(Pki::shared().path("device.der"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let sig = openssl_hmac_base64(
        "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=",
        "myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692",
    );
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN "))
        .unwrap_or_else(|| panic!("no TOKEN line: {stdout}"));
    assert_eq!(
        token,
        format!(
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig={}&se=1578941692",
            tether::auth::sas::url_encode_string(&sig)
        )
    );
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn aarch64_c_identity_checks_pass_under_qemu() {
    c_identity_checks_pass_under_qemu(&AARCH64);
}

#[test]
#[ignore = "cross-compiles for ARM: run by .ci/arm (cargo test --test arm -- --ignored)"]
fn armv7_c_identity_checks_pass_under_qemu() {
    c_identity_checks_pass_under_qemu(&ARMV7);
}
