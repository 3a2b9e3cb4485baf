//! Build script: gives the shared library its SONAME (and a link by that name beside it in
//! cargo's output folder, so a program linked against `target/<profile>/libtether.so` finds
//! it at run time), and tells the install script where rustls-ffi's header is (it is
//! installed beside ours, never committed).

fn main() {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    // 0.x releases may break the ABI at each minor version, so the SONAME carries both.
    let soname = if major == "0" {
        format!("libtether.so.0.{minor}")
    } else {
        format!("libtether.so.{major}")
    };
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        link_soname_in_output_dir(&soname);
    }
    if let Ok(include) = std::env::var("DEP_RUSTLS_FFI_INCLUDE") {
        // Recorded for the install script and the tests: OUT_DIR/rustls-include holds the path.
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
        std::fs::write(out.join("rustls-include"), &include).unwrap();
        println!("cargo:rustc-env=TETHER_RUSTLS_INCLUDE={include}");
    }
    println!("cargo:rustc-env=TETHER_SONAME={soname}");
    println!("cargo:rerun-if-changed=build.rs");
}

/// A program linked with `-L target/<profile> -ltether` records the SONAME
/// (`libtether.so.0.1`) as what it needs; cargo only writes `libtether.so`. So the output
/// folder gets `libtether.so.0.1 -> libtether.so`, as an install prefix has
/// (cmake/install.sh). OUT_DIR is `target/[<triple>/]<profile>/build/tether-<hash>/out`.
fn link_soname_in_output_dir(soname: &str) {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    if out.ancestors().nth(2).and_then(|b| b.file_name()) != Some("build".as_ref()) {
        return;
    }
    let link = profile_dir.join(soname);
    if std::fs::read_link(&link).ok().as_deref() == Some("libtether.so".as_ref()) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    if let Err(e) = std::os::unix::fs::symlink("libtether.so", &link) {
        println!(
            "cargo:warning=cannot link {} to libtether.so: {e}",
            link.display()
        );
    }
}
