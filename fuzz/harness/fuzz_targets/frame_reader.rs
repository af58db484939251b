#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flowattr_fuzz::frame_reader(data));
