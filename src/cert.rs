//! Facts read from an X.509 certificate: subject, issuer, validity, names.
//!
//! A small, bounds-checked DER reader for the fields a person needs to understand a
//! refusal ("certificate for wrong.example.com expired on 2020-01-02"). It does not verify
//! anything: verification is rustls-webpki's job. Input is untrusted; every read is checked.

use crate::error::{Code, Error, Result};

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject distinguished name, e.g. `CN=localhost, O=Example`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject common name, when present.
    pub common_name: Option<String>,
    /// DNS names and IP addresses from the subjectAltName extension.
    pub alt_names: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The DER bytes of the subject name (for matching an issuer to a root).
    pub subject_der: Vec<u8>,
    /// The DER bytes of the issuer name.
    pub issuer_der: Vec<u8>,
}

impl CertFacts {
    /// Reads the facts of one DER-encoded certificate.
    pub fn from_der(der: &[u8]) -> Result<CertFacts> {
        parse(der).ok_or_else(|| {
            Error::new(
                Code::CertMalformed,
                "certificate is not valid DER-encoded X.509",
            )
        })
    }

    /// The names a server certificate is valid for: its subjectAltNames, else its CN.
    pub fn host_names(&self) -> Vec<String> {
        if !self.alt_names.is_empty() {
            self.alt_names.clone()
        } else {
            self.common_name.iter().cloned().collect()
        }
    }

    /// Whether the certificate is its own issuer.
    pub fn is_self_issued(&self) -> bool {
        self.subject_der == self.issuer_der
    }
}

struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { rest: bytes }
    }

    /// Reads one TLV; returns (tag, contents, whole encoding).
    fn read(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let all = self.rest;
        let (&tag, rest) = all.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | b as usize;
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let header = all.len() - rest.len();
        let contents = &rest[..len];
        self.rest = &rest[len..];
        Some((tag, contents, &all[..header + len]))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (t, contents, _) = self.read()?;
        (t == tag).then_some(contents)
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

fn parse(der: &[u8]) -> Option<CertFacts> {
    let mut outer = Der::new(der);
    let cert = outer.expect(SEQUENCE)?;
    let mut cert = Der::new(cert);
    let tbs = cert.expect(SEQUENCE)?;
    let mut tbs = Der::new(tbs);
    if tbs.peek_tag() == Some(0xa0) {
        tbs.read()?; // version
    }
    tbs.read()?; // serial
    tbs.expect(SEQUENCE)?; // signature algorithm
    let (tag, issuer, issuer_der) = tbs.read()?;
    if tag != SEQUENCE {
        return None;
    }
    let mut validity = Der::new(tbs.expect(SEQUENCE)?);
    let not_before = read_time(&mut validity)?;
    let not_after = read_time(&mut validity)?;
    let (tag, subject, subject_der) = tbs.read()?;
    if tag != SEQUENCE {
        return None;
    }
    tbs.expect(SEQUENCE)?; // subject public key info
    let mut alt_names = Vec::new();
    while let Some((tag, contents, _)) = tbs.read() {
        if tag == 0xa3 {
            alt_names = read_alt_names(contents)?;
        }
    }
    Some(CertFacts {
        subject: name_to_string(subject)?,
        issuer: name_to_string(issuer)?,
        common_name: common_name(subject)?,
        alt_names,
        not_before,
        not_after,
        subject_der: subject_der.to_vec(),
        issuer_der: issuer_der.to_vec(),
    })
}

fn read_alt_names(extensions: &[u8]) -> Option<Vec<String>> {
    let mut outer = Der::new(extensions);
    let mut list = Der::new(outer.expect(SEQUENCE)?);
    while let Some((_, ext, _)) = list.read() {
        let mut ext = Der::new(ext);
        if ext.expect(0x06)? != OID_SAN {
            continue;
        }
        if ext.peek_tag() == Some(0x01) {
            ext.read()?; // critical
        }
        let mut value = Der::new(ext.expect(0x04)?);
        let mut names = Der::new(value.expect(SEQUENCE)?);
        let mut out = Vec::new();
        while let Some((tag, name, _)) = names.read() {
            match tag {
                0x82 => out.push(String::from_utf8_lossy(name).into_owned()),
                0x87 if name.len() == 4 => {
                    out.push(format!("{}.{}.{}.{}", name[0], name[1], name[2], name[3]))
                }
                0x87 if name.len() == 16 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(name);
                    out.push(std::net::Ipv6Addr::from(octets).to_string());
                }
                _ => {}
            }
        }
        return Some(out);
    }
    Some(Vec::new())
}

fn attribute_label(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        _ => return None,
    })
}

/// Visits each (oid, text value) of a Name.
fn for_each_attribute(name: &[u8], mut f: impl FnMut(&[u8], String)) -> Option<()> {
    let mut rdns = Der::new(name);
    while let Some((tag, rdn, _)) = rdns.read() {
        if tag != SET {
            return None;
        }
        let mut atvs = Der::new(rdn);
        while let Some((tag, atv, _)) = atvs.read() {
            if tag != SEQUENCE {
                return None;
            }
            let mut atv = Der::new(atv);
            let oid = atv.expect(0x06)?;
            let (_, value, _) = atv.read()?;
            f(oid, String::from_utf8_lossy(value).into_owned());
        }
    }
    Some(())
}

fn name_to_string(name: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    for_each_attribute(name, |oid, value| {
        if let Some(label) = attribute_label(oid) {
            parts.push(format!("{label}={value}"));
        }
    })?;
    Some(parts.join(", "))
}

fn common_name(name: &[u8]) -> Option<Option<String>> {
    let mut cn = None;
    for_each_attribute(name, |oid, value| {
        if oid == OID_CN {
            cn = Some(value);
        }
    })?;
    Some(cn)
}

fn read_time(der: &mut Der<'_>) -> Option<i64> {
    let (tag, text, _) = der.read()?;
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
#[doc(hidden)] // re-exported by `tether::internal`
pub fn format_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGICERT_G2: &[u8] = include_bytes!("roots/DigiCert_Global_Root_G2.der");

    #[test]
    fn reads_digicert_global_root_g2() {
        let facts = CertFacts::from_der(DIGICERT_G2).unwrap();
        assert_eq!(
            facts.subject,
            "C=US, O=DigiCert Inc, OU=www.digicert.com, CN=DigiCert Global Root G2"
        );
        assert!(facts.is_self_issued());
        assert_eq!(
            facts.common_name.as_deref(),
            Some("DigiCert Global Root G2")
        );
        assert_eq!(format_utc(facts.not_before), "2013-08-01 12:00:00 UTC");
        assert_eq!(format_utc(facts.not_after), "2038-01-15 12:00:00 UTC");
    }

    #[test]
    fn formats_epoch_and_leap_day() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(days_from_civil(2000, 2, 29) * 86_400, 951_782_400);
    }

    #[test]
    fn truncated_or_garbage_input_is_an_error_not_a_panic() {
        for len in 0..DIGICERT_G2.len() {
            let err = CertFacts::from_der(&DIGICERT_G2[..len]).unwrap_err();
            assert_eq!(err.code(), Code::CertMalformed);
        }
        assert!(CertFacts::from_der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
