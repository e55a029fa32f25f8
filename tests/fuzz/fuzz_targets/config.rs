//! Any text as a config file: a config or a one-line error, never a panic.
#![no_main]

use kbastion::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = Config::parse(text, std::path::Path::new("/nonexistent")) {
        assert!(!message.contains('\n'), "{message:?}");
    }
});
