//! Build script: gives the shared library its SONAME, and tells the install script where
//! rustls-ffi's header is (it is installed beside ours, never committed).

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
