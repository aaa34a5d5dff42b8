#![doc = include_str!("kubernetes.md")]

/// What the page names of today's code. The compile-time check below refers to each of these
/// items, so a rename or removal breaks the build of the tests before the page goes stale;
/// the unit test checks that the page still names each of them.
#[cfg(test)]
const SEAM_NAMES: &[&str] = &[
    "runner::Runner",
    "runner::Source",
    "runner::Control",
    "runner::prepare",
    "runner::agent::AgentRunner",
    "runner::agent::KillAll",
    "runner::exec::ExecRunner",
    "runner::protocol::MAX_FRAME",
    "docker::api::Client",
    "Client::container_create",
    "Client::container_start",
    "Client::container_remove",
    "Client::container_attach",
    "Client::exec_create",
    "Client::exec_attach",
    "Client::exec_inspect",
    "Client::archive_put",
    "Client::archive_get",
    "docker::transport::Hijacked",
    "docker::frames::Demuxer",
    "spec::ContainerSpec",
    "ContainerSpec::to_create_body",
    "lifetime::Keeper",
    "Keeper::attach",
    "Keeper::restart",
    "Keeper::kill_all",
    "Keeper::close",
    "lifetime::KEEPER_SCRIPT",
    "seccomp::profile",
    "sweep::sweep",
    "executor::Parts",
];

#[cfg(test)]
mod tests {
    use super::SEAM_NAMES;

    const PAGE: &str = include_str!("kubernetes.md");

    /// Names every private item the page cites, by path, so that the page's seam cannot
    /// outlive the code it describes (public items are checked by `cargo doc`'s intra-doc
    /// links instead).
    #[test]
    fn the_seam_the_page_names_exists() {
        use crate::docker::api::Client;
        use crate::lifetime::Keeper;
        use crate::spec::ContainerSpec;
        let _ = (
            Client::container_create,
            Client::container_start,
            Client::container_remove,
            Client::container_attach,
            Client::exec_create,
            Client::exec_attach,
            Client::exec_inspect,
            Client::archive_put,
            Client::archive_get,
        );
        let _ = (
            Keeper::attach,
            Keeper::restart,
            Keeper::kill_all,
            Keeper::close,
        );
        let _ = ContainerSpec::to_create_body;
        let _ = (
            crate::runner::prepare,
            crate::seccomp::profile,
            crate::sweep::sweep,
        );
        let _ = (
            crate::lifetime::KEEPER_SCRIPT,
            crate::runner::protocol::MAX_FRAME,
        );
        fn names<T: ?Sized>() {}
        names::<dyn crate::runner::Runner>();
        names::<dyn crate::runner::Source>();
        names::<dyn crate::runner::Control>();
        names::<dyn crate::runner::agent::KillAll>();
        names::<crate::runner::agent::AgentRunner>();
        names::<crate::runner::exec::ExecRunner>();
        names::<crate::docker::transport::Hijacked>();
        names::<crate::docker::frames::Demuxer>();
        names::<crate::executor::Parts>();
        for name in SEAM_NAMES {
            assert!(
                PAGE.contains(name),
                "the Kubernetes page no longer names `{name}`"
            );
        }
    }

    /// Every `src/…` file the page points at is still there.
    #[test]
    fn the_files_the_page_cites_exist() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for piece in PAGE.split('`').skip(1).step_by(2) {
            if let Some(path) = piece.strip_prefix("src/") {
                let path = path.split([' ', ':']).next().unwrap_or(path);
                assert!(
                    root.join("src").join(path).exists(),
                    "the Kubernetes page cites src/{path}, which is gone"
                );
                seen += 1;
            }
        }
        assert!(seen >= 5, "the page should cite the files of its seam");
    }
}
