//! The C ABI as C programs see it: the header compiles as C99 and C++ with every warning an
//! error, programs link against the static and the shared library, the CMake package and
//! pkg-config file work from an installed prefix, and the shared library exports only our
//! symbols.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{install_prefix, lib_dir, require, root, run, temp_dir, Pki, SServer};

const STRICT: &[&str] = &["-Wall", "-Wextra", "-Wpedantic", "-Werror"];

fn include_dir() -> String {
    root().join("include").to_string_lossy().into_owned()
}

fn rustls_include() -> &'static str {
    env!("TETHER_RUSTLS_INCLUDE")
}

#[test]
fn header_compiles_as_c99_and_cpp_with_warnings_as_errors() {
    require("cc", "gcc");
    require("c++", "g++");
    let dir = temp_dir("header");
    let plain = dir.join("plain.c");
    std::fs::write(
        &plain,
        "#include <tether.h>\nint main(void) { return TETHER_RESULT_OK; }\n",
    )
    .unwrap();
    let bridged = dir.join("bridged.c");
    std::fs::write(
        &bridged,
        "#include <rustls.h>\n#include <tether.h>\n\
         int main(void) { const rustls_client_config *c = 0; \
         return (int)tether_tls_config_rustls(0, &c); }\n",
    )
    .unwrap();
    // rustls-ffi 0.15's own rustls.h does not compile as C++ (it declares `rustls_result`
    // both as an enum and a typedef), so the bridge is checked in C only.
    for (compiler, std, files) in [
        ("cc", "-std=c99", vec![&plain, &bridged]),
        ("c++", "-std=c++11", vec![&plain]),
    ] {
        for file in files {
            let mut cmd = Command::new(compiler);
            cmd.args(STRICT).arg(std).arg("-fsyntax-only");
            if compiler == "c++" {
                cmd.args(["-x", "c++"]);
            }
            cmd.arg(format!("-I{}", include_dir()))
                .arg(format!("-I{}", rustls_include()))
                .arg(file);
            run(&mut cmd);
        }
    }
}

fn build_c(name: &str, sources: &[&Path], link_static: bool) -> PathBuf {
    require("cc", "gcc");
    let out = temp_dir(name).join(name);
    // The shared library is linked from an installed prefix, where its SONAME resolves.
    let lib = if link_static {
        lib_dir()
    } else {
        install_prefix().join("lib")
    };
    let mut cmd = Command::new("cc");
    cmd.arg("-std=c99")
        .args(STRICT)
        .arg(format!("-I{}", include_dir()));
    cmd.args(sources).arg("-o").arg(&out);
    if link_static {
        cmd.arg(lib.join("libtether.a")).args(common::STATIC_LIBS);
    } else {
        cmd.arg(format!("-L{}", lib.display()))
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-ltether");
    }
    run(&mut cmd);
    out
}

fn run_abi_checks(program: &Path) {
    let pki = Pki::shared();
    let server = SServer::start(
        &pki.dir,
        &["-cert", "server.pem", "-key", "server.key", "-tls1_2"],
    );
    let out = Command::new(program)
        .arg(server.port.to_string())
        .arg(pki.path("ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn c_program_linked_statically_follows_the_abi_contract() {
    let src = root().join("tests/c/abi_checks.c");
    let unit = root().join("tests/c/two_units.c");
    run_abi_checks(&build_c("abi_static", &[&src, &unit], true));
}

#[test]
fn c_program_linked_dynamically_follows_the_abi_contract() {
    let src = root().join("tests/c/abi_checks.c");
    let unit = root().join("tests/c/two_units.c");
    let program = build_c("abi_shared", &[&src, &unit], false);
    let ldd = run(Command::new("ldd").arg(&program));
    assert!(String::from_utf8_lossy(&ldd.stdout).contains("libtether.so.0."));
    run_abi_checks(&program);
}

#[test]
fn cmake_example_completes_a_handshake_linked_static_and_shared() {
    let prefix = install_prefix();
    let pki = Pki::shared();
    for link_static in [true, false] {
        let build = common::build_examples(&prefix, link_static);
        let server = SServer::start(
            &pki.dir,
            &["-cert", "server.pem", "-key", "server.key", "-tls1_2"],
        );
        let out = run(Command::new(build.join("tls_check"))
            .arg("localhost")
            .arg(server.port.to_string())
            .arg(pki.path("ca.pem")));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n",
            "static={link_static}"
        );
    }
}

#[test]
fn cmake_example_reports_a_policy_refusal() {
    let prefix = install_prefix();
    let pki = Pki::shared();
    let build = common::build_examples(&prefix, false);
    let server = SServer::start(
        &pki.dir,
        &[
            "-cert",
            "server.pem",
            "-key",
            "server.key",
            "-tls1_2",
            "-cipher",
            "AES128-GCM-SHA256",
        ],
    );
    let out = Command::new(build.join("tls_check"))
        .arg("localhost")
        .arg(server.port.to_string())
        .arg(pki.path("ca.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("handshake: "), "{err}");
    assert!(
        err.contains("handshake_failure") || err.contains("HandshakeFailure"),
        "{err}"
    );
}

#[test]
fn pkg_config_file_compiles_and_links_a_program() {
    require("pkg-config", "pkg-config");
    let prefix = install_prefix();
    let pc_path = prefix.join("lib/pkgconfig");
    let flags = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &pc_path)
        .args(["--cflags", "--libs", "--static", "tether"]));
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    assert!(flags.contains("-ltether"), "{flags}");
    let out = temp_dir("pkgconfig").join("prog");
    let src = out.with_extension("c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <tether.h>\nint main(void) { puts(tether_version()); return 0; }\n",
    )
    .unwrap();
    run(Command::new("cc")
        .arg("-std=c99")
        .args(STRICT)
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display())));
    let printed = run(&mut Command::new(&out));
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn shared_library_exports_only_tether_and_rustls_symbols_with_a_soname() {
    require("nm", "binutils");
    let so = lib_dir().join("libtether.so");
    let out = run(Command::new("nm").args(["-D", "--defined-only"]).arg(&so));
    let symbols: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    assert!(symbols.iter().any(|s| s == "tether_tls_config_builder_new"));
    assert!(symbols.iter().any(|s| s == "rustls_client_connection_new"));
    let foreign: Vec<&String> = symbols
        .iter()
        .filter(|s| {
            !(s.starts_with("tether_") || s.starts_with("rustls_") || s.starts_with("RUSTLS_"))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "unexpected exported symbols: {foreign:?}"
    );
    let dynamic = run(Command::new("readelf").arg("-d").arg(&so));
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.contains(&format!("Library soname: [{}]", env!("TETHER_SONAME"))),
        "{dynamic}"
    );
}
