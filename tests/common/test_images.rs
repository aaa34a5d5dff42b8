//! The test environment's names (images, registry), read from `scripts/test-images.env`: the
//! one place that scripts/test-env.sh, scripts/test.sh, the tests, the benches and the test
//! examples take them from. Included with `#[path]` outside `tests/`.

/// `scripts/test-images.env`, compiled in.
const FILE: &str = include_str!("../../scripts/test-images.env");

/// The environment variable `key` if set, else its line in `scripts/test-images.env`.
pub fn get(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default(key))
}

/// The value of `key` in `scripts/test-images.env` (`KEY=VALUE` lines, `#` comments).
///
/// # Panics
///
/// When the file has no line for `key`.
pub fn default(key: &str) -> String {
    FILE.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("scripts/test-images.env has no {key}"))
}
