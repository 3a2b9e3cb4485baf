//! The C ABI abuse harness (tests/c/abuse.c) under valgrind: every exported function called
//! with NULL, invalid UTF-8, size queries, short, exact and overlapping buffers and random
//! content, with zero memory errors and zero definite leaks required, and every exported
//! `tether_*` symbol exercised (a new export fails this test until the harness calls it).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{lib_dir, require, root, run, temp_dir, Pki};

fn build_harness() -> std::path::PathBuf {
    require("cc", "gcc");
    let out = temp_dir("abuse").join("abuse");
    run(Command::new("cc")
        .args([
            "-std=c99",
            "-g",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
        ])
        .arg(format!("-I{}", env!("TETHER_RUSTLS_INCLUDE")))
        .arg(format!("-I{}", root().join("include").display()))
        .arg(root().join("tests/c/abuse.c"))
        .arg("-o")
        .arg(&out)
        .arg(lib_dir().join("libtether.a"))
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ]));
    out
}

/// The `tether_*` functions the shared library exports.
///
/// The `rustls_*` symbols are excluded on purpose: they are rustls-ffi's own C API,
/// re-exported unchanged so a stack can run its own connection loop. Their argument
/// checking is rustls-ffi's contract, tested by that project; the harness uses one of them
/// (`rustls_client_config_free`) only to release what `tether_tls_config_rustls` hands out.
fn exported_functions() -> BTreeSet<String> {
    require("nm", "binutils");
    let out = run(Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib_dir().join("libtether.so")));
    let text = String::from_utf8_lossy(&out.stdout);
    let symbols: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(
        symbols.iter().any(|s| s.starts_with("rustls_")),
        "the rustls-ffi re-exports disappeared: update the exclusion above"
    );
    symbols
        .into_iter()
        .filter(|s| s.starts_with("tether_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_export_survives_abuse_under_valgrind() {
    require("valgrind", "valgrind");
    let harness = build_harness();
    let pki = Pki::shared();
    let root_der = root().join("src/roots/DigiCert_Global_Root_G2.der");
    let out = Command::new("valgrind")
        .args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--track-origins=yes",
            "-q",
        ])
        .arg(&harness)
        .arg(&pki.dir)
        .arg(&root_der)
        .env_remove("TETHER_CONNECTION_STRING")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failures.is_empty(),
        "{} contract violations:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        out.status.success(),
        "the harness (under valgrind) exited with {:?}\n--- stdout (tail)\n{}\n--- valgrind\n{}",
        out.status.code(),
        stdout.lines().rev().take(20).collect::<Vec<_>>().join("\n"),
        stderr
    );
    assert!(stdout.contains(", 0 failed"), "{stdout}");

    let exercised: BTreeSet<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("exercised "))
        .map(str::to_owned)
        .collect();
    let exported = exported_functions();
    let missing: Vec<&String> = exported.difference(&exercised).collect();
    assert!(
        missing.is_empty(),
        "exported but not exercised by tests/c/abuse.c (add them there): {missing:?}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.ends_with(" failed"))
        .unwrap_or_default();
    println!("{} exports exercised; {summary}", exported.len());
}
