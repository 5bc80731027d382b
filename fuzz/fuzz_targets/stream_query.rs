#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punctual::fuzzing::stream_query(data));
