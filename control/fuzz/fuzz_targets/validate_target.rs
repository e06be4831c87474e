//! Feeds arbitrary text to the target validator. Nothing may panic; an
//! accepted target must be safe to put in a `Location` header, within the
//! length limit, of an allowed scheme, and accepted again unchanged.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shortline_control::config::{Config, Overrides};
use shortline_control::domain::validate::Validator;

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let mut config = Config::load_from(None, &[], &Overrides::default()).expect("defaults");
        config.public_url = "https://sho.rt".into();
        config.short_domains = vec!["s.example".into()];
        config.blocked_domains = vec!["evil.example".into()];
        Validator::new(&config)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let v = validator();
    let Ok(url) = v.target(raw) else {
        return;
    };
    assert!(url.len() <= 4096, "over the limit: {url:?}");
    assert!(
        !url.bytes().any(|b| b < 0x21 || b == 0x7f),
        "header-unsafe target accepted: {url:?}"
    );
    assert!(url.starts_with("http://") || url.starts_with("https://"), "{url:?}");
    match v.target(&url) {
        Ok(again) => assert_eq!(again, url, "not idempotent"),
        Err(e) => panic!("{url:?} accepted once, then refused: {e}"),
    }
});
