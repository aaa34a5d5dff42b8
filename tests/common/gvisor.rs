//! The gVisor lane (issue 22): scripts/test.sh runs the contract suite's core and the
//! sandbox tests with `DOCKEXEC_TEST_RUNTIME=runsc`, which [`builder`](super::builder) turns
//! into `.runtime("runsc")`.
//!
//! What cannot hold under runsc is listed here, once, with the reason: [`Differs`]. A test
//! whose check cannot hold there calls [`differs_here`], which prints the reason and tells it
//! to skip that check (never silently); the README's sandbox section says the same for users.

/// The OCI runtime the suite runs under, from `DOCKEXEC_TEST_RUNTIME` (`None`: the daemon's
/// default).
pub fn test_runtime() -> Option<String> {
    std::env::var("DOCKEXEC_TEST_RUNTIME")
        .ok()
        .filter(|r| !r.is_empty())
}

/// True when the suite runs under gVisor.
pub fn under_gvisor() -> bool {
    test_runtime().as_deref() == Some("runsc")
}

/// A check that cannot hold under gVisor, and why. Each is stated here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Differs {
    /// Reading a default from inside: gVisor's `/proc/self/status` has no `NoNewPrivs` line.
    NoNewPrivsLine,
}

impl Differs {
    /// Why, in words.
    pub fn reason(self) -> &'static str {
        match self {
            Differs::NoNewPrivsLine => {
                "gVisor's /proc/self/status has no NoNewPrivs line (the flag is still set; \
                 sandbox::setuid_gives_nothing checks what it does)"
            }
        }
    }
}

/// Whether `what` applies to this run: under gVisor, prints `SKIP (gVisor): <test>: <reason>`
/// and returns true, so the caller skips that check.
pub fn differs_here(test: &str, what: Differs) -> bool {
    if !under_gvisor() {
        return false;
    }
    eprintln!("SKIP (gVisor): {test}: {}", what.reason());
    true
}
