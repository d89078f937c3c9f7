//! Record headers of a fetched message, read straight from librdkafka.
//!
//! rdkafka's `Headers::iter` unwraps each header name as UTF-8, so one record whose
//! header name is not (any client can write one; the broker does not check) would panic
//! the partition's consumer before the record could be dead-lettered, and again after
//! every restart. Here a name that is not UTF-8 is read lossily and the record flows on
//! like any other.

use crate::envelope::Headers;
use bytes::Bytes;
use rdkafka::bindings as rd;
use rdkafka::message::BorrowedMessage;
use std::ffi::CStr;
use std::ptr;

/// The headers of `m`, in order (none when it has none).
pub(crate) fn of(m: &BorrowedMessage<'_>) -> Headers {
    let mut native: *mut rd::rd_kafka_headers_t = ptr::null_mut();
    // SAFETY: `m.ptr()` is a live message for `m`'s lifetime; librdkafka returns a pointer
    // to headers the message owns (or an error and no pointer), which we only read here.
    let err = unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut native) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || native.is_null() {
        return Headers::new();
    }
    // SAFETY: `native` belongs to `m`, which outlives this call.
    unsafe { read(native) }
}

/// Copies every header out of `native`.
///
/// # Safety
/// `native` must point to live librdkafka headers for the duration of the call.
unsafe fn read(native: *const rd::rd_kafka_headers_t) -> Headers {
    let mut out = Headers::new();
    // SAFETY: the caller guarantees `native` is live.
    let count = unsafe { rd::rd_kafka_header_cnt(native) };
    for idx in 0..count {
        let (mut name, mut value, mut size) = (ptr::null(), ptr::null(), 0usize);
        // SAFETY: `idx < count`; the out-pointers are valid locals.
        let err = unsafe { rd::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka keeps header names NUL-terminated, alive as long as `native`.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        let value = if value.is_null() {
            Bytes::new()
        } else {
            // SAFETY: `value` points to `size` bytes owned by `native`.
            Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) })
        };
        out.push(&name, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 9 (hostile input): a header name that is not UTF-8, as a crafted producer
    /// can send it, is read lossily instead of panicking.
    #[test]
    fn a_header_name_that_is_not_utf8_does_not_panic() {
        // SAFETY: headers made, filled, read and destroyed here.
        let headers = unsafe {
            let native = rd::rd_kafka_headers_new(3);
            let add = |name: &[u8], value: &[u8]| {
                rd::rd_kafka_header_add(
                    native,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                )
            };
            assert_eq!(add(b"traceparent", b"00-x"), rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
            assert_eq!(add(b"tr\xffce", b"\xfe\x00v"), rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
            rd::rd_kafka_header_add(native, b"nul".as_ptr().cast(), 3, ptr::null(), 0);
            let h = read(native);
            rd::rd_kafka_headers_destroy(native);
            h
        };
        let got: Vec<(String, Vec<u8>)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                ("traceparent".to_string(), b"00-x".to_vec()),
                ("tr\u{fffd}ce".to_string(), b"\xfe\x00v".to_vec()),
                ("nul".to_string(), Vec::new()),
            ]
        );
    }
}
