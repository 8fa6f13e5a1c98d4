#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modelgate::fuzz::upstream_text(data));
