//! Output caps: past `max_output_bytes` the output is truncated with a marker and
//! `status.truncated()`; `OutputLimit::Discard` (the default) keeps the block running,
//! `OutputLimit::Kill` kills its process tree. A flood never takes the host's memory or time.
use crate::common;

use std::time::{Duration, Instant};

use dockexec::{CodeBlock, OutputLimit};

const LIMIT: Duration = Duration::from_secs(120);
const MARKER: &str = "[dockexec: output truncated";
const MIB: usize = 1024 * 1024;
/// Room for the marker line after the cap.
const MARKER_ROOM: usize = 256;

fn count(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

#[test]
fn the_cap_truncates_with_a_marker_and_discard_keeps_the_block_running() {
    let (mut b, _guard) = common::case_builder("cap-marker");
    b.max_output_bytes(Some(1000));
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        // Writes past the cap, then proves it ran on: a file, and its own exit code. (The
        // pause keeps the daemon from delivering the stderr line before the stdout flood: it
        // copies the two pipes independently.)
        let code = r#"
import sys, time
sys.stdout.write("a" * 5000)
sys.stdout.flush()
time.sleep(0.2)
print("after the cap", file=sys.stderr)
open("/workspace/cap_marker_ran_on", "w").write("yes")
sys.exit(7)
"#;
        let e = ex.spawn(&CodeBlock::python(code)).unwrap();
        let live = e.chunks();
        let out = e.wait().unwrap();
        let s = out.status;
        assert!(s.truncated(), "{s}");
        assert!(
            !s.output_limit_killed() && !s.cancelled() && !s.timed_out(),
            "{s}"
        );
        assert_eq!(
            s.code(),
            Some(7),
            "Discard lets the block run to its end: {s}"
        );
        assert_eq!(ex.get_file("cap_marker_ran_on").unwrap(), b"yes");
        assert!(
            out.stdout.starts_with(&[b'a'; 1000]),
            "the first 1000 bytes are kept: {:?} / {:?}",
            out.stdout_lossy(),
            out.stderr_lossy()
        );
        let rest = String::from_utf8_lossy(&out.stdout[1000..]);
        assert!(
            rest.trim_start().starts_with(MARKER) && rest.len() <= MARKER_ROOM,
            "after the cap, only the marker: {rest:?}"
        );
        assert_eq!(count(&out.merged(), MARKER), 1, "one marker");
        assert!(
            out.stderr.is_empty(),
            "output after the cap is dropped: {:?}",
            out.stderr_lossy()
        );
        // Live receivers get the same truncated output, marker included, then the end.
        let mut streamed = Vec::new();
        for c in live.iter() {
            streamed.extend_from_slice(c.bytes());
        }
        assert_eq!(streamed, out.merged());
    });
}

#[test]
fn the_cap_counts_stdout_and_stderr_together() {
    let (mut b, _guard) = common::case_builder("cap-both");
    b.max_output_bytes(Some(1000));
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let code = r#"
import sys, time
sys.stdout.write("o" * 600); sys.stdout.flush()
time.sleep(0.1)
sys.stderr.write("e" * 600); sys.stderr.flush()
"#;
        let out = ex.run(&CodeBlock::python(code)).unwrap();
        assert!(out.status.truncated(), "{}", out.status);
        assert!(out.status.success(), "{}", out.status);
        assert_eq!(out.stdout, vec![b'o'; 600]);
        assert!(out.stderr.starts_with(&[b'e'; 400]));
        let rest = String::from_utf8_lossy(&out.stderr[400..]);
        assert!(
            rest.trim_start().starts_with(MARKER) && rest.len() <= MARKER_ROOM,
            "1000 - 600 = 400 bytes of stderr kept, then the marker: {rest:?}"
        );
    });
}

#[test]
fn under_the_cap_nothing_is_truncated() {
    let (mut b, _guard) = common::case_builder("cap-under");
    b.max_output_bytes(Some(MIB));
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::sh("head -c 1000000 /dev/zero\n"))
            .unwrap();
        assert!(
            out.status.success() && !out.status.truncated(),
            "{}",
            out.status
        );
        assert_eq!(out.stdout.len(), 1_000_000);
        assert!(!out.stdout_lossy().contains(MARKER));
    });
}

#[test]
fn one_hundred_megabytes_under_a_1_mib_cap_complete_with_bounded_output() {
    let (mut b, _guard) = common::case_builder("cap-100mb");
    b.max_output_bytes(Some(MIB));
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let sh = ex
            .spawn(&CodeBlock::sh(
                "head -c 100000000 /dev/zero\necho done >&2\n",
            ))
            .unwrap();
        let py = ex
            .spawn(&CodeBlock::python(
                "import sys\nb = b'p' * 65536\nfor _ in range(1526):\n    sys.stdout.buffer.write(b)\n",
            ))
            .unwrap();
        for (name, e) in [("head -c", &sh), ("python", &py)] {
            let t = Instant::now();
            let out = e.wait().unwrap();
            let s = out.status;
            assert!(s.success(), "{name}: Discard lets it finish: {s}");
            assert!(s.truncated(), "{name}: {s}");
            let kept = out.stdout.len() + out.stderr.len();
            assert!(
                (MIB..=MIB + MARKER_ROOM).contains(&kept),
                "{name}: kept {kept} bytes under a {MIB}-byte cap"
            );
            assert!(out.stdout_lossy().contains(MARKER), "{name}");
            eprintln!(
                "{name}: 100 MB under a 1 MiB cap, waited {:?} more",
                t.elapsed()
            );
        }
    });
}

#[test]
fn print_forever_under_a_2s_timeout_and_1_mib_cap_ends_timed_out_with_bounded_output() {
    let deadline = Duration::from_secs(2);
    let (mut b, _guard) = common::case_builder("cap-forever");
    b.max_output_bytes(Some(MIB)).timeout(Some(deadline));
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let t = Instant::now();
        let out = ex
            .run(&CodeBlock::python(
                "# filename: cap_forever_marker.py\nwhile True:\n    print('x' * 1000)\n",
            ))
            .unwrap();
        let elapsed = t.elapsed();
        eprintln!("returned after {elapsed:?}");
        let s = out.status;
        assert!(s.timed_out(), "{s}");
        assert!(s.truncated(), "{s}");
        let kept = out.stdout.len() + out.stderr.len();
        assert!(
            (MIB..=MIB + MARKER_ROOM).contains(&kept),
            "kept {kept} bytes under a {MIB}-byte cap"
        );
        assert!(out.stdout_lossy().contains(MARKER));
        let left = common::processes_matching(ex.container_id(), "cap_forever_marker");
        assert!(left.is_empty(), "{left:?}");
        // The issue's bound for a timeout: the deadline plus 1 s.
        assert!(
            elapsed <= deadline + Duration::from_secs(1),
            "returned after {elapsed:?}, deadline {deadline:?}"
        );
    });
}

#[test]
fn output_limit_kill_ends_a_print_forever_loop_quickly() {
    let (mut b, _guard) = common::case_builder("cap-kill");
    b.max_output_bytes(Some(MIB))
        .on_output_limit(OutputLimit::Kill)
        .timeout(Some(Duration::from_secs(60)));
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let t = Instant::now();
        let out = ex
            .run(&CodeBlock::python(
                "# filename: cap_kill_marker.py\nwhile True:\n    print('x' * 1000)\n",
            ))
            .unwrap();
        let elapsed = t.elapsed();
        eprintln!("returned after {elapsed:?}");
        let s = out.status;
        assert!(s.output_limit_killed(), "{s}");
        assert!(s.truncated(), "{s}");
        assert!(!s.timed_out() && !s.cancelled() && !s.success(), "{s}");
        let kept = out.stdout.len() + out.stderr.len();
        assert!((MIB..=MIB + MARKER_ROOM).contains(&kept), "kept {kept}");
        assert!(out.stdout_lossy().contains(MARKER));
        let left = common::processes_matching(ex.container_id(), "cap_kill_marker");
        assert!(left.is_empty(), "{left:?}");
        // Still usable afterwards.
        assert!(ex.run(&CodeBlock::sh("true")).unwrap().status.success());
        // "Quickly": writing 1 MiB takes milliseconds and a kill well under a second. 3 s is
        // the timeout rule's bound (killing takes at most 1 s) plus 2 s for starting the exec
        // and for noise; far from the 60 s timeout.
        assert!(
            elapsed < Duration::from_secs(3),
            "the output-limit kill took {elapsed:?}"
        );
    });
}
