//! The OCI runtime a container runs under: [`Runtime`], chosen with
//! [`ExecutorBuilder::runtime`](crate::ExecutorBuilder::runtime).

use std::fmt;

/// An OCI runtime the daemon has registered, by name: Docker's `--runtime`.
///
/// [`Runtime::Gvisor`] is gVisor's `runsc`, which puts a second kernel (gVisor's Sentry, in
/// user space) between the block and the host's. Any other registered runtime goes by its
/// name; a plain `"runsc"` is [`Runtime::Gvisor`].
///
/// ```
/// use dockexec::Runtime;
/// assert_eq!(Runtime::from("runsc"), Runtime::Gvisor);
/// assert_eq!(Runtime::Gvisor.name(), "runsc");
/// assert_eq!(Runtime::from("kata").name(), "kata");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Runtime {
    /// gVisor, registered as `runsc`.
    Gvisor,
    /// Any other runtime the daemon has registered (`runc`, `kata`, `crun`, …).
    Named(String),
}

impl Runtime {
    /// The name the daemon registers it under (`HostConfig.Runtime`).
    pub fn name(&self) -> &str {
        match self {
            Runtime::Gvisor => "runsc",
            Runtime::Named(n) => n,
        }
    }

    /// How to install and register this runtime on a Docker daemon, in words.
    pub(crate) fn install_hint(&self) -> String {
        match self {
            Runtime::Gvisor => "install gVisor (Debian/Ubuntu: `apt install runsc`), register it \
                 in the daemon's config (/etc/docker/daemon.json): {\"runtimes\": {\"runsc\": \
                 {\"path\": \"/usr/bin/runsc\", \"runtimeArgs\": [\"--network=none\"]}}} \
                 (`runsc install` writes it), then reload the daemon (SIGHUP, or `systemctl \
                 reload docker`)"
                .into(),
            Runtime::Named(n) => format!(
                "install it and register it in the daemon's config (/etc/docker/daemon.json): \
                 {{\"runtimes\": {{\"{n}\": {{\"path\": \"/path/to/{n}\"}}}}}}, then reload the \
                 daemon (SIGHUP, or `systemctl reload docker`)"
            ),
        }
    }
}

impl From<&str> for Runtime {
    fn from(name: &str) -> Runtime {
        match name {
            "runsc" => Runtime::Gvisor,
            n => Runtime::Named(n.to_string()),
        }
    }
}

impl From<String> for Runtime {
    fn from(name: String) -> Runtime {
        Runtime::from(name.as_str())
    }
}

impl From<&String> for Runtime {
    fn from(name: &String) -> Runtime {
        Runtime::from(name.as_str())
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(Runtime::from("runsc"), Runtime::Gvisor);
        assert_eq!(Runtime::from("runc"), Runtime::Named("runc".into()));
        assert_eq!(Runtime::Gvisor.to_string(), "runsc");
        assert!(Runtime::Gvisor.install_hint().contains("apt install runsc"));
        assert!(Runtime::from("kata").install_hint().contains("\"kata\""));
    }
}
