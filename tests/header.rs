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

/// The header's `enum tether_result` and the Rust table generated from the `Code` enum agree:
/// every C name, value and description, and nothing more (cbindgen's renaming and build.rs's
/// are the same rule).
#[test]
fn result_codes_in_the_header_match_the_generated_table() {
    let header = include_str!("../include/tether.h");
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let start = header.find("typedef enum tether_result {").unwrap();
    let body = &header[start..start + header[start..].find("} tether_result;").unwrap()];
    let mut seen = 0;
    // Each enumerator is `/* description */ NAME = VALUE,`.
    for entry in body.split("/*").skip(1) {
        let (comment, rest) = entry.split_once("*/").unwrap();
        let mut words = rest.split_whitespace();
        let (name, _, value) = (words.next().unwrap(), words.next(), words.next().unwrap());
        let value: u32 = value.trim_end_matches(',').parse().unwrap();
        let code = tether::Code::from_u32(value)
            .unwrap_or_else(|| panic!("{name} = {value} is not in the Rust table"));
        assert_eq!(code.name(), name);
        assert_eq!(code.c_name().to_str().unwrap(), name);
        assert_eq!(squash(code.description()), squash(comment), "{name}");
        seen += 1;
    }
    assert_eq!(
        seen,
        tether::Code::ALL.len(),
        "codes in tether.h vs Code::ALL"
    );
}

/// The C# binding's `Result` enum is generated from the same table (names, values and
/// descriptions as XML docs); `TETHER_BLESS=1` rewrites it. Its tests check it against
/// tether.h too.
#[test]
fn csharp_result_enum_is_generated_from_the_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bindings/csharp/src/Result.cs");
    let text = std::fs::read_to_string(&path).unwrap();
    let open = "    public enum Result : int\n    {\n";
    let start = text
        .find(open)
        .expect("Result.cs declares `public enum Result : int`")
        + open.len();
    let end = start + text[start..].find("    }\n").unwrap();
    let mut members = String::new();
    for code in tether::Code::ALL {
        let doc = xml_doc(code.description());
        members.push_str(&format!(
            "        /// <summary>{doc}</summary>\n        {code:?} = {},\n",
            *code as u32
        ));
    }
    if std::env::var_os("TETHER_BLESS").is_some() {
        let blessed = format!("{}{members}{}", &text[..start], &text[end..]);
        std::fs::write(&path, blessed).unwrap();
    } else {
        assert!(
            text[start..end] == members,
            "bindings/csharp/src/Result.cs's Result enum is out of date with src/error.rs; \
             refresh it with: TETHER_BLESS=1 cargo test --test header"
        );
    }
}

/// A description as C# XML documentation: markup characters escaped, `code` as <c>code</c>.
fn xml_doc(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let mut out = String::new();
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("<c>{part}</c>"));
        } else {
            out.push_str(part);
        }
    }
    out
}
