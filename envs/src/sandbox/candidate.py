

# grail candidate runner (appended to codec.py): the UNTRUSTED side. Loads solution.py and
# serves calls from the trusted test harness over fd 3 (requests in) and fd 4 (replies out).
# It holds no test, no expected value and no result channel: whatever the completion does to
# this interpreter, it can only change what it answers, never how the answers are judged.
import collections
import os
import signal
import sys
import types

DICT_TYPES = (collections.Counter, collections.OrderedDict, collections.defaultdict)

_CALLS_FD = 3
_REPLIES_FD = 4


class _CallTimeout(BaseException):
    pass


def _block_network():
    class _Blocked(types.ModuleType):
        def __getattr__(self, name):
            raise PermissionError("network access is disabled in the sandbox")

    for name in ("socket", "_socket", "ssl", "_ssl"):
        sys.modules[name] = _Blocked(name)


def _serve():
    read = os.read
    write = os.write
    setitimer = signal.setitimer

    def read_exact(size):
        chunks = []
        while size:
            chunk = read(_CALLS_FD, min(size, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    objects = {}

    def lookup(handle):
        if handle not in objects:
            raise CodecError("unknown candidate object")
        return objects[handle]

    def remember(value):
        handle = len(objects) + 1
        objects[handle] = value
        return handle

    def receive():
        size = _U32.unpack(read_exact(4))[0]
        if size > MAX_FRAME:
            raise EOFError
        return decode(read_exact(size), lookup)

    def send(message, remote_of=None):
        try:
            payload = frame(encode(message, remote_of))
        except CodecError as error:
            payload = frame(encode(("unencodable", message[1], str(error)[:200])))
        except (RecursionError, MemoryError):
            payload = frame(encode(("unencodable", message[1], "too deep or too large")))
        view = memoryview(payload)
        while view:
            written = write(_REPLIES_FD, view)
            view = view[written:]

    def on_alarm(signum, frame_):
        raise _CallTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    _block_network()

    # Load right away (in parallel with the harness reading its tests); the outcome is the
    # answer to the harness's first request, ("resolve", names).
    budget = float(_LOAD_BUDGET_S)
    with open("solution.py", encoding="utf-8", errors="replace") as handle:
        solution = handle.read()
    namespace = {"__name__": "__solution__", "__builtins__": __builtins__}
    failure = None
    try:
        compiled = compile(solution, "solution.py", "exec")
    except BaseException as error:  # SyntaxError, ValueError (null bytes), MemoryError
        failure = ("load_failed", "syntax_error", repr(error)[:200])
    if failure is None:
        try:
            setitimer(signal.ITIMER_REAL, budget)
            exec(compiled, namespace)
            setitimer(signal.ITIMER_REAL, 0)
        except _CallTimeout:
            failure = ("load_failed", "timeout", "")
        except BaseException as error:
            setitimer(signal.ITIMER_REAL, 0)
            try:
                failure = ("load_failed", "error", repr(error)[:200])
            except BaseException:
                failure = ("load_failed", "error", "?")
    try:
        request = receive()  # ("resolve", names)
    except (EOFError, OSError):
        return
    if failure is not None:
        send(failure)
        return
    names = request[1]
    kinds = {}
    for name in names:
        value = namespace.get(name)
        if isinstance(value, type):
            kinds[name] = "class"
        elif callable(value):
            kinds[name] = "function"
    send(("loaded", kinds))

    while True:
        try:
            request = receive()
        except (EOFError, OSError):
            return
        op, call_id, budget = request[0], request[1], float(request[-1])
        remote_of = None
        try:
            setitimer(signal.ITIMER_REAL, max(budget, 0.001))
            if op == "call":
                target = namespace[request[2]]
                if isinstance(target, type):
                    remote_of = remember
                result = target(*request[3], **request[4])
            elif op == "getattr":  # ("getattr", id, object, name, budget)
                remote_of = remember
                result = getattr(request[2], request[3])
            else:  # ("setattr", id, object, name, value, budget)
                setattr(request[2], request[3], request[4])
                result = None
            setitimer(signal.ITIMER_REAL, 0)
            reply = ("ok", call_id, result)
        except _CallTimeout:
            reply = ("timeout", call_id)
        except BaseException as error:
            setitimer(signal.ITIMER_REAL, 0)
            try:
                reply = ("raised", call_id, type(error).__name__, str(error)[:200])
            except BaseException:
                reply = ("raised", call_id, "?", "")
        try:
            send(reply, remote_of)
        except _CallTimeout:
            send(("timeout", call_id))


_serve()
