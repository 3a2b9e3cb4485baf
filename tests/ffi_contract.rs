//! The C ABI contract (docs/c-abi-contract.md), through the exported functions themselves:
//! every argument is checked before the call has any side effect (nothing is sent, no
//! connection is opened), an output that overlaps another argument is refused with
//! INVALID_ARGUMENT, a zero connect timeout is refused, extreme times saturate.

use std::ffi::{c_char, CStr};
use std::net::TcpListener;
use std::ptr::{null, null_mut};
use std::time::Duration;

use tether::internal::ffi::client::{tether_client, tether_client_options, TETHER_REQUEST_ID_CAP};
use tether::internal::ffi::codec::{tether_mqtt_decode, tether_mqtt_packet};
use tether::internal::ffi::dps::{tether_dps_provision, tether_dps_username};
use tether::internal::ffi::sas::tether_sas_token;
use tether::internal::ffi::session::tether_session;
use tether::internal::ffi::tls_config::{tether_tls_config, tether_tls_config_builder};
use tether::internal::ffi::topics::tether_mqtt_client_id;
use tether::internal::ffi::x509::{tether_ecdsa_raw_to_der, tether_x509_expires_within};
use tether::Code;

const CS: &CStr = c"HostName=localhost;DeviceId=dev-1;SharedAccessKey=NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const G2: &[u8] = include_bytes!("../src/roots/DigiCert_Global_Root_G2.der");

/// A TCP listener that reports whether anyone connected.
struct Witness(TcpListener);

impl Witness {
    fn new() -> Witness {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Witness(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn connected(&self) -> bool {
        // Give a connection attempt made by the call time to land in the backlog.
        std::thread::sleep(Duration::from_millis(200));
        self.0.accept().is_ok()
    }
}

fn new_client() -> *mut tether_client {
    let mut client = null_mut();
    let code =
        unsafe { tether_client::tether_client_new(CS.as_ptr(), null(), null(), &mut client) };
    assert_eq!(code, Code::Ok);
    client
}

#[test]
fn a_zero_connect_timeout_is_refused_by_client_and_session() {
    let options = tether_client_options {
        connect_timeout_ms: 0,
        ..tether_client::tether_client_options_default()
    };
    let mut client = null_mut();
    let code =
        unsafe { tether_client::tether_client_new(CS.as_ptr(), null(), &options, &mut client) };
    assert_eq!(code, Code::InvalidArgument);
    assert!(client.is_null());
    let options = tether::internal::ffi::session::tether_session_options {
        connect_timeout_ms: 0,
        ..tether_session::tether_session_options_default()
    };
    let mut session = null_mut();
    let code =
        unsafe { tether_session::tether_session_new(CS.as_ptr(), null(), &options, &mut session) };
    assert_eq!(code, Code::InvalidArgument);
    assert!(session.is_null());
}

#[test]
fn certificate_expiry_question_saturates_on_extreme_clocks() {
    let mut expiring = false;
    let code = unsafe {
        tether_x509_expires_within(G2.as_ptr(), G2.len(), i64::MIN, u32::MAX, &mut expiring)
    };
    assert_eq!((code, expiring), (Code::Ok, false));
    let code =
        unsafe { tether_x509_expires_within(G2.as_ptr(), G2.len(), i64::MAX, 0, &mut expiring) };
    assert_eq!((code, expiring), (Code::Ok, true));
}

#[test]
fn twin_requests_check_their_output_before_anything_is_sent() {
    // The client is not connected: a call that tried to send would answer INVALID_STATE.
    let client = new_client();
    let mut len = 0usize;
    let mut small = [0 as c_char; 4];
    unsafe {
        let code = tether_client::tether_client_twin_get(
            client,
            null_mut(),
            TETHER_REQUEST_ID_CAP,
            &mut len,
        );
        assert_eq!(code, Code::NullArgument);
        let code = tether_client::tether_client_twin_get(client, small.as_mut_ptr(), 4, &mut len);
        assert_eq!(
            (code, len),
            (Code::BufferTooSmall, TETHER_REQUEST_ID_CAP - 1)
        );
        let code = tether_client::tether_client_twin_patch_reported(
            client,
            b"{}".as_ptr(),
            2,
            null_mut(),
            TETHER_REQUEST_ID_CAP,
            &mut len,
        );
        assert_eq!(code, Code::NullArgument);
        let mut rid = [0 as c_char; TETHER_REQUEST_ID_CAP];
        let code =
            tether_client::tether_client_twin_get(client, rid.as_mut_ptr(), rid.len(), &mut len);
        assert_eq!(
            code,
            Code::InvalidState,
            "with good arguments the state decides"
        );
        tether_client::tether_client_free(client);
    }
}

#[test]
fn dps_registration_checks_its_outputs_before_connecting() {
    let witness = Witness::new();
    let mut hub = [0 as c_char; 254];
    let mut device = [0 as c_char; 129];
    let lens = std::cell::Cell::new((0usize, 0usize));
    let provision = |hub_out: *mut c_char, hub_cap: usize, device_out: *mut c_char| unsafe {
        tether_dps_provision(
            c"localhost".as_ptr(),
            witness.port(),
            c"0ne00000000".as_ptr(),
            c"dev-1".as_ptr(),
            c"NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=".as_ptr(),
            false,
            null(),
            1000,
            hub_out,
            hub_cap,
            &mut (*lens.as_ptr()).0,
            device_out,
            129,
            &mut (*lens.as_ptr()).1,
        )
    };
    assert_eq!(
        provision(null_mut(), 254, device.as_mut_ptr()),
        Code::NullArgument
    );
    assert_eq!(
        provision(hub.as_mut_ptr(), 254, null_mut()),
        Code::NullArgument
    );
    assert_eq!(
        provision(hub.as_mut_ptr(), 100, device.as_mut_ptr()),
        Code::BufferTooSmall
    );
    assert_eq!(lens.get(), (253, 128));
    // The device id buffer inside the hub buffer.
    assert_eq!(
        provision(hub.as_mut_ptr(), 254, unsafe { hub.as_mut_ptr().add(100) }),
        Code::InvalidArgument
    );
    assert!(!witness.connected(), "a refused call connected to DPS");
}

#[test]
fn tls_check_checks_its_report_buffer_before_connecting() {
    let witness = Witness::new();
    unsafe {
        let builder = tether_tls_config_builder::tether_tls_config_builder_new();
        let mut config = null_mut();
        assert_eq!(
            tether_tls_config_builder::tether_tls_config_builder_build(builder, &mut config),
            Code::Ok
        );
        tether_tls_config_builder::tether_tls_config_builder_free(builder);
        let mut len = 0usize;
        let code = tether_tls_config::tether_tls_config_check(
            config,
            c"localhost".as_ptr(),
            witness.port(),
            1000,
            null_mut(),
            64,
            &mut len,
        );
        assert_eq!(code, Code::NullArgument);
        tether_tls_config::tether_tls_config_free(config);
    }
    assert!(!witness.connected(), "a refused call connected");
}

#[test]
fn the_same_pointer_for_two_outputs_is_refused() {
    let mut session = null_mut();
    unsafe {
        assert_eq!(
            tether_session::tether_session_new(CS.as_ptr(), null(), null(), &mut session),
            Code::Ok
        );
        let mut both: *const c_char = null();
        let code = tether_session::tether_session_event_property(session, 0, &mut both, &mut both);
        assert_eq!(code, Code::InvalidArgument);
        let mut packet = std::mem::MaybeUninit::<tether_mqtt_packet>::zeroed();
        let mut n = 0usize;
        let input = [0xd0u8, 0x00]; // PINGRESP
        let code = tether_mqtt_decode(input.as_ptr(), 2, 1024, packet.as_mut_ptr(), &mut n, &mut n);
        assert_eq!(code, Code::InvalidArgument);
        // An output struct that overlaps the session handle.
        let code = tether_session::tether_session_poll_event(session, session.cast());
        assert_eq!(code, Code::InvalidArgument);
        tether_session::tether_session_free(session);
    }
}

#[test]
fn an_output_overlapping_an_input_is_refused_and_left_untouched() {
    let mut raw = [7u8; 72];
    let mut len = 0usize;
    let code =
        unsafe { tether_ecdsa_raw_to_der(raw.as_ptr(), 64, raw.as_mut_ptr().add(8), 64, &mut len) };
    assert_eq!(code, Code::InvalidArgument);
    assert!(raw.iter().all(|b| *b == 7), "the input was written");

    // The key inside the token buffer.
    let mut buf = [0u8; 512];
    let key = b"NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=\0";
    buf[100..100 + key.len()].copy_from_slice(key);
    let code = unsafe {
        tether_sas_token(
            c"localhost/devices/dev-1".as_ptr(),
            buf.as_ptr().add(100).cast(),
            null(),
            2_000_000_000,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut len,
        )
    };
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(&buf[100..100 + key.len()], key);

    // `out_len` inside `out`.
    let mut out = [0usize; 16];
    let code = unsafe {
        tether_mqtt_client_id(
            c"dev-1".as_ptr(),
            null(),
            out.as_mut_ptr().cast(),
            std::mem::size_of_val(&out),
            &mut out[3],
        )
    };
    assert_eq!(code, Code::InvalidArgument);
}

#[test]
fn inputs_may_share_memory() {
    let same = c"0ne00abc123";
    let mut out = [0 as c_char; 256];
    let mut len = 0usize;
    let code = unsafe {
        tether_dps_username(
            same.as_ptr(),
            same.as_ptr(),
            null(),
            null(),
            out.as_mut_ptr(),
            out.len(),
            &mut len,
        )
    };
    assert_eq!(code, Code::Ok);
    assert!(unsafe { CStr::from_ptr(out.as_ptr()) }
        .to_str()
        .unwrap()
        .starts_with("0ne00abc123/registrations/0ne00abc123"));
}
