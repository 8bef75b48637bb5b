# grail sandbox harness: runs solution.py, then each test separately, reporting to fd 3.
# Not a security boundary (see the Rust sandbox docs); it only makes results per test and
# keeps naive forgery (printing, exiting early) from counting.
import ast
import json
import os
import signal
import sys
import types


class _TestTimeout(BaseException):
    pass


def _block_network():
    class _Blocked(types.ModuleType):
        def __getattr__(self, name):
            raise PermissionError("network access is disabled in the sandbox")

    for name in ("socket", "_socket", "ssl", "_ssl"):
        sys.modules[name] = _Blocked(name)


def _main():
    nonce = sys.stdin.readline().strip()

    def report(message):
        try:
            os.write(3, (nonce + " " + message + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    with open("spec.json", encoding="utf-8") as handle:
        spec = json.load(handle)
    with open("solution.py", encoding="utf-8", errors="replace") as handle:
        solution = handle.read()
    per_test = float(spec.get("test_timeout_s", 3.0))

    tests = []  # (kind, source): kind "test" is counted, "setup" just runs
    for source in spec.get("asserts", []):
        tests.append(("test", source))
    check_source = spec.get("check_source")
    if check_source:
        try:
            module = ast.parse(check_source)
        except SyntaxError as error:
            report("harness_error check source: " + repr(error)[:200])
            return
        check = next(
            (node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "check"),
            None,
        )
        if check is None or not check.args.args:
            report("harness_error no check(candidate) function")
            return
        candidate_name = check.args.args[0].arg
        for statement in check.body:
            source = ast.unparse(statement)
            has_assert = any(isinstance(node, ast.Assert) for node in ast.walk(statement))
            trivial = isinstance(statement, ast.Assert) and isinstance(statement.test, ast.Constant)
            tests.append(("test" if has_assert and not trivial else "setup", source))
    report("total %d" % sum(1 for kind, _ in tests if kind == "test"))

    def on_alarm(signum, frame):
        raise _TestTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    _block_network()
    namespace = {"__name__": "__solution__", "__builtins__": __builtins__}
    try:
        compiled = compile(solution, "solution.py", "exec")
    except BaseException as error:  # SyntaxError, ValueError (null bytes), MemoryError
        report("syntax_error " + repr(error)[:200])
        return
    try:
        signal.setitimer(signal.ITIMER_REAL, per_test)
        exec(compiled, namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _TestTimeout:
        report("solution_error timeout while loading")
        return
    except BaseException as error:
        signal.setitimer(signal.ITIMER_REAL, 0)
        report("solution_error " + repr(error)[:200])
        return
    report("loaded")

    try:
        if spec.get("setup"):
            exec(compile(spec["setup"], "setup.py", "exec"), namespace)
        if check_source:
            exec(compile(check_source, "tests.py", "exec"), namespace)
            entry_point = spec.get("entry_point", "")
            if entry_point not in namespace:
                report("solution_error missing function %r" % entry_point)
                return
            namespace[candidate_name] = namespace[entry_point]
    except BaseException as error:
        report("setup_error " + repr(error)[:200])
        return

    index = 0
    for kind, source in tests:
        try:
            signal.setitimer(signal.ITIMER_REAL, per_test)
            exec(compile(source, "test_%d.py" % index, "exec"), namespace)
            signal.setitimer(signal.ITIMER_REAL, 0)
            outcome = "pass"
        except _TestTimeout:
            outcome = "timeout"
        except BaseException as error:
            signal.setitimer(signal.ITIMER_REAL, 0)
            outcome = "fail " + type(error).__name__
        if kind == "test":
            report("test %d %s" % (index, outcome))
            index += 1
    report("done")


_main()
