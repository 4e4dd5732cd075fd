#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mpc_fuzz::refresh_msg(data));
