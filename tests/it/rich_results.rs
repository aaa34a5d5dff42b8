//! Issue 19: rich results. Figures, `display()` and a session block's last expression come
//! back from the agent's Python blocks as their own frames, in order with the output, capped,
//! redacted, and unforgeable from stdout. With the exec strategy a block is `python3 FILE`:
//! nothing rich. The figure tests need the matplotlib image (`common::mpl_image`, which fails
//! clearly when it is missing).
use crate::common;

use std::time::Duration;

use dockexec::{CodeBlock, ResultKind, RichResult, Strategy};

const LIMIT: Duration = Duration::from_secs(120);
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

fn agent(case: &str) -> (dockexec::ExecutorBuilder, common::CaseGuard) {
    let (mut b, guard) = common::case_builder(case);
    b.strategy(Strategy::Agent);
    (b, guard)
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.starts_with(PNG),
        "not a PNG: {:?}",
        &png[..png.len().min(16)]
    );
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn kinds(results: &[RichResult]) -> Vec<ResultKind> {
    results.iter().map(|r| r.kind).collect()
}

const FIGURES: &str = r#"
import matplotlib.pyplot as plt
print("start")
for i in range(2):
    plt.figure(figsize=(2 + i, 2))
    plt.plot([1, 2, 3])
plt.show()
print("between shows")
for i in range(2):
    plt.figure(figsize=(4, 1 + i))
    plt.plot([3, 2, 1])
plt.show()
print("after shows")

class Html:
    def _repr_html_(self):
        return "<b>bold</b>"
    def __repr__(self):
        return "Html()"

class Plain:
    def __repr__(self):
        return "Plain()"

display(Html())
print("between displays")
display(Plain())
plt.figure(figsize=(3, 3))
plt.plot([0, 1])
print("end")
"#;

#[test]
fn figures_and_display_come_back_in_order_with_the_output() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = agent("rich-figures");
        b.image(common::mpl_image());
        let ex = b.start().unwrap();
        let e = ex.spawn(&CodeBlock::python(FIGURES)).unwrap();
        let live = e.results();
        let out = e.wait().unwrap().clone();
        common::assert_success(&out);
        let live: Vec<RichResult> = live.iter().collect();
        assert_eq!(live, out.results, "the live results are the stored ones");
        use ResultKind::{Display, Figure};
        assert_eq!(
            kinds(&out.results),
            [Figure, Figure, Figure, Figure, Display, Display, Figure],
            "{out:?}"
        );
        let stdout = out.stdout_lossy();
        let before = |r: &RichResult| stdout[..r.stdout_at].to_string();
        // Two figures per show, the first show after "start", the second after "between".
        for (i, r) in out.results[..4].iter().enumerate() {
            let png = r.get("image/png").expect("a PNG");
            let (w, h) = png_size(png);
            assert!(w > 50 && h > 50 && png.len() > 500, "figure {i}: {w}x{h}");
            assert!(r.text().unwrap().contains("Figure"), "{r:?}");
            let want = if i < 2 {
                "start\n"
            } else {
                "start\nbetween shows\n"
            };
            assert_eq!(before(r), want, "figure {i}");
        }
        // Wider figure (3 in) after the 2 in one: sizes follow the figures.
        let w = |i: usize| png_size(out.results[i].get("image/png").unwrap()).0;
        assert!(w(1) > w(0), "{} {}", w(0), w(1));
        let html = &out.results[4];
        assert_eq!(html.get("text/html"), Some(&b"<b>bold</b>"[..]));
        assert_eq!(html.text().as_deref(), Some("Html()"));
        assert_eq!(before(html), "start\nbetween shows\nafter shows\n");
        let plain = &out.results[5];
        assert_eq!(plain.data.len(), 1, "only text/plain: {plain:?}");
        assert_eq!(plain.text().as_deref(), Some("Plain()"));
        assert_eq!(
            before(plain),
            "start\nbetween shows\nafter shows\nbetween displays\n"
        );
        // The figure never shown comes after the block's last print.
        let unshown = &out.results[6];
        let (uw, uh) = png_size(unshown.get("image/png").unwrap());
        assert!(
            uw * 10 > uh * 8 && uh * 10 > uw * 8,
            "a square figure: {uw}x{uh}"
        );
        assert_eq!(unshown.stdout_at, stdout.len());
        assert!(
            stdout.ends_with("end\n") && !stdout.contains("PNG"),
            "{stdout}"
        );
        assert_eq!(out.results.iter().filter(|r| r.truncated()).count(), 0);

        // A python3 the block starts sees matplotlib's own default, not dockexec's backend.
        let out = ex
            .run(&CodeBlock::python(
                "import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', \
                 'import matplotlib; print(matplotlib.get_backend())'], capture_output=True, \
                 text=True).stdout.strip())",
            ))
            .unwrap();
        common::assert_success(&out);
        assert!(
            !out.stdout_lossy().contains("dockexec"),
            "{out:?} (Debian's matplotlibrc says TkAgg)"
        );
        ex.stop().unwrap();
    });
}

#[test]
fn figures_come_back_from_session_blocks_shown_or_left_open() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = agent("rich-session-fig");
        b.image(common::mpl_image());
        let ex = b.start().unwrap();
        let s = ex.session().unwrap();
        let out = s
            .run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nprint('shown')")
            .unwrap();
        common::assert_success(&out);
        assert_eq!(kinds(&out.results), [ResultKind::Figure], "{out:?}");
        assert_eq!(out.results[0].stdout_at, 0);
        // Left open: sent after the block (once), as is a figure the last expression made;
        // the next block starts with none open.
        let out = s.run("fig = plt.figure()\nplt.plot([2, 1])\n3").unwrap();
        assert_eq!(
            kinds(&out.results),
            [ResultKind::Value, ResultKind::Figure],
            "{out:?}"
        );
        png_size(out.results[1].get("image/png").unwrap());
        let out = s.run("len(plt.get_fignums())").unwrap();
        assert_eq!(out.results[0].text().as_deref(), Some("0"), "{out:?}");
        // SVG on request.
        let out = s
            .run("import os\nos.environ['DOCKEXEC_FIGURE_FORMAT'] = 'svg'\nplt.plot([1])\nplt.show()")
            .unwrap();
        let svg = out.results[0].get("image/svg+xml").expect("an SVG");
        assert!(String::from_utf8_lossy(svg).contains("<svg"), "{out:?}");
        assert!(out.results[0].get("image/png").is_none());
        drop(s);
        ex.stop().unwrap();
    });
}

#[test]
fn a_session_blocks_last_expression_comes_back_as_its_value() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = agent("rich-session");
        let ex = b.start().unwrap();
        let s = ex.session().unwrap();
        let out = s.run("x = 40\nprint('set')\nx + 2").unwrap();
        common::assert_success(&out);
        assert_eq!(out.stdout_lossy(), "set\n");
        assert_eq!(kinds(&out.results), [ResultKind::Value]);
        assert_eq!(out.results[0].text().as_deref(), Some("42"));
        assert_eq!(out.results[0].stdout_at, 4);
        // None, a statement, and an exception give no value; display() works in sessions.
        for code in ["None", "y = 1", "print('p')"] {
            let out = s.run(code).unwrap();
            assert!(out.results.is_empty(), "{code}: {out:?}");
        }
        let out = s.run("1/0\n").unwrap();
        assert!(
            out.results.is_empty() && out.status.code() == Some(1),
            "{out:?}"
        );
        let out = s
            .run("class H:\n    def _repr_html_(self): return '<i>h</i>'\ndisplay(H())\nx")
            .unwrap();
        assert_eq!(
            kinds(&out.results),
            [ResultKind::Display, ResultKind::Value]
        );
        assert_eq!(out.results[1].text().as_deref(), Some("40"));
        // A syntax error reads as before: no parser frames.
        let out = s.run("x = (").unwrap();
        assert!(
            !out.stderr_lossy().contains("Traceback"),
            "{}",
            out.stderr_lossy()
        );
        drop(s);
        // A script block is `python3 FILE`: its last expression gives nothing.
        let out = ex.run(&CodeBlock::python("40 + 2")).unwrap();
        assert!(out.results.is_empty(), "{out:?}");
        ex.stop().unwrap();
    });
}

#[test]
fn a_50_mb_result_meets_the_cap_and_is_marked() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = agent("rich-cap");
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::python(
                r#"import os
class Big:
    def _repr_png_(self):
        return b"\x89PNG\r\n\x1a\n" + os.urandom(50 * 1024 * 1024)
    def _repr_html_(self):
        return "<p>" + "x" * (50 * 1024 * 1024) + "</p>"
display(Big())
print("after")
display("small")
"#,
            ))
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.stdout_lossy(), "after\n");
        assert_eq!(out.results.len(), 2, "{out:?}");
        let big = &out.results[0];
        assert!(big.truncated());
        let png = big.data.iter().find(|d| d.mime == "image/png").unwrap();
        assert!(png.truncated && png.data.is_empty(), "{png:?}");
        assert_eq!(png.size, 50 * 1024 * 1024 + 8);
        let html = big.data.iter().find(|d| d.mime == "text/html").unwrap();
        assert!(
            html.truncated && html.data.starts_with(b"<p>xxx"),
            "{html:?}"
        );
        assert!(html.data.len() <= 16 * 1024 * 1024, "{}", html.data.len());
        assert_eq!(
            big.best().unwrap().mime,
            "text/html",
            "a dropped image is not the best"
        );
        assert_eq!(out.results[1].text().as_deref(), Some("'small'"));

        // The block's total (32 MiB): a third 15 MiB text is cut, a fourth is empty; both marked.
        let out = ex
            .run(&CodeBlock::python(
                "for c in 'abcd':\n    display({'text/plain': c * (15 << 20)}, raw=True)",
            ))
            .unwrap();
        common::assert_success(&out);
        let lens: Vec<(usize, bool)> = out
            .results
            .iter()
            .map(|r| (r.data[0].data.len(), r.data[0].truncated))
            .collect();
        assert_eq!(
            lens,
            [
                (15 << 20, false),
                (15 << 20, false),
                (2 << 20, true),
                (0, true)
            ]
        );
        ex.stop().unwrap();
    });
}

#[test]
fn a_result_frame_forged_on_stdout_is_plain_stdout() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = agent("rich-forge");
        let ex = b.start().unwrap();
        // An agent RESULT frame (kind 0x89) for execution 1, as the agent would frame it, and a
        // results-pipe record, both written to stdout and stderr.
        let out = ex
            .run(&CodeBlock::python(
                r#"import json, struct, sys
h = json.dumps({"kind": "display", "items": [{"mime": "text/plain", "len": 6, "size": 6, "truncated": False}]}).encode()
body = struct.pack(">I", len(h)) + h + b"forged"
frame = struct.pack(">IBI", 5 + len(body), 0x89, 1) + body
rec = struct.pack(">I", 60) + json.dumps({"kind": "display", "items": [["text/plain", 6]]}).encode().ljust(60) + b"forged"
sys.stdout.buffer.write(frame + rec)
sys.stderr.buffer.write(frame)
"#,
            ))
            .unwrap();
        common::assert_success(&out);
        assert!(out.results.is_empty(), "{out:?}");
        assert!(
            out.stdout.ends_with(b"forged") && out.stdout.len() > 100,
            "{out:?}"
        );
        assert!(out.stderr.ends_with(b"forged"), "{out:?}");
        // A malformed record on the results pipe itself ends that block's results, says so,
        // and harms nothing else.
        let out = ex
            .run(&CodeBlock::python(
                r#"import os
def socket_fds():
    for f in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + f).startswith("socket:"):
                yield int(f)
        except OSError:
            pass
os.write(next(socket_fds()), b"\xff\xff\xff\xff")
display(1)
print("on")
"#,
            ))
            .unwrap();
        common::assert_success(&out);
        assert!(out.results.is_empty(), "{out:?}");
        assert!(
            out.stderr_lossy().contains("malformed rich-result record"),
            "{out:?}"
        );
        assert_eq!(out.stdout_lossy(), "on\n");
        let out = ex.run(&CodeBlock::python("display(7)")).unwrap();
        assert_eq!(out.results[0].text().as_deref(), Some("7"));
        ex.stop().unwrap();
    });
}

#[test]
fn a_secret_inside_html_is_redacted() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = agent("rich-secret");
        b.secret_env("RICH_TOKEN", "tok-3141592653");
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::python(
                r#"import os
class H:
    def _repr_html_(self):
        return "<td>" + os.environ["RICH_TOKEN"] + "</td>"
    def _repr_png_(self):
        return b"\x89PNG" + os.environ["RICH_TOKEN"].encode()
display(H())
"#,
            ))
            .unwrap();
        common::assert_success(&out);
        let r = &out.results[0];
        let html = String::from_utf8_lossy(r.get("text/html").unwrap()).into_owned();
        assert!(!html.contains("tok-3141592653"), "{html}");
        assert!(html.contains(dockexec::REDACTED), "{html}");
        assert!(
            !String::from_utf8_lossy(r.get("text/plain").unwrap()).contains("3141592653"),
            "{r:?}"
        );
        // Binary types are bytes, not text: left as the block made them.
        assert!(r.get("image/png").unwrap().ends_with(b"tok-3141592653"));
        ex.stop().unwrap();
    });
}

/// With the exec strategy (and the agent's fresh `python3`), a block is `python3 FILE`:
/// `display` is not defined, and figures are never sent (matplotlib's default backend, Agg,
/// shows nothing: `plt.show()` is a no-op).
#[test]
fn a_python3_file_block_has_no_display_and_sends_no_figure() {
    common::watchdog(LIMIT, || {
        for (case, strategy, zygote) in [
            ("rich-exec", Strategy::Exec, true),
            ("rich-fresh", Strategy::Agent, false),
        ] {
            let (mut b, _guard) = common::case_builder(case);
            b.image(common::mpl_image())
                .strategy(strategy)
                .python_zygote(zygote);
            let ex = b.start().unwrap();
            let out = ex
                .run(&CodeBlock::python(
                    "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n\
                     print(plt.get_backend())\ndisplay(1)",
                ))
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{case}: {out:?}");
            assert_eq!(out.stdout_lossy(), "agg\n", "{case}");
            assert!(
                out.stderr_lossy()
                    .contains("NameError: name 'display' is not defined"),
                "{case}: {}",
                out.stderr_lossy()
            );
            assert!(out.results.is_empty(), "{case}: {out:?}");
            ex.stop().unwrap();
        }
    });
}

/// A zygote block's forked child that detaches (its own session, stdin, stdout and stderr
/// closed) keeps the results socket it inherited; the block still ends when its own process
/// does, as it did before results existed. (Failed before the fix: the block timed out,
/// its EXIT waiting for the socket's EOF.)
#[test]
fn a_detached_child_holding_the_results_socket_does_not_hold_the_block() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = agent("rich-daemon");
        b.timeout(Some(Duration::from_secs(20)));
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::python(
                "import os, time\nif os.fork() == 0:\n    os.setsid()\n    for fd in (0, 1, 2):\n        \
                 os.close(fd)\n    time.sleep(60)\n    os._exit(0)\ndisplay('parent')\nprint('done')",
            ))
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.stdout_lossy(), "done\n");
        assert_eq!(out.results.len(), 1, "{out:?}");
        ex.stop().unwrap();
    });
}

/// Threads that display() at once each send whole records (one at a time on the socket).
#[test]
fn display_from_many_threads_sends_every_result_whole() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = agent("rich-threads");
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::python(
                "import threading\ndef w(i):\n    for j in range(50):\n        \
                 display({'text/plain': '%d-%d' % (i, j) + 'x' * 70000}, raw=True)\n\
                 ts = [threading.Thread(target=w, args=(i,)) for i in range(4)]\n\
                 [t.start() for t in ts]\n[t.join() for t in ts]",
            ))
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.results.len(), 200, "{}", out.stderr_lossy());
        for i in 0..4 {
            let mine: Vec<String> = out
                .results
                .iter()
                .map(|r| r.text().unwrap().into_owned())
                .filter(|t| t.starts_with(&format!("{i}-")))
                .map(|t| t.split('x').next().unwrap().to_string())
                .collect();
            let want: Vec<String> = (0..50).map(|j| format!("{i}-{j}")).collect();
            assert_eq!(mine, want, "thread {i}'s results in its order");
        }
        ex.stop().unwrap();
    });
}

/// A result that comes while the redactor holds back the start of a possible secret (`tok`,
/// the first bytes of the secret) stands after those bytes, as in the block's own output.
/// (Before: `stdout_at` was 2, the bytes shown so far, not 5.)
#[test]
fn a_result_after_a_held_back_secret_prefix_stands_where_the_block_put_it() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = agent("rich-secret-at");
        b.secret_env("RICH_TOKEN", "tok-3141592653");
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::python(
                "import sys\nsys.stdout.write('a-tok')\nsys.stdout.flush()\ndisplay(1)\nprint('en')\n",
            ))
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.stdout_lossy(), "a-token\n");
        assert_eq!(out.results[0].text().as_deref(), Some("1"));
        assert_eq!(out.results[0].stdout_at, 5, "{out:?}");
        // Where the held bytes were the secret after all, the result stands no further than
        // the redacted output's end.
        let out = ex
            .run(&CodeBlock::python(
                "import os, sys\nsys.stdout.write(os.environ['RICH_TOKEN'][:6])\nsys.stdout.flush()\ndisplay(2)\nsys.stdout.write(os.environ['RICH_TOKEN'][6:])\n",
            ))
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.stdout_lossy(), dockexec::REDACTED);
        assert!(out.results[0].stdout_at <= out.stdout.len(), "{out:?}");
        ex.stop().unwrap();
    });
}

/// A text item cut at its cap (16 MiB) right inside a secret keeps none of the secret's first
/// part: the cut goes back to before it, as the whole secret would have been redacted. (Failed
/// before the fix: the item ended with "tok-314".)
#[test]
fn a_secret_cut_in_half_at_a_text_cap_leaves_nothing_of_it() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = agent("rich-secret-cap");
        b.secret_env("RICH_TOKEN", "tok-3141592653");
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::python(
                r#"import os
t = os.environ["RICH_TOKEN"]
display({"text/plain": "x" * ((16 << 20) - 7) + t + "y"}, raw=True)
display({"text/html": "<p>" + t + "</p>"}, raw=True)
"#,
            ))
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.results.len(), 2, "{out:?}");
        let cut = &out.results[0].data[0];
        assert!(cut.truncated, "{cut:?}");
        assert_eq!(cut.size, (16 << 20) + 8);
        let tail = String::from_utf8_lossy(&cut.data[cut.data.len().saturating_sub(20)..]);
        assert!(
            !tail.contains("tok-") && tail.ends_with('x'),
            "the secret's first part is left: {tail:?}"
        );
        assert_eq!(
            cut.data.len(),
            (16 << 20) - 7,
            "cut back to the secret's start"
        );
        let html = out.results[1].get("text/html").unwrap();
        assert_eq!(html, b"<p>[REDACTED]</p>");
        ex.stop().unwrap();
    });
}

/// A stand-in for IPython with the API `display()` calls, as IPython has it:
/// `IPython.core.formatters.DisplayFormatter()` (a traitlets `Configurable`: no argument
/// needed) and its `format(obj, include=None, exclude=None)`, which returns `(format_dict,
/// metadata_dict)`. The test images have no IPython, and tests reach no network. An object
/// with `boom` makes `format` raise, as a formatter that breaks would.
const IPYTHON_STUB: &str = r#"
class DisplayFormatter(object):
    def __init__(self, **kwargs):
        pass

    def format(self, obj, include=None, exclude=None):
        if getattr(obj, "boom", False):
            raise RuntimeError("the formatter broke")
        data = {"text/plain": "stub:" + repr(obj)}
        html = getattr(obj, "_repr_html_", None)
        if html is not None:
            data["text/html"] = "<stub>" + html() + "</stub>"
        return data, {"text/plain": {"via": "stub"}}
"#;

/// Writes the stub IPython package under `dir` in the container, with a block.
fn put_ipython_stub(ex: &dockexec::Executor, dir: &str) {
    let code = format!(
        "import os\nd = {dir:?} + '/IPython/core'\nos.makedirs(d)\n\
         open(d + '/../__init__.py', 'w').close()\nopen(d + '/__init__.py', 'w').close()\n\
         open(d + '/formatters.py', 'w').write({IPYTHON_STUB:?})\n"
    );
    common::assert_success(&ex.run(&CodeBlock::python(code)).unwrap());
}

const HTML_CLASSES: &str = "class H:\n    boom = False\n    def _repr_html_(self):\n        \
                            return '<b>b</b>'\n    def __repr__(self):\n        return 'H()'\n\
                            class Boom(H):\n    boom = True\n";

/// display() builds the bundle through IPython's formatter when the block's python would
/// import IPython: from /workspace (a zygote block's sys.path[0], a session's ''), from a
/// directory the block put on sys.path, or from a finder on sys.meta_path (as an editable
/// install has). A formatter that raises falls back to the `_repr_*_` methods; the block goes
/// on. (The meta_path case failed before the fix: the bundle was the `_repr_*_` one, `H()`.)
#[test]
fn display_goes_through_ipythons_formatter_where_the_block_would_import_it() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = agent("rich-ipython");
        let ex = b.start().unwrap();
        let stubbed = |r: &RichResult, what: &str| {
            assert_eq!(r.text().as_deref(), Some("stub:H()"), "{what}: {r:?}");
            assert_eq!(
                r.get("text/html"),
                Some(&b"<stub><b>b</b></stub>"[..]),
                "{what}"
            );
        };
        let fallback = |r: &RichResult, what: &str| {
            assert_eq!(r.text().as_deref(), Some("H()"), "{what}: {r:?}");
            assert_eq!(r.get("text/html"), Some(&b"<b>b</b>"[..]), "{what}");
        };
        // No IPython anywhere: the _repr_*_ methods.
        let out = ex
            .run(&CodeBlock::python(format!("{HTML_CLASSES}display(H())")))
            .unwrap();
        common::assert_success(&out);
        fallback(&out.results[0], "no IPython");

        // A directory the block puts on sys.path.
        put_ipython_stub(&ex, "/workspace/lib");
        let out = ex
            .run(&CodeBlock::python(format!(
                "import sys\nsys.path.insert(0, '/workspace/lib')\n{HTML_CLASSES}\
                 display(H())\nprint('imported' if 'IPython' in sys.modules else 'not imported')"
            )))
            .unwrap();
        common::assert_success(&out);
        stubbed(&out.results[0], "sys.path");
        assert_eq!(out.stdout_lossy(), "imported\n");

        // A finder on sys.meta_path that serves IPython from elsewhere (no sys.path entry).
        let out = ex
            .run(&CodeBlock::python(format!(
                "import sys, importlib.machinery\n\
                 class Editable:\n    def find_spec(self, name, path=None, target=None):\n        \
                 if name.split('.')[0] != 'IPython':\n            return None\n        \
                 return importlib.machinery.PathFinder.find_spec(name, path or ['/workspace/lib'])\n\
                 sys.meta_path.append(Editable())\n{HTML_CLASSES}display(H())"
            )))
            .unwrap();
        common::assert_success(&out);
        stubbed(&out.results[0], "sys.meta_path");

        // /workspace: on a zygote block's sys.path (its file's directory) and a session's ('').
        put_ipython_stub(&ex, "/workspace");
        let out = ex
            .run(&CodeBlock::python(format!(
                "{HTML_CLASSES}display(H())\ndisplay(Boom())\nprint('on')"
            )))
            .unwrap();
        common::assert_success(&out);
        stubbed(&out.results[0], "zygote block");
        fallback(&out.results[1], "a formatter that raises");
        assert_eq!(out.stdout_lossy(), "on\n");
        assert_eq!(out.stderr_lossy(), "");
        let s = ex.session().unwrap();
        let out = s
            .run(&format!("{HTML_CLASSES}display(H())\ndisplay(Boom())\nH()"))
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.results.len(), 3, "{out:?}");
        stubbed(&out.results[0], "session display");
        fallback(&out.results[1], "session, a formatter that raises");
        stubbed(&out.results[2], "session value");
        drop(s);
        ex.stop().unwrap();
    });
}

/// A session's background thread that display()s between blocks: the result is no block's and
/// is dropped (display() returns once the agent has read it); one it sends while a later block
/// runs is that block's, as that block's own display() would be. (Documented on RichResult.)
#[test]
fn results_a_sessions_thread_sends_between_blocks_are_dropped() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = agent("rich-between");
        let ex = b.start().unwrap();
        let s = ex.session().unwrap();
        let out = s
            .run(
                "import os, threading, time\n\
                 def wait_for(f):\n    while not os.path.exists(f):\n        time.sleep(0.01)\n\
                 def bg():\n    wait_for('/workspace/go')\n    display('between blocks')\n    \
                 open('/workspace/between-sent', 'w').close()\n    \
                 wait_for('/workspace/go2')\n    display('during block 3')\n    \
                 open('/workspace/during-sent', 'w').close()\n\
                 threading.Thread(target=bg, daemon=True).start()\ndisplay('block 1')",
            )
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.results.len(), 1, "{out:?}");
        assert_eq!(out.results[0].text().as_deref(), Some("'block 1'"));
        // No block runs now: the thread sends, and says when display() has returned.
        ex.put_file("/workspace/go", b"").unwrap();
        while ex.get_file("/workspace/between-sent").is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = s.run("x = 2").unwrap();
        common::assert_success(&out);
        assert!(out.results.is_empty(), "block 2 got {:?}", out.results);
        let out = s
            .run("open('/workspace/go2', 'w').close()\nwait_for('/workspace/during-sent')")
            .unwrap();
        common::assert_success(&out);
        let texts: Vec<String> = out
            .results
            .iter()
            .map(|r| r.text().unwrap().into_owned())
            .collect();
        assert_eq!(texts, ["'during block 3'"], "{out:?}");
        drop(s);
        ex.stop().unwrap();
    });
}
