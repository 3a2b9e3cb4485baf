//! Property bags for C: build one in a caller buffer, iterate over a received one, find a
//! property, decode a value.
//!
//! Bags are `key=value&key=value` with IoT Hub's percent-encoding (unreserved characters
//! `A-Z a-z 0-9 - _ . ~` kept, everything else `%XX`). In received bags a bare `key` is a
//! null value and `key=` an empty one: `tether_property.has_value` keeps the difference.

use std::ffi::c_char;

use crate::error::{Code, Error, Result};
use crate::ffi::panic::guard;
use crate::ffi::topics::{tether_span, topic_arg, write_built};
use crate::ffi::{bytes_arg, out_arg, out_buf_arg, text_arg};
use crate::mqtt::properties::{self, parse_bag, Property};

/// A property bag being built in a caller-owned buffer. Initialise it with
/// `tether_property_bag_init`; then `buf` always holds the NUL-terminated encoded bag and
/// `len` its length. Do not change the fields yourself. The struct owns nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_property_bag {
    /// The caller's buffer.
    pub buf: *mut c_char,
    /// Its capacity in bytes.
    pub cap: usize,
    /// The encoded length (without the NUL).
    pub len: usize,
}

/// One property of a bag, as encoded spans into the bag (decode them with
/// `tether_property_decode`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_property {
    /// The encoded name (never empty).
    pub key: tether_span,
    /// The encoded value; `ptr` is NULL for a null value (a bare `key`).
    pub value: tether_span,
    /// false for a null value (a bare `key`), true otherwise (including `key=`).
    pub has_value: bool,
}

/// An iterator over a bag. Initialise it with `tether_property_iter_init`; do not change the
/// fields yourself. It borrows the bag: keep the bag's memory alive while iterating.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_property_iter {
    /// The bag.
    pub bag: *const c_char,
    /// The bag's length.
    pub len: usize,
    /// The offset of the next property.
    pub offset: usize,
    /// Set once the end (or an error) was reached.
    pub done: bool,
}

fn property_out(p: Property<'_>) -> tether_property {
    tether_property {
        key: tether_span::of(p.key),
        value: tether_span::of_opt(p.value),
        has_value: p.value.is_some(),
    }
}

/// Starts an empty bag in `buf` (capacity `cap`, at least 1 for the NUL).
///
/// - `bag`: the struct to initialise. Not NULL.
/// - `buf`: the caller's buffer; it must outlive the bag's use. Not NULL.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_ARGUMENT`
/// (`cap` is 0).
#[no_mangle]
pub unsafe extern "C" fn tether_property_bag_init(
    bag: *mut tether_property_bag,
    buf: *mut c_char,
    cap: usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let bag = unsafe { out_arg(bag, "bag") }?;
        if buf.is_null() {
            return Err(Error::new(Code::NullArgument, "`buf` is NULL"));
        }
        if cap == 0 {
            return Err(Error::new(
                Code::InvalidArgument,
                "`cap` is 0; the bag needs room for at least its NUL terminator",
            ));
        }
        unsafe { out_buf_arg(buf.cast(), cap, "buf") }?;
        // SAFETY: `buf` is valid for `cap >= 1` bytes.
        unsafe { *buf = 0 };
        *bag = tether_property_bag { buf, cap, len: 0 };
        Ok(())
    })
}

/// Appends `key=value` to the bag, percent-encoding both (`$.ct` becomes `%24.ct`). Use the
/// system property names `$.mid $.cid $.uid $.ct $.ce $.ctime $.exp $.sub` or your own.
///
/// - `key`: NUL-terminated UTF-8, not empty. Not NULL.
/// - `value`: NUL-terminated UTF-8, or NULL to append a bare `key` (a null value).
///
/// When the buffer is too small the bag is left unchanged and
/// `TETHER_RESULT_BUFFER_TOO_SMALL` is returned (`tether_last_error` says how many bytes
/// are needed). No allocation.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_PROPERTY_BAG_INVALID` (empty key), `TETHER_RESULT_INVALID_ARGUMENT` (the
/// bag was not initialised), `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_property_bag_append(
    bag: *mut tether_property_bag,
    key: *const c_char,
    value: *const c_char,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let bag = unsafe { out_arg(bag, "bag") }?;
        let key = unsafe { text_arg(key, "key") }?;
        let value = unsafe { crate::ffi::topics::opt_text_arg(value, "value") }?;
        if bag.buf.is_null() || bag.len >= bag.cap {
            return Err(Error::new(
                Code::InvalidArgument,
                "the bag is not initialised (call tether_property_bag_init)",
            ));
        }
        let separator = bag.len > 0;
        let free = bag.cap - bag.len;
        // SAFETY: the bag's buffer is valid for `cap` bytes and `len < cap`.
        let tail = unsafe { bag.buf.add(bag.len) };
        let mut written = 0usize;
        let r = unsafe {
            write_built(tail, free, &mut written, |s| {
                properties::append_property(s, separator, key, value)
            })
        };
        match r {
            Ok(()) => {
                bag.len += written;
                Ok(())
            }
            Err(e) if e.code() == Code::BufferTooSmall => {
                // write_built wrote nothing: the old NUL terminator is still in place.
                Err(Error::new(
                    Code::BufferTooSmall,
                    format!(
                        "the bag needs {} bytes including its NUL terminator; its buffer holds {}",
                        bag.len + written + 1,
                        bag.cap
                    ),
                ))
            }
            Err(e) => Err(e),
        }
    })
}

/// Starts iterating over an encoded bag (`bag_len` bytes, not necessarily NUL-terminated;
/// NULL with length 0 for an empty bag).
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn tether_property_iter_init(
    iter: *mut tether_property_iter,
    bag: *const c_char,
    bag_len: usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let iter = unsafe { out_arg(iter, "iter") }?;
        unsafe { bytes_arg(bag.cast(), bag_len, "bag") }?;
        *iter = tether_property_iter {
            bag,
            len: bag_len,
            offset: 0,
            done: bag_len == 0,
        };
        Ok(())
    })
}

/// Gives the next property of the bag in `*out` (spans into the bag).
///
/// Results: `TETHER_RESULT_OK` (`*out` written); `TETHER_RESULT_NOT_FOUND` at the end (also
/// for an empty bag); `TETHER_RESULT_PROPERTY_BAG_INVALID` (malformed property: bad escape,
/// empty name, not UTF-8 once decoded; iteration stops); `TETHER_RESULT_INVALID_UTF8`;
/// `TETHER_RESULT_NULL_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn tether_property_iter_next(
    iter: *mut tether_property_iter,
    out: *mut tether_property,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let iter = unsafe { out_arg(iter, "iter") }?;
        let out = unsafe { out_arg(out, "out") }?;
        if iter.done {
            return Err(Error::new(Code::NotFound, "no more properties in the bag"));
        }
        if iter.bag.is_null() || iter.offset > iter.len {
            iter.done = true;
            return Err(Error::new(
                Code::InvalidArgument,
                "the iterator was not initialised or was changed by the caller",
            ));
        }
        // The bag is read through the spans written to `out`: they must not overlap.
        unsafe { bytes_arg(iter.bag.cast(), iter.len, "iter->bag") }?;
        // Only the next property is read and checked, so iterating is linear in the bag.
        // SAFETY: the bag is valid for `len` bytes per tether_property_iter_init's contract.
        let rest = unsafe {
            std::slice::from_raw_parts(
                iter.bag.cast::<u8>().add(iter.offset),
                iter.len - iter.offset,
            )
        };
        let (segment, last) = match rest.iter().position(|b| *b == b'&') {
            Some(i) => (&rest[..i], false),
            None => (rest, true),
        };
        let at = iter.offset;
        let checked = std::str::from_utf8(segment)
            .map_err(|_| {
                Error::new(
                    Code::InvalidUtf8,
                    format!("the bag is not valid UTF-8 in the property at offset {at}"),
                )
            })
            .and_then(|segment| {
                if segment.is_empty() {
                    return Err(Error::new(
                        Code::PropertyBagInvalid,
                        format!("empty property at offset {at} (stray `&`)"),
                    ));
                }
                parse_bag(segment)
                    .next()
                    .unwrap_or_else(|| Err(Error::new(Code::PropertyBagInvalid, "empty property")))
                    .map_err(|e| e.context(format!("property at offset {at}")))
            });
        match checked {
            Ok(p) => {
                iter.offset += segment.len() + usize::from(!last);
                iter.done = last;
                *out = property_out(p);
                Ok(())
            }
            Err(e) => {
                iter.done = true;
                Err(e)
            }
        }
    })
}

/// Finds the first property whose decoded name is `key` (NUL-terminated, compared after
/// decoding the bag's names, so `$.to` finds `%24.to`).
///
/// Results: `TETHER_RESULT_OK` (`*out` written), `TETHER_RESULT_NOT_FOUND`,
/// `TETHER_RESULT_PROPERTY_BAG_INVALID` (the bag is malformed before the key is found),
/// `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`.
#[no_mangle]
pub unsafe extern "C" fn tether_property_bag_find(
    bag: *const c_char,
    bag_len: usize,
    key: *const c_char,
    out: *mut tether_property,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let bag = unsafe { topic_arg(bag, bag_len, "bag") }?;
        let key = unsafe { text_arg(key, "key") }?;
        let out = unsafe { out_arg(out, "out") }?;
        match parse_bag(bag).find(key)? {
            Some(p) => {
                *out = property_out(p);
                Ok(())
            }
            None => Err(Error::new(
                Code::NotFound,
                format!("the bag has no property named {key:?}"),
            )),
        }
    })
}

/// Percent-decodes an encoded name or value (for example a `tether_property` span) into
/// `out` as NUL-terminated UTF-8. No allocation.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_BUFFER_TOO_SMALL` (nothing written,
/// `*out_len` = decoded length needed), `TETHER_RESULT_PROPERTY_BAG_INVALID` (bad escape or
/// not UTF-8 once decoded), `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`.
#[no_mangle]
pub unsafe extern "C" fn tether_property_decode(
    encoded: *const c_char,
    encoded_len: usize,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let raw = unsafe { topic_arg(encoded, encoded_len, "encoded") }?;
        let out_len = unsafe { out_arg(out_len, "out_len") }?;
        unsafe { out_buf_arg(out.cast(), cap, "out") }?;
        let needed = properties::decoded_len(raw)?;
        if needed >= cap {
            *out_len = needed;
            return Err(Error::new(
                Code::BufferTooSmall,
                format!(
                    "output needs {} bytes including its NUL terminator; the buffer holds {cap}",
                    needed + 1
                ),
            ));
        }
        // SAFETY: `out` is valid for `cap > needed` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), cap) };
        let n = decode_checked(raw, &mut buf[..needed])?;
        buf[n] = 0;
        *out_len = n;
        Ok(())
    })
}

fn decode_checked(raw: &str, out: &mut [u8]) -> Result<usize> {
    properties::decode_into(raw, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(s: tether_span) -> &'static str {
        let bytes = unsafe { std::slice::from_raw_parts(s.ptr.cast::<u8>(), s.len) };
        std::str::from_utf8(bytes).unwrap()
    }

    fn empty_property() -> tether_property {
        tether_property {
            key: tether_span::NONE,
            value: tether_span::NONE,
            has_value: false,
        }
    }

    #[test]
    fn build_a_bag_and_keep_it_intact_when_full() {
        let mut buf = [0 as c_char; 24];
        let mut bag = tether_property_bag {
            buf: std::ptr::null_mut(),
            cap: 0,
            len: 0,
        };
        assert_eq!(
            unsafe { tether_property_bag_init(&mut bag, buf.as_mut_ptr(), 24) },
            Code::Ok
        );
        assert_eq!(
            unsafe { tether_property_bag_append(&mut bag, c"$.ct".as_ptr(), c"a/b".as_ptr()) },
            Code::Ok
        );
        assert_eq!(
            unsafe { tether_property_bag_append(&mut bag, c"k".as_ptr(), std::ptr::null()) },
            Code::Ok
        );
        let text = "%24.ct=a%2Fb&k";
        assert_eq!(bag.len, text.len());
        let before = buf;
        assert_eq!(
            unsafe { tether_property_bag_append(&mut bag, c"long".as_ptr(), c"value".as_ptr()) },
            Code::BufferTooSmall
        );
        assert_eq!(bag.len, text.len());
        assert_eq!(buf, before);
        let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(s.to_str().unwrap(), text);
    }

    #[test]
    fn iterate_find_and_decode() {
        let bag = "%24.to=%2Fdevices&nul&empty=";
        let mut it = tether_property_iter {
            bag: std::ptr::null(),
            len: 0,
            offset: 0,
            done: false,
        };
        assert_eq!(
            unsafe { tether_property_iter_init(&mut it, bag.as_ptr().cast(), bag.len()) },
            Code::Ok
        );
        let mut p = empty_property();
        let mut seen = Vec::new();
        loop {
            match unsafe { tether_property_iter_next(&mut it, &mut p) } {
                Code::Ok => seen.push((
                    span(p.key),
                    p.has_value,
                    if p.has_value { span(p.value) } else { "" },
                )),
                Code::NotFound => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                ("%24.to", true, "%2Fdevices"),
                ("nul", false, ""),
                ("empty", true, "")
            ]
        );
        assert_eq!(
            unsafe {
                tether_property_bag_find(bag.as_ptr().cast(), bag.len(), c"$.to".as_ptr(), &mut p)
            },
            Code::Ok
        );
        let mut out = [0 as c_char; 9];
        let mut len = 0;
        assert_eq!(
            unsafe {
                tether_property_decode(p.value.ptr, p.value.len, out.as_mut_ptr(), 9, &mut len)
            },
            Code::Ok
        );
        assert_eq!(len, 8);
        assert_eq!(
            unsafe {
                tether_property_decode(p.value.ptr, p.value.len, out.as_mut_ptr(), 8, &mut len)
            },
            Code::BufferTooSmall
        );
        assert_eq!(
            unsafe {
                tether_property_bag_find(bag.as_ptr().cast(), bag.len(), c"x".as_ptr(), &mut p)
            },
            Code::NotFound
        );
        let bad = "a=1&=2";
        assert_eq!(
            unsafe { tether_property_iter_init(&mut it, bad.as_ptr().cast(), bad.len()) },
            Code::Ok
        );
        assert_eq!(
            unsafe { tether_property_iter_next(&mut it, &mut p) },
            Code::Ok
        );
        assert_eq!(
            unsafe { tether_property_iter_next(&mut it, &mut p) },
            Code::PropertyBagInvalid
        );
        assert_eq!(
            unsafe { tether_property_iter_next(&mut it, &mut p) },
            Code::NotFound
        );
    }
}
