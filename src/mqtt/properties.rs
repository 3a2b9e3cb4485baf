//! IoT Hub property bags: `key=value&key=value` in topic names, percent-encoded.
//!
//! Encoding follows the embedded C and Python SDKs: the unreserved characters
//! `A-Z a-z 0-9 - _ . ~` are kept, every other byte of the UTF-8 text becomes `%XX` with
//! uppercase hex (`$.mid` is sent as `%24.mid`). Decoding accepts either hex case.
//!
//! In received bags a bare `key` means the property is present with a null value, and
//! `key=` means an empty value; [`Property::value`] keeps that difference.

use crate::error::{Code, Error, Result};

/// System property: message id.
pub const MESSAGE_ID: &str = "$.mid";
/// System property: correlation id.
pub const CORRELATION_ID: &str = "$.cid";
/// System property: user id.
pub const USER_ID: &str = "$.uid";
/// System property: content type (`application/json` to route on the body).
pub const CONTENT_TYPE: &str = "$.ct";
/// System property: content encoding (`utf-8` to route on the body).
pub const CONTENT_ENCODING: &str = "$.ce";
/// System property: creation time (ISO 8601).
pub const CREATION_TIME: &str = "$.ctime";
/// System property: absolute expiry time (ISO 8601).
pub const EXPIRY_TIME: &str = "$.exp";
/// System property: message schema / subject (`$.sub`).
pub const SUBJECT: &str = "$.sub";

/// Where text goes while a topic or bag is built: a `String`, a counter, or a caller
/// buffer. Builders validate everything before the first `put`, so a failed build writes
/// nothing.
pub trait Sink {
    /// Appends `text`.
    fn put(&mut self, text: &str);
}

impl Sink for String {
    fn put(&mut self, text: &str) {
        self.push_str(text);
    }
}

/// A sink that only counts bytes (the first pass of a build into a caller buffer).
#[derive(Default, Debug)]
pub struct Count(pub usize);

impl Sink for Count {
    fn put(&mut self, text: &str) {
        self.0 += text.len();
    }
}

/// A sink over a caller buffer that was sized by a [`Count`] pass first.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceSink<'a> {
    /// A sink writing from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceSink { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, text: &str) {
        let end = self.len + text.len();
        // A sizing pass always precedes this one; running out of room is a bug.
        assert!(
            end <= self.buf.len(),
            "SliceSink used without a sizing pass"
        );
        self.buf[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
    }
}

/// Whether `b` is kept as is by [`encode_to`].
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes `text` into `sink`: unreserved characters kept, everything else `%XX`.
pub fn encode_to(sink: &mut (impl Sink + ?Sized), text: &str) {
    encode_keeping(sink, text, b"");
}

/// Like [`encode_to`] but also keeps the ASCII bytes in `also_keep`.
pub(crate) fn encode_keeping(sink: &mut (impl Sink + ?Sized), text: &str, also_keep: &[u8]) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if is_unreserved(b) || also_keep.contains(&b) {
            continue;
        }
        if start < i {
            sink.put(&text[start..i]);
        }
        let esc = [b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]];
        // The three bytes are ASCII.
        sink.put(std::str::from_utf8(&esc).expect("ASCII"));
        start = i + 1;
    }
    if start < bytes.len() {
        sink.put(&text[start..]);
    }
}

/// Percent-encodes `text` into a new string.
pub fn encode(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    encode_to(&mut s, text);
    s
}

/// The length of `text` once percent-encoded.
pub fn encoded_len(text: &str) -> usize {
    text.bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 3 })
        .sum()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes, calling `out` with each decoded byte. Fails on a `%` that is
/// not followed by two hex digits.
fn decode_bytes(raw: &str, mut out: impl FnMut(u8)) -> Result<()> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_value);
            let lo = b.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out(hi << 4 | lo),
                _ => {
                    return Err(Error::new(
                        Code::PropertyBagInvalid,
                        format!(
                        "bad percent escape at offset {i}: `%` must be followed by two hex digits"
                    ),
                    ))
                }
            }
            i += 3;
        } else {
            out(b[i]);
            i += 1;
        }
    }
    Ok(())
}

/// Percent-decodes `raw`; the result must be UTF-8.
pub fn decode(raw: &str) -> Result<String> {
    let mut bytes = Vec::with_capacity(raw.len());
    decode_bytes(raw, |b| bytes.push(b))?;
    String::from_utf8(bytes).map_err(|_| {
        Error::new(
            Code::PropertyBagInvalid,
            "a percent-decoded property is not valid UTF-8",
        )
    })
}

/// Percent-decodes `raw` into `out` (no allocation) and returns the decoded length. The
/// decoded text must be UTF-8. Errors with `BufferTooSmall` (nothing guaranteed about `out`)
/// when it does not fit; [`decoded_len`] gives the size first.
pub fn decode_into(raw: &str, out: &mut [u8]) -> Result<usize> {
    let needed = decoded_len(raw)?;
    if needed > out.len() {
        return Err(Error::new(
            Code::BufferTooSmall,
            format!(
                "the decoded text needs {needed} bytes; the buffer holds {}",
                out.len()
            ),
        ));
    }
    let mut n = 0;
    decode_bytes(raw, |b| {
        out[n] = b;
        n += 1;
    })?;
    std::str::from_utf8(&out[..n]).map_err(|_| {
        Error::new(
            Code::PropertyBagInvalid,
            "a percent-decoded property is not valid UTF-8",
        )
    })?;
    Ok(n)
}

/// The decoded length of `raw`, validating its escapes.
pub fn decoded_len(raw: &str) -> Result<usize> {
    let mut n = 0;
    decode_bytes(raw, |_| n += 1)?;
    Ok(n)
}

/// Whether percent-decoding `raw` gives exactly `text`, without allocating.
pub fn decodes_to(raw: &str, text: &str) -> bool {
    let mut want = text.as_bytes().iter();
    let mut same = true;
    let ok = decode_bytes(raw, |b| {
        if want.next() != Some(&b) {
            same = false;
        }
    });
    ok.is_ok() && same && want.next().is_none()
}

/// One property of a received bag, as raw (still encoded) slices of the topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property<'a> {
    /// The encoded key (never empty).
    pub key: &'a str,
    /// The encoded value: `None` for a bare `key` (null), `Some("")` for `key=`.
    pub value: Option<&'a str>,
}

impl Property<'_> {
    /// The decoded key.
    pub fn decoded_key(&self) -> Result<String> {
        decode(self.key)
    }

    /// The decoded value (`None` for null).
    pub fn decoded_value(&self) -> Result<Option<String>> {
        self.value.map(decode).transpose()
    }
}

/// Iterates over the properties of an encoded bag (`k=v&k&k=`), validating each one.
///
/// An empty bag has no properties. Each property must have a non-empty key; escapes must be
/// well formed and decode to UTF-8. The iterator yields one error and then stops.
#[derive(Clone, Debug)]
pub struct Properties<'a> {
    rest: &'a str,
    offset: usize,
    done: bool,
}

/// Parses an encoded property bag lazily. See [`Properties`].
pub fn parse_bag(bag: &str) -> Properties<'_> {
    Properties {
        rest: bag,
        offset: 0,
        done: bag.is_empty(),
    }
}

impl<'a> Properties<'a> {
    /// The byte offset in the bag of the next property.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Finds the first property whose decoded key is `key`. Errors if the bag is malformed
    /// before it is found.
    pub fn find(self, key: &str) -> Result<Option<Property<'a>>> {
        for p in self {
            let p = p?;
            if decodes_to(p.key, key) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Validates the whole bag.
    pub fn validate(self) -> Result<usize> {
        let mut n = 0;
        for p in self {
            p?;
            n += 1;
        }
        Ok(n)
    }
}

fn check_part(raw: &str, what: &str, at: usize) -> Result<()> {
    if !raw.contains('%') {
        return Ok(());
    }
    decoded_utf8_check(raw).map_err(|e| e.context(format!("property {what} at offset {at}")))
}

/// Validates the escapes of `raw` and that the decoded bytes are UTF-8, without allocating:
/// decodes through a small stack buffer, carrying an incomplete sequence to the next chunk.
fn decoded_utf8_check(raw: &str) -> Result<()> {
    const CHUNK: usize = 64;
    let mut buf = [0u8; CHUNK + 4];
    let mut n = 0usize;
    let mut bad = false;
    let flush = |buf: &mut [u8; CHUNK + 4], n: &mut usize, last: bool| -> bool {
        match std::str::from_utf8(&buf[..*n]) {
            Ok(_) => {
                *n = 0;
                true
            }
            Err(e) if e.error_len().is_none() && !last => {
                // An incomplete sequence at the end: keep it for the next chunk.
                let valid = e.valid_up_to();
                buf.copy_within(valid..*n, 0);
                *n -= valid;
                true
            }
            Err(_) => false,
        }
    };
    decode_bytes(raw, |b| {
        if bad {
            return;
        }
        buf[n] = b;
        n += 1;
        if n >= CHUNK && !flush(&mut buf, &mut n, false) {
            bad = true;
        }
    })?;
    if bad || !flush(&mut buf, &mut n, true) {
        return Err(Error::new(
            Code::PropertyBagInvalid,
            "percent-decoded text is not valid UTF-8",
        ));
    }
    Ok(())
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<Property<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (segment, rest, last) = match self.rest.find('&') {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..], false),
            None => (self.rest, "", true),
        };
        let at = self.offset;
        let (key, value) = match segment.find('=') {
            Some(i) => (&segment[..i], Some(&segment[i + 1..])),
            None => (segment, None),
        };
        let checked = if key.is_empty() {
            Err(Error::new(
                Code::PropertyBagInvalid,
                format!("empty property name at offset {at} (stray `&` or `=`)"),
            ))
        } else {
            check_part(key, "name", at).and_then(|()| match value {
                Some(v) => check_part(v, "value", at + key.len() + 1),
                None => Ok(()),
            })
        };
        match checked {
            Ok(()) => {
                self.offset += segment.len() + 1;
                self.rest = rest;
                self.done = last;
                Some(Ok(Property { key, value }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Builds an encoded property bag, for telemetry topics.
///
/// ```
/// use tether::mqtt::properties::{PropertyBag, CONTENT_TYPE};
/// let mut bag = PropertyBag::new();
/// bag.append(CONTENT_TYPE, Some("application/json")).append("key", Some("a b"));
/// assert_eq!(bag.as_str(), "%24.ct=application%2Fjson&key=a%20b");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyBag {
    encoded: String,
}

impl PropertyBag {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key=value` (or a bare `key` for `None`), both percent-encoded. An empty key
    /// cannot be represented and is rejected by [`PropertyBag::try_append`]; this method
    /// panics on it.
    pub fn append(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.try_append(key, value).expect("property name is empty");
        self
    }

    /// Appends `key=value` (or a bare `key` for `None`); errors on an empty key.
    pub fn try_append(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        let separator = !self.encoded.is_empty();
        append_property(&mut self.encoded, separator, key, value)
    }

    /// The encoded bag, e.g. `%24.mid=1&key=value`.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// Whether the bag has no properties.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }
}

/// The length `&key=value` adds to a bag (`&` only when the bag is not empty).
pub fn appended_len(bag_is_empty: bool, key: &str, value: Option<&str>) -> usize {
    usize::from(!bag_is_empty) + encoded_len(key) + value.map_or(0, |v| 1 + encoded_len(v))
}

/// Writes `[&]key[=value]` encoded to `sink`.
pub fn append_property(
    sink: &mut (impl Sink + ?Sized),
    separator: bool,
    key: &str,
    value: Option<&str>,
) -> Result<()> {
    if key.is_empty() {
        return Err(Error::new(
            Code::PropertyBagInvalid,
            "a property name must not be empty",
        ));
    }
    if separator {
        sink.put("&");
    }
    encode_to(sink, key);
    if let Some(v) = value {
        sink.put("=");
        encode_to(sink, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_and_escapes_the_rest_uppercase() {
        assert_eq!(encode("azsdk-c/1.6.0-beta.1"), "azsdk-c%2F1.6.0-beta.1");
        assert_eq!(
            encode("dtmi:YOUR_COMPANY_NAME_HERE:sample_device;1"),
            "dtmi%3AYOUR_COMPANY_NAME_HERE%3Asample_device%3B1"
        );
        assert_eq!(encode("a b/#:~"), "a%20b%2F%23%3A~");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encoded_len("a b/é"), encode("a b/é").len());
    }

    #[test]
    fn python_sdk_bag_vector() {
        let mut bag = PropertyBag::new();
        bag.append(MESSAGE_ID, Some("1234"))
            .append(CORRELATION_ID, Some("5678"))
            .append(CONTENT_TYPE, Some("type"))
            .append(CONTENT_ENCODING, Some("utf-8"))
            .append("custom1", Some("value1"));
        assert_eq!(
            bag.as_str(),
            "%24.mid=1234&%24.cid=5678&%24.ct=type&%24.ce=utf-8&custom1=value1"
        );
    }

    #[test]
    fn decoding_accepts_both_cases_and_rejects_bad_escapes() {
        assert_eq!(decode("%2f%2F%24").unwrap(), "//$");
        assert_eq!(decode("%C3%A9").unwrap(), "é");
        for bad in ["%", "%2", "%zz", "a%g0"] {
            assert_eq!(decode(bad).unwrap_err().code(), Code::PropertyBagInvalid);
        }
        assert_eq!(decode("%FF").unwrap_err().code(), Code::PropertyBagInvalid);
        let mut buf = [0u8; 2];
        assert_eq!(
            decode_into("%24ab", &mut buf).unwrap_err().code(),
            Code::BufferTooSmall
        );
        let mut buf = [0u8; 3];
        assert_eq!(decode_into("%24ab", &mut buf).unwrap(), 3);
        assert_eq!(&buf, b"$ab");
    }

    #[test]
    fn bare_key_is_null_and_key_equals_is_empty() {
        let props: Vec<_> = parse_bag("a&b=&c=1").collect::<Result<Vec<_>>>().unwrap();
        assert_eq!(props[0].value, None);
        assert_eq!(props[1].value, Some(""));
        assert_eq!(props[2].value, Some("1"));
        assert_eq!(props.len(), 3);
        assert_eq!(parse_bag("").count(), 0);
    }

    #[test]
    fn malformed_bags_are_refused() {
        for bad in ["&a=1", "a=1&", "a=1&&b", "=1", "a=%2", "%ZZ=1", "a=%FF"] {
            let r = parse_bag(bad).validate();
            assert_eq!(
                r.unwrap_err().code(),
                Code::PropertyBagInvalid,
                "{bad} was accepted"
            );
        }
        assert_eq!(parse_bag("a=b=c").validate().unwrap(), 1);
    }

    #[test]
    fn find_compares_decoded_keys() {
        let p = parse_bag("%24.to=%2Fdevices&x=1")
            .find("$.to")
            .unwrap()
            .unwrap();
        assert_eq!(p.decoded_value().unwrap().as_deref(), Some("/devices"));
        assert!(parse_bag("x=1").find("y").unwrap().is_none());
        assert!(!decodes_to("ab", "abc"));
        assert!(!decodes_to("abc", "ab"));
    }
}
