//! The certificate lifecycle for C: a credential store (a folder, or the firmware's own load
//! and save callbacks), DPS registration with a CSR, a client that connects with the stored
//! certificate and renews it through the hub, and a certificate swap on any X.509 client.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use crate::auth::csr::{verify_issued, DeviceKey};
use crate::auth::store::{CredentialStore, FolderStore, StoredCredential};
use crate::client::{Client, ClientOptions};
use crate::error::{Code, Error, Result};
use crate::ffi::client::tether_client;
use crate::ffi::dps::{dps_request, dps_text_args};
use crate::ffi::event::EventSlot;
use crate::ffi::handles::{free_handle, handle_mut, handle_ref, into_handle};
use crate::ffi::panic::{guard, guard_value};
use crate::ffi::tls_config::tether_tls_config;
use crate::ffi::{bytes_arg, out_arg, text_arg};
use crate::policy::TlsPolicy;
use crate::session::{RenewalSettings, SessionConfig, DEFAULT_RENEW_FRACTION};

/// Saves a credential (firmware flash): `credential` is `len` bytes of text holding the
/// generation, hub, device id, certificate chain and private key (see
/// `tether_credential_store_new_callbacks`). Return 0 once it is durably stored (write it
/// so that a power cut leaves the previous one or this one whole), anything else on failure.
pub type tether_credential_save_callback =
    Option<unsafe extern "C" fn(user: *mut c_void, credential: *const u8, len: usize) -> c_int>;

/// Loads the credential last saved: write it into `buf` (`cap` bytes), set `*len` and return
/// 0; return 1 when none is stored; when `cap` is too small, set `*len` to the size needed
/// and return 2; anything else is a failure.
pub type tether_credential_load_callback = Option<
    unsafe extern "C" fn(user: *mut c_void, buf: *mut u8, cap: usize, len: *mut usize) -> c_int,
>;

struct CallbackStore {
    load: unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize) -> c_int,
    save: unsafe extern "C" fn(*mut c_void, *const u8, usize) -> c_int,
    user: *mut c_void,
}

// SAFETY: the registration contract requires the callbacks and `user` to be usable from the
// thread that runs the client.
unsafe impl Send for CallbackStore {}

impl CallbackStore {
    fn load_text(&self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let mut buf = zeroize::Zeroizing::new(vec![0u8; 16 * 1024]);
        for _ in 0..2 {
            let mut len = 0usize;
            // SAFETY: the callback's contract; `buf` is valid for its length.
            let status = unsafe { (self.load)(self.user, buf.as_mut_ptr(), buf.len(), &mut len) };
            match status {
                0 if len <= buf.len() => {
                    buf.truncate(len);
                    return Ok(Some(buf));
                }
                1 => return Ok(None),
                2 if len > buf.len() && len <= 1 << 20 => {
                    buf = zeroize::Zeroizing::new(vec![0u8; len]);
                }
                other => {
                    return Err(Error::new(
                        Code::Io,
                        format!("the credential load callback failed with status {other}"),
                    ))
                }
            }
        }
        Err(Error::new(
            Code::Io,
            "the credential load callback kept asking for a larger buffer",
        ))
    }
}

impl CredentialStore for CallbackStore {
    fn load(&mut self) -> Result<Option<StoredCredential>> {
        match self.load_text()? {
            Some(text) => StoredCredential::from_pem(&text).map(Some),
            None => Ok(None),
        }
    }

    fn save(&mut self, credential: &StoredCredential) -> Result<u64> {
        let generation = self.load()?.map_or(0, |c| c.generation) + 1;
        let mut next = credential.clone();
        next.generation = generation;
        let text = next.to_pem();
        // SAFETY: the callback's contract; `text` is valid for its length.
        let status = unsafe { (self.save)(self.user, text.as_ptr(), text.len()) };
        if status != 0 {
            return Err(Error::new(
                Code::Io,
                format!("the credential save callback failed with status {status}"),
            ));
        }
        Ok(generation)
    }

    fn discard(&mut self, _generation: u64) -> Result<()> {
        Err(Error::new(
            Code::InvalidState,
            "a callback store keeps one credential: save the previous one again instead",
        ))
    }
}

enum StoreKind {
    Folder(FolderStore),
    Callbacks {
        load: unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize) -> c_int,
        save: unsafe extern "C" fn(*mut c_void, *const u8, usize) -> c_int,
        user: *mut c_void,
    },
}

/// Where issued certificates and their keys are kept: a folder, or the firmware's own
/// callbacks. Opaque; free with `tether_credential_store_free`.
pub struct tether_credential_store {
    kind: StoreKind,
}

impl tether_credential_store {
    fn open(&self) -> Box<dyn CredentialStore> {
        match &self.kind {
            StoreKind::Folder(f) => Box::new(f.clone()),
            StoreKind::Callbacks { load, save, user } => Box::new(CallbackStore {
                load: *load,
                save: *save,
                user: *user,
            }),
        }
    }
}

/// Opens (creating it, mode 0700) a credential store folder: each generation in
/// `DIR/gen-N/` (`chain.pem`, `key.pem` mode 0600, `identity.json`), written atomically
/// (write, fsync, rename, fsync the folder), so a crash or power cut never leaves a
/// half-written credential. `*store_out` receives the store, owned by the caller; not
/// written on failure. Results: `TETHER_RESULT_OK`, argument results, `TETHER_RESULT_IO`.
#[no_mangle]
pub unsafe extern "C" fn tether_credential_store_open(
    dir: *const c_char,
    store_out: *mut *mut tether_credential_store,
) -> Code {
    guard(|| {
        // SAFETY: arguments per the contract above.
        let dir = unsafe { text_arg(dir, "dir") }?;
        let out = unsafe { out_arg(store_out, "store_out") }?;
        let folder = FolderStore::open(dir)?;
        *out = into_handle(tether_credential_store {
            kind: StoreKind::Folder(folder),
        });
        Ok(())
    })
}

/// A credential store kept by the firmware (its own flash): `load` and `save` exchange the
/// credential as one text (header lines `generation: N`, `hub: HOST`, `device: ID`, then the
/// chain as PEM certificates, leaf first, and the key as a PEM `PRIVATE KEY`). The text
/// holds the private key: keep it where only the device can read it, and wipe copies.
/// The callbacks run on the thread that uses the client or provisioning call; `user_data`
/// is passed back unchanged. Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn tether_credential_store_new_callbacks(
    load: tether_credential_load_callback,
    save: tether_credential_save_callback,
    user_data: *mut c_void,
    store_out: *mut *mut tether_credential_store,
) -> Code {
    guard(|| {
        // SAFETY: arguments per the contract above.
        let out = unsafe { out_arg(store_out, "store_out") }?;
        let (Some(load), Some(save)) = (load, save) else {
            return Err(Error::new(
                Code::NullArgument,
                "`load` and `save` must not be NULL",
            ));
        };
        *out = into_handle(tether_credential_store {
            kind: StoreKind::Callbacks {
                load,
                save,
                user: user_data,
            },
        });
        Ok(())
    })
}

/// Frees a credential store (the stored credentials stay). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tether_credential_store_free(store: *mut tether_credential_store) {
    guard_value((), || {
        // SAFETY: NULL or a live store, per the contract.
        unsafe { free_handle(store) };
        Ok(())
    })
}

/// The generation of the credential in force (1 for the first, one more per renewal).
/// Results: `TETHER_RESULT_OK`, argument results, `TETHER_RESULT_NOT_FOUND` (nothing
/// stored yet), `TETHER_RESULT_IO`.
#[no_mangle]
pub unsafe extern "C" fn tether_credential_store_generation(
    store: *const tether_credential_store,
    generation_out: *mut u64,
) -> Code {
    guard(|| {
        // SAFETY: arguments per the contract above.
        let store = unsafe { handle_ref(store, "store") }?;
        let out = unsafe { out_arg(generation_out, "generation_out") }?;
        let stored = store
            .open()
            .load()?
            .ok_or_else(|| Error::new(Code::NotFound, "the store holds no credential yet"))?;
        *out = stored.generation;
        Ok(())
    })
}

fn policy_of(tls: Option<&tether_tls_config>) -> TlsPolicy {
    tls.map(|t| t.policy.clone()).unwrap_or_default()
}

/// Registers the device with DPS and has DPS issue its certificate from a CSR (api-version
/// `2025-07-01-preview`): a fresh P-256 key is made, the CSR's CN is `registration_id`, the
/// issued chain is checked (for that key, valid now, chaining to a root `tls` trusts) and
/// saved with the key in `store` as its next generation. Authentication as
/// `tether_dps_provision` (`device_key_base64`, or X.509 from `tls` when it is NULL).
/// `endpoint` NULL means the global endpoint. Results: as `tether_dps_provision`, plus
/// `TETHER_RESULT_CERT_ISSUANCE_REFUSED` (DPS issued no certificate or refused the CSR),
/// `TETHER_RESULT_HUB_REQUIRES_MQTT_V5`, `TETHER_RESULT_KEY_CERT_MISMATCH`,
/// `TETHER_RESULT_CERT_EXPIRED`, `TETHER_RESULT_CERT_NOT_YET_VALID`,
/// `TETHER_RESULT_CERT_UNTRUSTED` (the issued chain failed its checks; nothing is stored),
/// `TETHER_RESULT_IO` (the store).
#[no_mangle]
pub unsafe extern "C" fn tether_dps_provision_with_csr(
    endpoint: *const c_char,
    port: u16,
    id_scope: *const c_char,
    registration_id: *const c_char,
    device_key_base64: *const c_char,
    group_enrollment: bool,
    tls: *const tether_tls_config,
    timeout_ms: u32,
    store: *const tether_credential_store,
) -> Code {
    guard(|| {
        use crate::provisioning::provision_with_csr;
        // SAFETY: arguments per the contract above.
        let (endpoint, id_scope, registration_id, key) =
            unsafe { dps_text_args(endpoint, id_scope, registration_id, device_key_base64) }?;
        let store = unsafe { handle_ref(store, "store") }?;
        let tls_ref = unsafe { crate::ffi::opt_in_arg(tls, "tls") }?;
        if port == 0 || timeout_ms == 0 {
            return Err(Error::new(
                Code::InvalidArgument,
                "port and timeout_ms must not be 0",
            ));
        }
        let policy = policy_of(tls_ref);
        // The registration as `tether_dps_provision` builds it (credential, TLS, transport
        // and proxy from the environment). SAFETY: `tls` NULL or live, per the contract.
        let request = unsafe {
            dps_request(
                endpoint,
                port,
                id_scope,
                registration_id,
                key,
                group_enrollment,
                tls,
                timeout_ms,
            )
        }?;
        let device_key = DeviceKey::generate()?;
        let now = crate::client::system_now_ms() / 1000;
        let (assignment, chain) =
            provision_with_csr(&request, &device_key.csr_base64(registration_id)?, now)?;
        verify_issued(&chain, &device_key, &policy.trust_anchors(), now as i64)?;
        store.open().save(&StoredCredential {
            generation: 0,
            hub: assignment.assigned_hub,
            device_id: assignment.device_id,
            chain,
            key_pkcs8: device_key.pkcs8_der(),
        })?;
        Ok(())
    })
}

/// Creates a client that connects, as the device `store` holds a certificate for, to the hub
/// the store names (on `options->port`), with that certificate and key, and renews the
/// certificate through the hub at 80 % of its validity: each renewed certificate the hub
/// accepts is saved in `store` (events `TETHER_EVENT_CERTIFICATE`). `tls` gives the trust
/// (extra CAs) and the policy, or NULL for the IoT Hub defaults; its own client certificate,
/// if any, is replaced. The client keeps what it needs: `store` and `tls` may be freed
/// afterwards (a callback store's callbacks must stay callable). Results: `TETHER_RESULT_OK`,
/// argument results, `TETHER_RESULT_NOT_FOUND` (nothing stored), certificate and key
/// results, `TETHER_RESULT_IO`.
#[no_mangle]
pub unsafe extern "C" fn tether_client_new_from_credentials(
    store: *const tether_credential_store,
    tls: *const tether_tls_config,
    options: *const crate::ffi::client::tether_client_options,
    client_out: *mut *mut tether_client,
) -> Code {
    guard(|| {
        // SAFETY: arguments per the contract above.
        let store = unsafe { handle_ref(store, "store") }?;
        let tls = unsafe { crate::ffi::opt_in_arg(tls, "tls") }?;
        let options = unsafe { crate::ffi::client::options_arg(options) }?;
        let out = unsafe { out_arg(client_out, "client_out") }?;
        let mut backing = store.open();
        let stored = backing
            .load()?
            .ok_or_else(|| Error::new(Code::NotFound, "the store holds no credential yet"))?;
        let key = DeviceKey::from_pkcs8(stored.key_pkcs8.as_ref().ok_or_else(|| {
            Error::new(
                Code::PrivateKeyMalformed,
                "the stored credential has no key",
            )
        })?)?;
        let base = policy_of(tls);
        let mut policy = base.clone();
        policy.set_client_key(key.certified_key(&stored.chain)?);
        let config = SessionConfig {
            hub_host: stored.hub.clone(),
            server_name: stored.hub.clone(),
            device_id: stored.device_id.clone(),
            module_id: None,
            credential: crate::auth::connection_string::Credential::X509,
            tls: policy.build()?,
            has_client_cert: true,
            options: crate::ffi::client::session_options(&options, None)?,
        };
        let mut client = Client::new(
            config,
            ClientOptions {
                port: options.port,
                connect_timeout: Duration::from_millis(options.connect_timeout_ms.into()),
                retry_max_ms: options.retry_max_ms,
                ..ClientOptions::default()
            },
        )?;
        let settings = RenewalSettings {
            fraction: DEFAULT_RENEW_FRACTION,
            roots: base.trust_anchors(),
            policy: base,
        };
        client.enable_certificate_renewal(settings, key, stored.chain, Some(backing))?;
        *out = into_handle(tether_client {
            client,
            event: EventSlot::default(),
        });
        Ok(())
    })
}

/// Replaces the client certificate and key of an X.509 client (`chain`: PEM or DER, leaf
/// first; `key`: PEM or DER, PKCS#8, SEC1 or PKCS#1): the next connection uses them; the
/// current one is not touched. `tls` is the configuration the client was made with (its
/// trust and policy; NULL: the IoT Hub defaults); its client certificate is replaced. The key is copied into memory the library wipes. Results:
/// `TETHER_RESULT_OK`, argument results, `TETHER_RESULT_CERT_MALFORMED`,
/// `TETHER_RESULT_PRIVATE_KEY_MALFORMED`, `TETHER_RESULT_KEY_CERT_MISMATCH`,
/// `TETHER_RESULT_INVALID_STATE` (the client does not authenticate with X.509).
#[no_mangle]
pub unsafe extern "C" fn tether_client_set_certificate(
    client: *mut tether_client,
    tls: *const tether_tls_config,
    chain: *const u8,
    chain_len: usize,
    key: *const u8,
    key_len: usize,
) -> Code {
    guard(|| {
        // SAFETY: arguments per the contract above.
        let c = unsafe { handle_mut(client, "client") }?;
        let tls = unsafe { crate::ffi::opt_in_arg(tls, "tls") }?;
        let chain = unsafe { bytes_arg(chain, chain_len, "chain") }?;
        let key = zeroize::Zeroizing::new(unsafe { bytes_arg(key, key_len, "key") }?.to_vec());
        if !matches!(
            c.client.session().config().credential,
            crate::auth::connection_string::Credential::X509
        ) {
            return Err(Error::new(
                Code::InvalidState,
                "the client does not authenticate with X.509",
            ));
        }
        let mut policy = policy_of(tls);
        policy.set_client_cert(chain, &key)?;
        let built = policy.build()?;
        c.client.session_mut().set_tls_config(built, true);
        crate::log!(
            crate::log::Level::Info,
            "client certificate replaced: used from the next connection"
        );
        Ok(())
    })
}

/// Renews the client certificate now through the hub (a client made by
/// `tether_client_new_from_credentials`); progress comes as `TETHER_EVENT_CERTIFICATE`
/// events. Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_INVALID_STATE` (renewal is not enabled on this client).
#[no_mangle]
pub unsafe extern "C" fn tether_client_renew_certificate(client: *mut tether_client) -> Code {
    guard(|| {
        // SAFETY: NULL or a live client.
        let c = unsafe { handle_mut(client, "client") }?;
        c.client.renew_certificate()
    })
}

/// Has DPS issue the device certificate in a registration driven by the caller's socket
/// (`tether_dps_session_*`): makes a fresh P-256 key, kept in `session`, and registers with
/// its CSR (CN = the registration id; api-version `2025-07-01-preview`). Call before
/// `tether_dps_session_start`; once assigned, `tether_dps_session_store_certificate` checks
/// and stores the chain. Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_INVALID_STATE` (already started), `TETHER_RESULT_IO` (no random source).
#[no_mangle]
pub unsafe extern "C" fn tether_dps_session_request_certificate(
    session: *mut crate::ffi::dps_session::tether_dps_session,
) -> Code {
    guard(|| {
        // SAFETY: NULL or a live registration.
        let s = unsafe { handle_mut(session, "session") }?;
        let key = DeviceKey::generate()?;
        let csr = key.csr_base64(&s.session.request().registration_id)?;
        s.session.set_csr(&csr)?;
        s.key = Some(key);
        Ok(())
    })
}

/// Once `session` is assigned (with `tether_dps_session_request_certificate`): checks the
/// chain DPS issued (for the session's key, valid at `now_unix_ms`, chaining to a root `tls`
/// trusts; `tls` NULL: the IoT Hub roots) and saves it with the key, the hub and the device
/// id in `store` as its next generation. Results: `TETHER_RESULT_OK`, argument results,
/// `TETHER_RESULT_INVALID_STATE` (not assigned yet, or no certificate was requested),
/// `TETHER_RESULT_CERT_ISSUANCE_REFUSED` (DPS issued none), `TETHER_RESULT_KEY_CERT_MISMATCH`,
/// `TETHER_RESULT_CERT_EXPIRED`, `TETHER_RESULT_CERT_NOT_YET_VALID`,
/// `TETHER_RESULT_CERT_UNTRUSTED` (nothing is stored), `TETHER_RESULT_IO` (the store).
#[no_mangle]
pub unsafe extern "C" fn tether_dps_session_store_certificate(
    session: *const crate::ffi::dps_session::tether_dps_session,
    tls: *const tether_tls_config,
    now_unix_ms: u64,
    store: *const tether_credential_store,
) -> Code {
    guard(|| {
        // SAFETY: arguments per the contract above.
        let s = unsafe { handle_ref(session, "session") }?;
        let tls = unsafe { crate::ffi::opt_in_arg(tls, "tls") }?;
        let store = unsafe { handle_ref(store, "store") }?;
        let key = s.key.as_ref().ok_or_else(|| {
            Error::new(
                Code::InvalidState,
                "no certificate was requested: call tether_dps_session_request_certificate first",
            )
        })?;
        let assignment = match s.session.outcome() {
            Some(Ok(a)) => a.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => {
                return Err(Error::new(
                    Code::InvalidState,
                    "the registration has not finished",
                ))
            }
        };
        let chain = s.session.issued_chain().map(<[_]>::to_vec).ok_or_else(|| {
            Error::new(
                Code::CertIssuanceRefused,
                "DPS assigned the device but issued no certificate",
            )
        })?;
        verify_issued(
            &chain,
            key,
            &policy_of(tls).trust_anchors(),
            (now_unix_ms / 1000) as i64,
        )?;
        store.open().save(&StoredCredential {
            generation: 0,
            hub: assignment.assigned_hub,
            device_id: assignment.device_id,
            chain,
            key_pkcs8: key.pkcs8_der(),
        })?;
        Ok(())
    })
}
