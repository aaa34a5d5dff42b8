# ==== src/runner/agent/rich.py (agent.rs joins these files into one script, in
# order.txt's order)
# Rich results (issue 19): display(), matplotlib figures and a session block's last expression,
# sent by the block process through a pipe of their own (the results pipe), never through stdout;
# and the agent's side of that pipe: records read with caps, then RESULT frames to the host.
#
# The results pipe: one per block (and per session process), created by the agent. Its write end
# is kept, non-inheritable, only by a Python block that runs in this forked interpreter (a zygote
# block, a session): `python3 FILE` blocks (the agent's fresh interpreter, and every other
# language) lose it at exec and send nothing. A record (block -> agent):
#
#   hlen: u32 big-endian, header: hlen bytes of JSON {"kind": K, "items": [[mime, len], ...]},
#   then each item's len bytes, in order.
#
# K is "display", "figure" or "result" (a session block's last expression). The agent trusts
# nothing in it: a record is the block's own (the pipe is its own), sizes are capped as the bytes
# stream through (RES_ITEM_CAP per item, RES_TOTAL_CAP per block; a text item is cut at the cap,
# any other is dropped; either way marked), and a malformed record ends the block's results
# (one line on its stderr says so). RESULT's payload (agent -> host): u32 hlen, a JSON header
# {"kind": K, "items": [{"mime", "len" (bytes kept), "size" (bytes the block sent),
# "truncated"}]}, then the kept bytes of each item, in order. Before a record is framed, the
# block's stdout and stderr pipes are drained: the block flushed them before it wrote the record,
# so a print before display() comes before its result.

RES_ITEM_CAP = 16 * 1024 * 1024
RES_TOTAL_CAP = 32 * 1024 * 1024
RES_MAX_ITEMS = 32
RES_MAX_HEADER = 65536
_RES_TEXT = ("text/", "application/json", "application/javascript", "image/svg+xml")
_RES_BACKEND = "_dockexec_backend"

# In a block or session process: the results pipe's write end (None elsewhere).
_RES_W = None
# One record at a time on it, whatever thread display()s (never taken in the agent).
_RES_LOCK = sys.modules["_thread"].allocate_lock()

try:
    import _socket
except ImportError:  # a python3 without sockets: a plain pipe, no acknowledgements
    _socket = None


def _res_pipe():
    """(agent's end, block's end) of a results pipe: a socketpair, so that the agent can
    acknowledge each record (the block waits for that: what it prints after display() then
    comes after the result), both ends close-on-exec."""
    if _socket is None:
        return os.pipe()
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    return a.detach(), b.detach()


def _res_is_text(mime):
    return mime.startswith(_RES_TEXT) or mime.endswith(("+json", "+xml"))


class _ResReader(object):
    """The agent's reader of one results pipe: parses records as bytes arrive, capped."""
    __slots__ = ("buf", "head", "items", "i", "left", "total", "broken", "said")

    def __init__(self):
        self.buf = bytearray()
        self.head = None  # the record being read: (kind, [[mime, size, kept bytearray]])
        self.i = self.left = 0
        self.items = None
        self.total = 0
        self.broken = self.said = False

    def feed(self, data, emit):
        """Consumes `data`; calls emit(payload) per finished record. False once malformed."""
        if self.broken:
            return False
        self.buf += data
        while True:
            if self.head is None:
                if len(self.buf) < 4:
                    return True
                n = _U32.unpack_from(self.buf, 0)[0]
                if n > RES_MAX_HEADER:
                    return self.fail()
                if len(self.buf) < 4 + n:
                    return True
                try:
                    h = _jloads(bytes(self.buf[4:4 + n]))
                    kind, items = h["kind"], h["items"]
                    if kind not in ("display", "figure", "result") or not isinstance(items, list) \
                            or len(items) > RES_MAX_ITEMS:
                        raise ValueError
                    its = []
                    for m, size in items:
                        if not isinstance(m, str) or not 0 < len(m) <= 255 or \
                                not isinstance(size, int) or isinstance(size, bool) or size < 0:
                            raise ValueError
                        its.append([m, size, bytearray()])
                except (ValueError, KeyError, TypeError):
                    return self.fail()
                del self.buf[:4 + n]
                self.head, self.items, self.i = kind, its, 0
                self.left = its[0][1] if its else 0
            while self.i < len(self.items):
                it = self.items[self.i]
                take = min(self.left, len(self.buf))
                room = max(0, min(RES_ITEM_CAP - len(it[2]), RES_TOTAL_CAP - self.total))
                keep = min(take, room)
                if keep:
                    it[2] += self.buf[:keep]
                    self.total += keep
                del self.buf[:take]
                self.left -= take
                if self.left:
                    return True
                self.i += 1
                if self.i < len(self.items):
                    self.left = self.items[self.i][1]
            emit(self.payload())
            self.head = self.items = None

    def payload(self):
        hdr, body = [], []
        for m, size, data in self.items:
            cut = len(data) < size
            if cut and not _res_is_text(m):  # half an image is no image
                self.total -= len(data)
                data = b""
            hdr.append({"mime": m, "len": len(data), "size": size, "truncated": cut})
            body.append(bytes(data))
        h = _jdumps({"kind": self.head, "items": hdr})
        return _U32.pack(len(h)) + h + b"".join(body)

    def fail(self):
        self.broken = True
        self.buf = bytearray()
        self.head = self.items = None
        return False


_RES_BROKEN = b"dockexec: a malformed rich-result record on the results pipe: this block's later results are dropped\n"


# ------------------------------------------------------------------ in the block process

def _res_bytes(mime, v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if not isinstance(v, str):
        if mime == "application/json" or mime.endswith("+json"):
            import json
            return json.dumps(v).encode("utf-8")
        v = str(v)
    if mime.startswith(("image/png", "image/jpeg", "image/gif", "image/webp")):
        import binascii
        try:  # a MIME bundle's binary values are base64 text (Jupyter's convention)
            return binascii.a2b_base64(v.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            pass
    return v.encode("utf-8", "surrogateescape")


def _res_send(kind, items):
    """Writes one record to the results pipe, after flushing stdout and stderr (so that what the
    block printed before comes first). A block without the pipe sends nothing."""
    fd = _RES_W
    if fd is None or not items:
        return
    _flush_stdio()
    h = _jdumps({"kind": kind, "items": [[m, len(d)] for m, d in items]})
    with _RES_LOCK:
        try:
            _write_all(fd, _U32.pack(len(h)) + h)
            for _, d in items:
                _write_all(fd, d)
            if _socket is not None:
                os.read(fd, 1)  # the agent's acknowledgement (or EOF: it refused the record)
        except OSError:  # the block closed the pipe: results are its own to lose
            pass


_REPR_METHODS = (("_repr_png_", "image/png"), ("_repr_jpeg_", "image/jpeg"),
                 ("_repr_svg_", "image/svg+xml"), ("_repr_html_", "text/html"),
                 ("_repr_markdown_", "text/markdown"), ("_repr_latex_", "text/latex"),
                 ("_repr_json_", "application/json"))


def _importable(name):
    """Whether `import name` (top level) would find a module, asked as the import system asks:
    each finder on sys.meta_path in turn (the path finder searches sys.path as the block left
    it; an editable install adds a finder of its own). Nothing is imported to look."""
    for f in sys.meta_path:
        if isinstance(f, _RichFinder):
            continue
        find = getattr(f, "find_spec", None)
        if find is None:
            continue
        try:
            if find(name, None) is not None:
                return True
        except Exception:  # a finder that breaks: as if it had not found it
            continue
    return False


def _ipython_bundle(obj):
    """IPython's formatter's bundle when IPython is importable where the block's python would
    import it from, else None; None too when the formatter raises or gives nothing (then the
    _repr_*_ methods make it). IPython's API: DisplayFormatter().format(obj, include=None,
    exclude=None) -> (format_dict, metadata_dict)."""
    if "IPython" not in sys.modules and not _importable("IPython"):
        return None
    try:
        from IPython.core.formatters import DisplayFormatter
        r = DisplayFormatter().format(obj)
        data = r[0] if isinstance(r, tuple) else r  # IPython before 1.0 gave the dict alone
        return data if isinstance(data, dict) and data else None
    except Exception:
        return None


def _bundle(obj):
    """obj's MIME bundle: [(mime, bytes)], text/plain always among them."""
    data = _ipython_bundle(obj)
    if data is None:
        data = {}
        f = getattr(obj, "_repr_mimebundle_", None)
        if callable(f) and not isinstance(obj, type):
            try:
                r = f(include=None, exclude=None)
                if isinstance(r, tuple):
                    r = r[0]
                if isinstance(r, dict):
                    data.update(r)
            except Exception:
                pass
        for meth, mime in _REPR_METHODS:
            if mime in data or isinstance(obj, type):
                continue
            f = getattr(obj, meth, None)
            if not callable(f):
                continue
            try:
                r = f()
            except Exception:
                continue
            if isinstance(r, tuple):
                r = r[0]
            if r is not None:
                data[mime] = r
    if "text/plain" not in data:
        try:
            data["text/plain"] = repr(obj)
        except Exception as e:
            data["text/plain"] = "<repr failed: %r>" % (e,)
    items = []
    for mime, v in data.items():
        if isinstance(mime, str) and v is not None:
            try:
                items.append((mime, _res_bytes(mime, v)))
            except Exception:
                pass
    return items


def _display(*objs, **kwargs):
    """display(obj, ...): sends each object's MIME bundle back as a rich result (dockexec)."""
    raw = kwargs.get("raw", False)
    for obj in objs:
        if raw and isinstance(obj, dict):
            items = [(m, _res_bytes(m, v)) for m, v in obj.items() if isinstance(m, str)]
        else:
            items = _bundle(obj)
        _res_send("display", items)


def _figure_formats():
    f = os.environ.get("DOCKEXEC_FIGURE_FORMAT", "png").lower()
    return [x for x in ("png", "svg") if x in f] or ["png"]


def _flush_figures():
    """Sends every open matplotlib figure (PNG; SVG too or instead with DOCKEXEC_FIGURE_FORMAT),
    then closes them all. Nothing unless matplotlib.pyplot was imported."""
    if "matplotlib.pyplot" not in sys.modules:
        return
    try:
        import io
        from matplotlib._pylab_helpers import Gcf
        managers = Gcf.get_all_fig_managers()
    except Exception:
        return
    mimes = {"png": "image/png", "svg": "image/svg+xml"}
    try:
        for m in managers:
            fig = m.canvas.figure
            items = []
            for fmt in _figure_formats():
                buf = io.BytesIO()
                fig.savefig(buf, format=fmt, bbox_inches="tight")
                items.append((mimes[fmt], buf.getvalue()))
            items.append(("text/plain", repr(fig).encode("utf-8", "replace")))
            _res_send("figure", items)
    finally:
        try:
            Gcf.destroy_all()
        except Exception:
            pass


def _show(*args, **kwargs):
    _flush_figures()


_BACKEND_SRC = """
from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas
from matplotlib.backend_bases import FigureManagerBase as FigureManager
"""


class _RichFinder(object):
    """On sys.meta_path in a block or session process: serves dockexec's matplotlib backend
    module (module://_dockexec_backend: Agg, whose show() sends the figures), and, once
    matplotlib itself is imported, makes that backend the default unless MPLBACKEND chose one.
    No environment variable is set, so a python3 the block starts sees matplotlib's default
    (why not MPLBACKEND: the README's "How it is hooked in", the one place that says it)."""

    def find_spec(self, name, path=None, target=None):
        if name == _RES_BACKEND:
            import importlib.machinery
            return importlib.machinery.ModuleSpec(name, self)
        if name != "matplotlib" or "MPLBACKEND" in os.environ:
            return None
        for f in sys.meta_path:
            if f is self or not hasattr(f, "find_spec"):
                continue
            spec = f.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _MplLoader(spec.loader)
                return spec
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(_BACKEND_SRC, module.__dict__)
        module.show = _show


class _MplLoader(object):
    """matplotlib's own loader, then the default backend set to dockexec's."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        backend = "module://" + _RES_BACKEND
        for params in ("rcParams", "rcParamsOrig"):
            try:
                getattr(module, params)["backend"] = backend
            except Exception:
                pass


def _rich_setup():
    """In a zygote block or session process, before user code: display() in builtins and the
    matplotlib hook. Nothing without the results pipe."""
    if _RES_W is None:
        return
    _BUILTINS.display = _display
    sys.meta_path.insert(0, _RichFinder())


def _rich_after():
    """After a zygote or session block's code: figures never shown go out too."""
    if _RES_W is None:
        return
    try:
        _flush_figures()
    except BaseException:
        pass


def _last_expr(src, path):
    """(code of all but the last statement, code of the last expression or None), as a notebook
    cell runs; compile errors propagate."""
    import _ast  # built in; compile() itself parses, so a SyntaxError shows no parser frame
    tree = compile(src, path, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, _ast.Expr):
        return compile(tree, path, "exec", dont_inherit=True), None
    tree.body.pop()
    expr = _ast.Expression(last.value)
    return compile(tree, path, "exec", dont_inherit=True), compile(expr, path, "eval", dont_inherit=True)


def _send_value(value):
    if value is None or _RES_W is None:
        return
    try:
        _res_send("result", _bundle(value))
    except BaseException:
        pass
