#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mpc_fuzz::reshare_msg(data));
