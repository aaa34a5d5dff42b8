//! The remote test engines of scripts/test-env.sh (issue 16): `engines.env` is read as the
//! script writes it, and engine2 really answers, so a broken environment fails here, loudly,
//! before any transport test has to guess why.
use crate::common;

use std::path::Path;

#[test]
fn engine2_answers_ping_on_its_unix_socket() {
    let Some(e) = common::test_engines() else {
        return;
    };
    let (status, body) = e.engine2_get("/_ping").unwrap_or_else(|err| {
        panic!(
            "engine2 ({}, from {}) does not answer: {err}; rerun scripts/test-env.sh",
            e.engine2_sock.display(),
            e.file.display()
        )
    });
    assert_eq!(
        (status, body.as_str()),
        (200, "OK"),
        "GET /_ping on engine2"
    );
    for dir in [&e.tls_certs, &e.wrong_ca_certs] {
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            assert!(dir.join(f).is_file(), "{} missing", dir.join(f).display());
        }
    }
    let ssh_wrapper = e.ssh_bin_dir.join("ssh");
    for f in [&e.ssh_config, &e.ssh_key, &e.ssh_known_hosts, &ssh_wrapper] {
        assert!(f.is_file(), "{} missing", f.display());
    }
    assert!(e.tls_host.starts_with("tcp://127.0.0.1:"), "{}", e.tls_host);
    assert!(e.ssh_host.starts_with("ssh://"), "{}", e.ssh_host);
}

#[test]
fn engines_env_is_parsed_as_the_script_writes_it() {
    let text = "# comment\n\
        DOCKEXEC_TEST_ENGINE2_SOCK=/run/x/engine2.sock\n\
        DOCKEXEC_TEST_ENGINE2_HOST=unix:///run/x/engine2.sock\n\
        DOCKEXEC_TEST_TLS_HOST=tcp://127.0.0.1:1\n\
        DOCKEXEC_TEST_TLS_CERTS=/s/tls/client\n\
        DOCKEXEC_TEST_WRONG_CA_CERTS=/s/tls/wrong-ca\n\
        \n\
        DOCKEXEC_TEST_SSH_HOST=ssh://root@127.0.0.1:2/run/x/engine2.sock\n\
        DOCKEXEC_TEST_SSH_CONFIG=/s/ssh/ssh_config\n\
        DOCKEXEC_TEST_SSH_KEY=/s/ssh/id_ed25519\n\
        DOCKEXEC_TEST_SSH_KNOWN_HOSTS=/s/ssh/known_hosts\n\
        DOCKEXEC_TEST_SSH_HOST_CLI=ssh://root@127.0.0.1:2\n\
        DOCKEXEC_TEST_SSH_BIN_DIR=/s/ssh/bin\n";
    let e = common::parse_engines_env(text, Path::new("engines.env"));
    assert_eq!(e.engine2_sock, Path::new("/run/x/engine2.sock"));
    assert_eq!(e.tls_host, "tcp://127.0.0.1:1");
    assert_eq!(e.wrong_ca_certs, Path::new("/s/tls/wrong-ca"));
    assert_eq!(e.ssh_host, "ssh://root@127.0.0.1:2/run/x/engine2.sock");
    assert_eq!(e.ssh_known_hosts, Path::new("/s/ssh/known_hosts"));
    assert_eq!(e.ssh_host_cli, "ssh://root@127.0.0.1:2");
    assert_eq!(e.ssh_bin_dir, Path::new("/s/ssh/bin"));
}

#[test]
#[should_panic(expected = "has no DOCKEXEC_TEST_SSH_CONFIG")]
fn engines_env_without_a_key_panics() {
    common::parse_engines_env(
        "DOCKEXEC_TEST_ENGINE2_SOCK=/a\nDOCKEXEC_TEST_ENGINE2_HOST=unix:///a\n\
         DOCKEXEC_TEST_TLS_HOST=tcp://127.0.0.1:1\nDOCKEXEC_TEST_TLS_CERTS=/c\n\
         DOCKEXEC_TEST_WRONG_CA_CERTS=/w\nDOCKEXEC_TEST_SSH_HOST=ssh://h\n",
        Path::new("engines.env"),
    );
}

/// Podman's lines (issue 17) are optional: test-env.sh leaves them out with
/// DOCKEXEC_TEST_PODMAN=0, and then the Podman tests skip (panic in CI).
#[test]
fn podman_lines_are_read_when_present() {
    let base = "DOCKEXEC_TEST_ENGINE2_SOCK=/a\nDOCKEXEC_TEST_ENGINE2_HOST=unix:///a\n\
         DOCKEXEC_TEST_TLS_HOST=tcp://127.0.0.1:1\nDOCKEXEC_TEST_TLS_CERTS=/c\n\
         DOCKEXEC_TEST_WRONG_CA_CERTS=/w\nDOCKEXEC_TEST_SSH_HOST=ssh://h\n\
         DOCKEXEC_TEST_SSH_CONFIG=/s\nDOCKEXEC_TEST_SSH_KEY=/k\nDOCKEXEC_TEST_SSH_KNOWN_HOSTS=/kh\n\
         DOCKEXEC_TEST_SSH_HOST_CLI=ssh://h\nDOCKEXEC_TEST_SSH_BIN_DIR=/b\n";
    let e = common::parse_engines_env(base, Path::new("engines.env"));
    assert!(e.podman_sock.is_none() && e.podman_host.is_none());
    let with = format!(
        "{base}DOCKEXEC_TEST_PODMAN_SOCK=/run/p.sock\nDOCKEXEC_TEST_PODMAN_HOST=unix:///run/p.sock\n\
         DOCKEXEC_TEST_PODMAN_ROOTLESS_HOST=unix:///run/r.sock\n"
    );
    let e = common::parse_engines_env(&with, Path::new("engines.env"));
    assert_eq!(e.podman_sock.as_deref(), Some(Path::new("/run/p.sock")));
    assert_eq!(e.podman_host.as_deref(), Some("unix:///run/p.sock"));
    assert_eq!(
        e.podman_rootless_host.as_deref(),
        Some("unix:///run/r.sock")
    );
}
