

# grail test harness (appended to codec.py): the TRUSTED side. Runs only dataset code (the
# tests, the setup, the HumanEval stub and check function) and reports per-test results on fd 3,
# which only the Rust parent reads. The completion runs in a separate sandboxed process; every
# name the tests need from it is a proxy that sends plain data over fd 4 and decodes the reply
# from fd 5 with the strict codec, so the tests only ever compare builtin values they built.
import ast
import builtins
import os
import select
import signal
import sys
import time
import types

_RESULTS_FD = 3
_CALLS_FD = 4
_REPLIES_FD = 5
# How long past a call's deadline the candidate may take to answer "timeout" itself before it
# counts as unresponsive (its own SIGALRM can be disabled by the completion).
_GRACE_S = 0.5
# Allowance for the candidate interpreter's start-up before it loads the solution.
_STARTUP_S = 2.0


class _TestTimeout(BaseException):
    pass


class _ChannelDead(BaseException):
    """The candidate process exited, stopped answering, or broke the protocol."""

    def __init__(self, kind):
        BaseException.__init__(self, kind)
        self.kind = kind


class _NotPlainData(Exception):
    pass


class _BadArgument(Exception):
    pass


class CandidateError(Exception):
    """The candidate raised; only the exception's type name (`kind`) and a message cross."""

    kind = "?"


_EXCEPTION_CLASSES = {}


def _candidate_exception(name, message):
    """The exception to raise in the tests for one the candidate raised: a subclass of the
    builtin exception of that name (so tests that expect e.g. ValueError still work) and of
    CandidateError, else plain CandidateError. Only the name and a message cross."""
    name = name[:80] if type(name) is str and name.isidentifier() else "?"
    base = getattr(builtins, name, None)
    error = None
    if isinstance(base, type) and issubclass(base, Exception):
        try:
            if name not in _EXCEPTION_CLASSES:
                _EXCEPTION_CLASSES[name] = type("Candidate" + name, (base, CandidateError), {})
            error = _EXCEPTION_CLASSES[name](message)
        except Exception:
            error = None
    if error is None:
        error = CandidateError(message)
    error.kind = name
    return error


def _make_undumpable():
    # Without Landlock, a same-uid process could otherwise open /proc/<pid>/fd or mem of this
    # one (the candidate also runs without capabilities; see the Rust sandbox docs).
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except Exception:
        pass


class _Channel(object):
    def __init__(self):
        self.dead = None
        self.next_id = 0
        self.buffer = b""
        self.deadline = 0.0
        self.poll_in = select.poll()
        self.poll_in.register(_REPLIES_FD, select.POLLIN)
        self.poll_out = select.poll()
        self.poll_out.register(_CALLS_FD, select.POLLOUT)
        os.set_blocking(_CALLS_FD, False)
        os.set_blocking(_REPLIES_FD, False)

    def _fail(self, kind):
        if self.dead is None:
            self.dead = kind
        raise _ChannelDead(self.dead)

    def _wait(self, poller, limit):
        remaining = limit - time.monotonic()
        if remaining <= 0:
            self._fail("candidate_unresponsive")
        poller.poll(max(1, int(remaining * 1000)))

    def _send(self, payload, limit):
        view = memoryview(payload)
        while view:
            try:
                written = os.write(_CALLS_FD, view)
            except BlockingIOError:
                self._wait(self.poll_out, limit)
                continue
            except OSError:
                self._fail("candidate_exited")
            view = view[written:]

    def _read_exact(self, size, limit):
        while len(self.buffer) < size:
            try:
                chunk = os.read(_REPLIES_FD, 1 << 20)
            except BlockingIOError:
                self._wait(self.poll_in, limit)
                continue
            except OSError:
                self._fail("candidate_exited")
            if not chunk:
                self._fail("candidate_exited")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def receive(self, limit, allow_remote):
        size = _U32.unpack(self._read_exact(4, limit))[0]
        if size > MAX_FRAME:
            self._fail("channel_corrupt")
        data = self._read_exact(size, limit)
        try:
            return decode(data, (lambda handle: Remote(handle, self)) if allow_remote else None)
        except (CodecError, RecursionError, MemoryError, ValueError, struct.error):
            self._fail("channel_corrupt")

    def request(self, message, budget_limit, allow_remote):
        """Sends `message` (a tuple whose last item is the time budget), returns the reply."""
        if self.dead is not None:
            raise _ChannelDead(self.dead)
        try:
            payload = frame(encode(message))
        except (CodecError, RecursionError) as error:
            raise _BadArgument(str(error)) from None
        limit = budget_limit + _GRACE_S
        # SIGALRM (the test's own timer) waits until the reply is read, so a timer never leaves
        # a reply half-read; the call itself is bounded by `limit`.
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        try:
            self._send(payload, limit)
            return self.receive(limit, allow_remote)
        except _ChannelDead:
            # The channel's fault names the cause; drop the test timer (and a pending alarm).
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.sigtimedwait([signal.SIGALRM], 0)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGALRM])

    def _budget(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _TestTimeout()
        return remaining

    def call(self, name, args, kwargs, allow_remote):
        call_id = self.next_id
        self.next_id += 1
        budget = self._budget()
        reply = self.request(
            ("call", call_id, name, tuple(args), dict(kwargs), budget),
            self.deadline,
            allow_remote,
        )
        return self._result(reply, call_id)

    def get_attribute(self, remote, name):
        call_id = self.next_id
        self.next_id += 1
        budget = self._budget()
        reply = self.request(("getattr", call_id, remote, name, budget), self.deadline, True)
        return self._result(reply, call_id)

    def set_attribute(self, remote, name, value):
        call_id = self.next_id
        self.next_id += 1
        budget = self._budget()
        reply = self.request(("setattr", call_id, remote, name, value, budget), self.deadline, False)
        self._result(reply, call_id)

    def _result(self, reply, call_id):
        if type(reply) is not tuple or len(reply) < 2 or reply[1] != call_id:
            self._fail("channel_corrupt")
        kind = reply[0]
        if kind == "ok" and len(reply) == 3:
            return reply[2]
        if kind == "timeout" and len(reply) == 2:
            raise _TestTimeout()
        if kind == "unencodable" and len(reply) == 3:
            raise _NotPlainData(str(reply[2])[:200])
        if kind == "raised" and len(reply) == 4:
            raise _candidate_exception(reply[2], str(reply[3])[:200])
        self._fail("channel_corrupt")


def _names(source, loaded, bound):
    """Adds the names `source` reads to `loaded` and every name it binds to `bound`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)


def _main():
    data = sys.stdin.buffer.read()
    nonce, _, spec_bytes = data.partition(b"\n")
    nonce = nonce.decode("ascii", "replace").strip()
    spec = decode(spec_bytes)  # from the parent, in the same plain-data format
    if not spec.get("landlock"):
        _make_undumpable()

    def report(message):
        # One line per message, whatever a candidate-supplied detail contains.
        message = message.replace("\r", " ").replace("\n", " ")
        try:
            os.write(_RESULTS_FD, (nonce + " " + message + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    per_test = float(spec.get("test_timeout_s", 3.0))
    setup = spec.get("setup") or ""
    prompt = spec.get("prompt") or ""
    check_source = spec.get("check_source") or ""
    entry_point = spec.get("entry_point") or ""

    tests = []  # (kind, source): kind "test" is counted, "setup" just runs
    for source in spec.get("asserts", []):
        tests.append(("test", source))
    candidate_name = None
    if check_source:
        try:
            module = ast.parse(check_source)
        except SyntaxError as error:
            report("fatal harness_error check source: " + repr(error)[:200])
            return
        check = next(
            (node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "check"),
            None,
        )
        if check is None or not check.args.args or not entry_point:
            report("fatal harness_error no check(candidate) function or entry point")
            return
        candidate_name = check.args.args[0].arg
        for statement in check.body:
            source = ast.unparse(statement)
            has_assert = any(isinstance(node, ast.Assert) for node in ast.walk(statement))
            trivial = isinstance(statement, ast.Assert) and isinstance(statement.test, ast.Constant)
            tests.append(("test" if has_assert and not trivial else "setup", source))
    report("total %d" % sum(1 for kind, _ in tests if kind == "test"))

    # Which names come from the completion: those the tests read that no trusted source binds
    # and that are neither builtins nor standard-library modules, plus the entry point.
    loaded, bound = set(), set()
    try:
        for source in [setup, prompt, check_source] + [source for _, source in tests]:
            _names(source, loaded, bound)
    except SyntaxError as error:
        report("fatal harness_error test source: " + repr(error)[:200])
        return
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    modules = sorted(name for name in loaded - bound if name in stdlib and not hasattr(builtins, name))
    wanted = sorted(
        name
        for name in loaded - bound
        if not hasattr(builtins, name) and name not in stdlib and name != candidate_name
    )
    if entry_point:
        modules = [name for name in modules if name != entry_point]
        wanted = sorted(set(wanted) | {entry_point})

    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def on_alarm(signum, frame_):
        raise _TestTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    channel = _Channel()
    try:
        reply = channel.request(("resolve", wanted), time.monotonic() + per_test + _STARTUP_S, False)
    except _ChannelDead as dead:
        report("fatal " + dead.kind)
        return
    if type(reply) is tuple and len(reply) == 3 and reply[0] == "load_failed":
        kind = {"syntax_error": "syntax_error", "timeout": "load_timeout"}.get(reply[1], "load_error")
        report("fatal %s %s" % (kind, str(reply[2])[:200]))
        return
    if not (type(reply) is tuple and len(reply) == 2 and reply[0] == "loaded" and type(reply[1]) is dict):
        report("fatal channel_corrupt")
        return
    kinds = {name: kind for name, kind in reply[1].items() if name in wanted and kind in ("function", "class")}
    report("loaded")
    if entry_point and entry_point not in kinds:
        report("fatal missing_function %s" % entry_point)
        return

    def proxy(name, kind):
        def forward(*args, **kwargs):
            return channel.call(name, args, kwargs, kind == "class")

        forward.__name__ = forward.__qualname__ = name
        return forward

    _block_network()
    namespace = {"__name__": "__tests__", "__builtins__": builtins}
    for name in modules:
        try:
            namespace[name] = __import__(name)
        except Exception:
            pass
    proxies = {name: proxy(name, kind) for name, kind in kinds.items()}
    namespace.update(proxies)

    def run_timed(source, filename):
        channel.deadline = time.monotonic() + per_test
        signal.setitimer(signal.ITIMER_REAL, per_test)
        try:
            exec(compile(source, filename, "exec"), namespace)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    try:
        if prompt:
            exec(compile(prompt, "prompt.py", "exec"), namespace)
            namespace.update(proxies)  # the stub's own definition is replaced by the candidate
        if setup:
            run_timed(setup, "setup.py")
        if check_source:
            exec(compile(check_source, "tests.py", "exec"), namespace)
            namespace.update(proxies)
            namespace[candidate_name] = proxies[entry_point]
    except _ChannelDead as dead:
        report("fatal " + dead.kind)
        return
    except BaseException as error:
        report("fatal setup_error " + repr(error)[:200])
        return

    index = 0
    for kind, source in tests:
        try:
            run_timed(source, "test_%d.py" % index)
            outcome = "pass"
        except _TestTimeout:
            outcome = "timeout"
        except _ChannelDead as dead:
            outcome = dead.kind
        except _NotPlainData:
            outcome = "not_plain_data"
        except _BadArgument:
            outcome = "bad_argument"
        except CandidateError as error:
            outcome = "raised " + error.kind
        except BaseException as error:
            outcome = "fail " + type(error).__name__
        if kind == "test":
            report("test %d %s" % (index, outcome))
            index += 1
    report("done")


def _block_network():
    class _Blocked(types.ModuleType):
        def __getattr__(self, name):
            raise PermissionError("network access is disabled in the sandbox")

    for name in ("socket", "_socket", "ssl", "_ssl"):
        sys.modules[name] = _Blocked(name)


_main()
