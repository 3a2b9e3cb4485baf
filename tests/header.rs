//! The committed header is exactly what cbindgen generates from the sources.

use std::path::Path;

#[test]
fn header_matches_the_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    // Only the C ABI (src/ffi/) and the result codes (src/error.rs) are parsed, so public
    // items of the Rust core never leak into the header.
    cbindgen::Builder::new()
        .with_src(root.join("src/ffi/mod.rs"))
        .with_src(root.join("src/error.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = root.join("include/tether.h");
    if std::env::var_os("TETHER_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/tether.h is out of date with the Rust sources; refresh it with: \
         TETHER_BLESS=1 cargo test --test header"
    );
}

#[test]
fn header_version_matches_cargo() {
    let header = include_str!("../include/tether.h");
    let define = format!(
        "#define TETHER_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        header.contains(&define),
        "cbindgen.toml's TETHER_VERSION_STRING differs from Cargo.toml's version"
    );
}
