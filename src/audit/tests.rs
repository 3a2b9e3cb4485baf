//! Unit tests of the ClientHello parser and the verdicts, on hellos built field by field.

use super::*;

/// A ClientHello handshake message with the given fields, in one TLS record.
pub(super) fn hello(version: u16, suites: &[u16], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    if !extensions.is_empty() {
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend(ext);
    }
    let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend(body);
    let mut record = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
    record.extend(hs);
    record
}

fn list16(values: &[u16]) -> Vec<u8> {
    let mut out = ((values.len() * 2) as u16).to_be_bytes().to_vec();
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

fn sni(name: &str) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name.as_bytes());
    let mut out = (entry.len() as u16).to_be_bytes().to_vec();
    out.extend(entry);
    out
}

/// A modern, compliant hello: TLS 1.2, the GCM suites, SNI, P-256, RSA signatures, EMS, RI.
fn good_extensions() -> Vec<(u16, Vec<u8>)> {
    vec![
        (0x0000, sni("hub.azure-devices.net")),
        (0x000a, list16(&[0x0a0a, 29, 23])),
        (0x000d, list16(&[0x0403, 0x0804, 0x0401])),
        (0x0017, vec![]),
        (0xff01, vec![0]),
    ]
}

#[test]
fn a_compliant_hello_is_ok_and_its_fields_are_read() {
    let bytes = hello(
        0x0303,
        &[0x1a1a, 0xc02f, 0xc030, 0x009c],
        &good_extensions(),
    );
    let report = audit_bytes(&bytes).unwrap();
    assert_eq!(report.verdict, Verdict::Ok, "{:?}", report.findings);
    let h = &report.hello;
    assert_eq!(h.sni.as_deref(), Some("hub.azure-devices.net"));
    assert_eq!(h.cipher_suites, vec![0xc02f, 0xc030, 0x009c]); // GREASE dropped
    assert_eq!(h.groups, Some(vec![29, 23]));
    assert!(h.extended_master_secret && h.secure_renegotiation());
    assert_eq!(h.max_version(), 0x0303);
    let json = report.to_json();
    assert!(
        json.starts_with("{\"verdict\":\"ok\",\"max_version\":\"TLSv1.2\",\"tls12_offered\":true")
    );
    assert!(json.contains("{\"code\":\"0x009c\",\"name\":\"TLS_RSA_WITH_AES_128_GCM_SHA256 (0x009c)\",\"class\":\"refused\"}"));
}

#[test]
fn tls11_only_will_fail_with_the_fix() {
    let report = audit_bytes(&hello(0x0302, &[0xc013, 0x002f], &[])).unwrap();
    assert_eq!(report.verdict, Verdict::WillFail);
    assert_eq!(report.findings[0].id, "no-tls12");
    assert_eq!(
        report.findings[0].problem,
        "offers TLS 1.1 at most; IoT Hub requires TLS 1.2"
    );
    assert!(report.findings[0].fix.contains("OpenSSL 1.0.1 or later"));
    assert!(report.findings.iter().any(|f| f.id == "no-hub-suite"));
}

#[test]
fn cbc_sha256_only_is_a_warning_and_rsa_only_a_failure() {
    let report = audit_bytes(&hello(0x0303, &[0xc027], &good_extensions())).unwrap();
    assert_eq!(report.verdict, Verdict::OkWithWarnings);
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].id, "cbc-only");
    let report = audit_bytes(&hello(0x0303, &[0x002f, 0x009c], &good_extensions())).unwrap();
    assert_eq!(report.verdict, Verdict::WillFail);
    assert!(report.findings[0]
        .problem
        .starts_with("offers RSA key exchange only"));
}

#[test]
fn tls13_only_missing_curve_and_signatures_fail() {
    let mut ext = good_extensions();
    ext.push((0x002b, vec![2, 0x03, 0x04]));
    let report = audit_bytes(&hello(0x0303, &[0x1301], &ext)).unwrap();
    assert!(!report.hello.offers_tls12());
    assert_eq!(report.findings[0].id, "no-tls12");
    assert!(report.findings[0]
        .problem
        .starts_with("offers TLS 1.3 only"));

    let mut ext = good_extensions();
    ext[1] = (0x000a, list16(&[29]));
    let report = audit_bytes(&hello(0x0303, &[0xc02f], &ext)).unwrap();
    assert_eq!(report.findings[0].id, "no-hub-group");

    let mut ext = good_extensions();
    ext[2] = (0x000d, list16(&[0x0403, 0x0201]));
    let report = audit_bytes(&hello(0x0303, &[0xc02f], &ext)).unwrap();
    assert_eq!(report.findings[0].id, "no-rsa-signature");
}

#[test]
fn missing_sni_ems_and_renegotiation_are_warnings() {
    let report = audit_bytes(&hello(
        0x0303,
        &[0xc02f],
        &[(0x000a, list16(&[23])), (0x000d, list16(&[0x0401]))],
    ))
    .unwrap();
    assert_eq!(report.verdict, Verdict::OkWithWarnings);
    let ids: Vec<&str> = report.findings.iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        [
            "no-sni",
            "no-extended-master-secret",
            "no-secure-renegotiation"
        ]
    );
}

#[test]
fn a_hello_split_across_records_and_fed_in_pieces_is_read() {
    let one = hello(0x0303, &[0xc02f], &good_extensions());
    // Re-frame the handshake message into records of 10 bytes.
    let mut framed = Vec::new();
    for chunk in one[5..].chunks(10) {
        framed.extend_from_slice(&[22, 3, 3, 0, chunk.len() as u8]);
        framed.extend_from_slice(chunk);
    }
    let mut reader = HelloReader::default();
    let mut result = Progress::NeedMore;
    for piece in framed.chunks(7) {
        assert_eq!(result, Progress::NeedMore);
        result = reader.feed(piece);
    }
    let Progress::Done(Ok(h)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(h.sni.as_deref(), Some("hub.azure-devices.net"));
}

#[test]
fn bad_input_gives_named_errors() {
    assert_eq!(parse_client_hello(&[]), Err(HelloError::Empty));
    // SSLv2-format hello offering TLS 1.0: 0x80 len, type 1, version 3.1
    let v2 = [0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15];
    assert_eq!(
        parse_client_hello(&v2),
        Err(HelloError::Sslv2 { version: 0x0301 })
    );
    assert!(parse_client_hello(&v2)
        .unwrap_err()
        .to_string()
        .contains("TLSv1.0"));
    assert_eq!(
        parse_client_hello(b"GET / HTTP/1.1\r\n"),
        Err(HelloError::NotTls { first_byte: b'G' })
    );
    assert!(parse_client_hello(&[0x10, 0x20, 0, 4])
        .unwrap_err()
        .to_string()
        .starts_with("plain MQTT"));
    let good = hello(0x0303, &[0xc02f], &good_extensions());
    for cut in [1, 4, 5, 9, good.len() - 1] {
        assert!(
            matches!(
                parse_client_hello(&good[..cut]),
                Err(HelloError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    let mut server_hello = good.clone();
    server_hello[5] = 2;
    assert_eq!(
        parse_client_hello(&server_hello),
        Err(HelloError::NotClientHello { kind: 2 })
    );
    // Oversized: a record of 0xffff bytes, a hello of 16 MiB.
    assert_eq!(
        parse_client_hello(&[22, 3, 1, 0xff, 0xff]),
        Err(HelloError::Oversized { len: 0xffff })
    );
    assert_eq!(
        parse_client_hello(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Err(HelloError::Oversized { len: 0xffffff })
    );
    // An extension length running past the end.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 3] = 0x40; // renegotiation_info claims 0x4001 bytes
    assert!(matches!(
        parse_client_hello(&bad),
        Err(HelloError::Malformed(_))
    ));
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x2545f4914f6cdd1du64;
    for len in 0..600 {
        let mut data: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        if len > 6 {
            data[0] = 22;
            data[1] = 3;
            data[5] = 1;
        }
        if let Ok(r) = audit_bytes(&data) {
            let _ = r.to_json();
        }
    }
}
