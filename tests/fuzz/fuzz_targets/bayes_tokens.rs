#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strainer::fuzz::bayes_tokens(data));
