//! The error messages of the C++ shims (`src/shim/`): each catches its C++ exceptions and
//! hands back `what()` as a malloc'd string, which is read and freed here.

use std::ffi::{c_char, CStr};

extern "C" {
    fn biobert_free_message(message: *mut c_char);
}

/// The first line of a shim's message, which is freed.
///
/// # Safety
/// `message` is a non-null, NUL-terminated string from a shim's strdup, not freed before.
pub unsafe fn take(message: *mut c_char) -> String {
    let text = CStr::from_ptr(message).to_string_lossy().into_owned();
    biobert_free_message(message);
    text.lines().next().unwrap_or("").to_string()
}
