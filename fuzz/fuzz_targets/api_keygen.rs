#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mpc_fuzz::api_keygen(data));
