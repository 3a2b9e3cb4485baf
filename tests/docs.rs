//! The docs keep their promises: every C snippet marked ```` ```c compile ```` in README.md,
//! CONTRIBUTING.md and docs/*.md compiles against include/tether.h with
//! `-Wall -Wextra -Werror`; and the README's C example, built with the README's one command
//! straight from cargo's output folder, runs and gets its telemetry acknowledged by the local
//! IoT Hub stand-in.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::hub::{registry, sas_device, Hub, HOST};
use common::{lib_dir, require, root, run, temp_dir};

const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

/// The ```` ```c compile ```` blocks of a Markdown file, in order.
fn compilable_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start() == "```c compile" => current = Some(String::new()),
            Some(block) if line.trim_start() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unterminated ```c compile block");
    blocks
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn cc() -> Command {
    require("cc", "gcc");
    let mut cmd = Command::new("cc");
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(root().join("include"))
        .arg("-I")
        .arg(env!("TETHER_RUSTLS_INCLUDE")); // rustls.h, for the rustls-ffi bridge
    cmd
}

#[test]
fn c_snippets_in_the_docs_compile() {
    let dir = temp_dir("doc-snippets");
    let mut compiled = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        // No C in the docs escapes the compiler: every C block is marked compilable.
        for info in text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("```"))
        {
            let is_c = info.split_whitespace().next() == Some("c");
            assert!(
                !is_c || info == "c compile",
                "{}: a C block that is not ```c compile: {info}",
                file.display()
            );
        }
        for (i, block) in compilable_blocks(&text).into_iter().enumerate() {
            let name = format!("{}-{i}", file.file_stem().unwrap().to_string_lossy());
            let source = dir.join(format!("{name}.c"));
            std::fs::write(&source, &block).unwrap();
            let out = cc()
                .arg("-c")
                .arg(&source)
                .arg("-o")
                .arg(dir.join(format!("{name}.o")))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "snippet {i} of {} does not compile:\n{}\n{block}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            compiled.push(name);
        }
    }
    // The README's example and the identity page's SAS example at least.
    assert!(
        compiled.iter().any(|n| n.starts_with("README")),
        "{compiled:?}"
    );
    assert!(
        compiled.iter().any(|n| n.starts_with("identity")),
        "{compiled:?}"
    );
}

/// The README's command, with cargo's output folder of this test run for target/release.
fn readme_link_command(readme: &str, source: &Path, exe: &Path, libs: &Path) -> Command {
    let line = readme
        .lines()
        .find(|l| l.starts_with("cc app.c "))
        .expect("README.md names the cc command");
    assert_eq!(
        line,
        "cc app.c -Iinclude -Ltarget/release -ltether -Wl,-rpath,\"$PWD/target/release\" -o app"
    );
    let mut cmd = cc();
    cmd.arg(source)
        .arg(format!("-L{}", libs.display()))
        .arg("-ltether")
        .arg(format!("-Wl,-rpath,{}", libs.display()))
        .arg("-o")
        .arg(exe);
    cmd
}

#[test]
fn the_readme_example_links_against_cargos_library_and_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let example = compilable_blocks(&readme).remove(0);
    assert!(
        example.lines().count() <= 26,
        "the front page example stays short"
    );
    let dir = temp_dir("readme-example");
    let source = dir.join("app.c");
    std::fs::write(&source, example).unwrap();
    let exe = dir.join("app");
    let libs = lib_dir();
    run(&mut readme_link_command(&readme, &source, &exe, &libs));

    // It needs the library by its SONAME, which the cargo build left beside libtether.so.
    let dynamic = run(Command::new("readelf").args(["-d"]).arg(&exe));
    let needed = format!("Shared library: [{}]", env!("TETHER_SONAME"));
    assert!(
        String::from_utf8_lossy(&dynamic.stdout).contains(&needed),
        "{}",
        String::from_utf8_lossy(&dynamic.stdout)
    );
    assert_eq!(
        std::fs::read_link(libs.join(env!("TETHER_SONAME"))).unwrap(),
        Path::new("libtether.so")
    );

    let hub = Hub::start(&registry(&[], &[sas_device("readme", "enabled", KEY, KEY)]));
    let out = Command::new(&exe)
        .env(
            "TETHER_CONNECTION_STRING",
            format!(
                "HostName={HOST};DeviceId=readme;SharedAccessKey={KEY};GatewayHostName=localhost"
            ),
        )
        .env("TETHER_CA_FILE", hub.ca())
        .env("TETHER_PORT", hub.sas.to_string())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "acknowledged\n");
}
