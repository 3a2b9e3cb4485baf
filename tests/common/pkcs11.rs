//! SoftHSM2 tokens for tests: a token directory inside the test's temp folder
//! (`SOFTHSM2_CONF`), tokens initialised with softhsm2-util, keys imported with softhsm2-util
//! and certificates written with OpenSC's pkcs11-tool.
//!
//! A PKCS#11 module reads its configuration once per process (at `C_Initialize`), and tether
//! keeps a module loaded for the life of the process: the tests of one binary share one
//! SoftHSM configuration ([`SoftHsm::shared`]), made before the module is first loaded. A
//! test that needs another configuration (fewer mechanisms, a locked token) runs in a child
//! process of the same test binary ([`in_child`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::{require, run, temp_dir};

/// Where Debian's softhsm2 package installs the module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "1234";
/// The security officer PIN of every test token.
pub const SO_PIN: &str = "5678";

/// A SoftHSM2 configuration and its token directory.
pub struct SoftHsm {
    pub dir: PathBuf,
    pub conf: PathBuf,
}

impl SoftHsm {
    /// A new configuration; `extra` lines are appended (e.g. `slots.mechanisms = ...`).
    pub fn new(name: &str, extra: &str) -> SoftHsm {
        require("softhsm2-util", "softhsm2");
        require("pkcs11-tool", "opensc");
        assert!(
            Path::new(SOFTHSM_MODULE).is_file(),
            "{SOFTHSM_MODULE} is missing: apt-get install -y softhsm2"
        );
        let dir = temp_dir(name);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n{extra}\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        SoftHsm { dir, conf }
    }

    /// The configuration of this test process, set in `SOFTHSM2_CONF` (made once; a child
    /// started by [`in_child`] uses the one its parent gave it).
    pub fn shared() -> &'static SoftHsm {
        static HSM: OnceLock<SoftHsm> = OnceLock::new();
        HSM.get_or_init(|| {
            let hsm = match std::env::var_os("SOFTHSM2_CONF") {
                Some(conf) if std::env::var_os(CHILD).is_some() => {
                    let conf = PathBuf::from(conf);
                    SoftHsm {
                        dir: conf.parent().unwrap().to_path_buf(),
                        conf,
                    }
                }
                _ => SoftHsm::new("softhsm", ""),
            };
            std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
            hsm
        })
    }

    /// A command with this configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    /// Initialises a new token labelled `label` with [`PIN`] and [`SO_PIN`].
    pub fn init_token(&self, label: &str) {
        run(self.command("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ]));
    }

    /// Imports a PKCS#8 PEM private key onto `token` as `label` with `id` (hex).
    pub fn import_key(&self, token: &str, key_pem: &Path, label: &str, id_hex: &str) {
        // softhsm2-util wants unencrypted PKCS#8.
        let p8 = key_pem.with_extension("p8");
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(key_pem)
            .arg("-out")
            .arg(&p8));
        run(self
            .command("softhsm2-util")
            .arg("--import")
            .arg(&p8)
            .args([
                "--token", token, "--label", label, "--id", id_hex, "--pin", PIN,
            ]));
    }

    /// Writes a PEM certificate onto `token` as `label` with `id` (hex).
    pub fn write_cert(&self, token: &str, cert_pem: &Path, label: &str, id_hex: &str) {
        let der = cert_pem.with_extension("der");
        run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(cert_pem)
            .arg("-out")
            .arg(&der));
        run(self
            .tool(token)
            .arg("--write-object")
            .arg(&der)
            .args(["--type", "cert", "--label", label, "--id", id_hex]));
    }

    /// pkcs11-tool logged in to `token`.
    pub fn tool(&self, token: &str) -> Command {
        let mut cmd = self.command("pkcs11-tool");
        cmd.args([
            "--module",
            SOFTHSM_MODULE,
            "--token-label",
            token,
            "--login",
            "--pin",
            PIN,
        ]);
        cmd
    }

    /// The token's folder (SoftHSM names it by the token's serial).
    pub fn token_dir(&self, label: &str) -> PathBuf {
        for entry in std::fs::read_dir(self.dir.join("tokens")).unwrap() {
            let dir = entry.unwrap().path();
            let object = std::fs::read(dir.join("token.object")).unwrap_or_default();
            let padded = format!("{label:<32}");
            if object.windows(32).any(|w| w == padded.as_bytes()) {
                return dir;
            }
        }
        panic!(
            "no SoftHSM token labelled {label} in {}",
            self.dir.display()
        );
    }

    /// Marks the user PIN of `label` locked, as a token does after too many wrong PINs.
    /// SoftHSM honours the flag (`C_Login` returns CKR_PIN_LOCKED, `C_GetTokenInfo` shows
    /// CKF_USER_PIN_LOCKED) but never sets it itself: it counts no failures. The flag is the
    /// token attribute CKA_OS_TOKENFLAGS (0x8000534B, an unsigned long) in `token.object`.
    /// Use it before the module is loaded in the process that will see the token.
    pub fn lock_user_pin(&self, label: &str) {
        const CKF_USER_PIN_LOCKED: u64 = 0x0004_0000;
        let path = self.token_dir(label).join("token.object");
        let mut bytes = std::fs::read(&path).unwrap();
        let tag = [0, 0, 0, 0, 0x80, 0, 0x53, 0x4b, 0, 0, 0, 0, 0, 0, 0, 2];
        let at = bytes
            .windows(tag.len())
            .position(|w| w == tag)
            .expect("CKA_OS_TOKENFLAGS in token.object")
            + tag.len();
        let mut flags = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        flags |= CKF_USER_PIN_LOCKED;
        bytes[at..at + 8].copy_from_slice(&flags.to_be_bytes());
        std::fs::write(&path, bytes).unwrap();
    }
}

/// The variable that tells a test it runs as the child of [`in_child`].
pub const CHILD: &str = "TETHER_TEST_PKCS11_CHILD";

/// Whether this process is a child started by [`in_child`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs the test `name` of this test binary in a child process with `SOFTHSM2_CONF` set
/// to `hsm`'s configuration; the child knows it is one by [`is_child`]. Returns its output
/// (the test's assertions hold when it succeeds).
pub fn in_child(name: &str, hsm: &SoftHsm) -> Output {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child test {name} failed:\n{text}"
    );
    out
}

/// A software TPM 2.0 (swtpm) on local TCP ports with a tpm2-pkcs11 store holding one token,
/// stopped when dropped.
pub struct SwTpm {
    child: std::process::Child,
    pub dir: PathBuf,
    /// The TCTI configuration for tpm2-tools and tpm2-pkcs11, e.g. `swtpm:port=2321`.
    pub tcti: String,
    /// tpm2-pkcs11's module.
    pub module: String,
}

impl SwTpm {
    /// Starts swtpm, creates the tpm2-pkcs11 store (`tpm2_ptool init`) and a token `label`
    /// with [`PIN`] and [`SO_PIN`] (through the module, as an application would).
    pub fn start(label: &str) -> SwTpm {
        require("swtpm", "swtpm swtpm-tools");
        require("tpm2_ptool", "libtpm2-pkcs11-tools tpm2-tools");
        require("pkcs11-tool", "opensc");
        let triple = match std::env::consts::ARCH {
            "x86_64" => "x86_64-linux-gnu",
            "aarch64" => "aarch64-linux-gnu",
            "arm" => "arm-linux-gnueabihf",
            other => panic!("no tpm2-pkcs11 path known for {other}"),
        };
        let module = format!("/usr/lib/{triple}/libtpm2_pkcs11.so.1");
        assert!(
            Path::new(&module).is_file(),
            "{module} is missing: apt-get install -y libtpm2-pkcs11-1 libtss2-tcti-swtpm0"
        );
        let dir = temp_dir("swtpm");
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::create_dir_all(dir.join("store")).unwrap();
        // The swtpm TCTI reaches the control channel on the next port.
        let port = super::free_port();
        let ctrl = port + 1;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", dir.join("state").display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
            ])
            .args(["--flags", "not-need-init,startup-clear"])
            .spawn()
            .expect("swtpm starts");
        let tpm = SwTpm {
            child,
            dir,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
            module,
        };
        assert!(
            super::wait_for_port(port, std::time::Duration::from_secs(10)),
            "swtpm did not listen on {port}"
        );
        run(tpm
            .command("tpm2_ptool")
            .args(["init", "--path"])
            .arg(tpm.store()));
        // Without a resource manager, tpm2_ptool leaves its objects loaded and the TPM runs
        // out of object slots: flush them.
        run(tpm.command("tpm2_flushcontext").arg("--transient-object"));
        run(tpm
            .command("pkcs11-tool")
            .args(["--module", &tpm.module, "--init-token", "--label", label])
            .args(["--so-pin", SO_PIN]));
        run(tpm.tool(label).args(["--init-pin", "--so-pin", SO_PIN]));
        tpm
    }

    /// The tpm2-pkcs11 store folder.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// A command with this TPM's TCTI and store in its environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (name, value) in self.env() {
            cmd.env(name, value);
        }
        cmd
    }

    /// The variables tpm2-tools and tpm2-pkcs11 read.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("TPM2TOOLS_TCTI", self.tcti.clone()),
            ("TPM2_PKCS11_TCTI", self.tcti.clone()),
            (
                "TPM2_PKCS11_STORE",
                self.store().to_string_lossy().into_owned(),
            ),
        ]
    }

    /// pkcs11-tool on the token `label`, logged in as the user (`--pin` follows).
    pub fn tool(&self, label: &str) -> Command {
        let mut cmd = self.command("pkcs11-tool");
        cmd.args([
            "--module",
            &self.module,
            "--token-label",
            label,
            "--pin",
            PIN,
        ]);
        cmd
    }
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
