#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strainer::fuzz::smtp_command(data));
