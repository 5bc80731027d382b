#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punctual::fuzzing::config_change(data));
