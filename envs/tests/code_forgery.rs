//! Code rewards cannot be forged: completions that attack the test harness instead of solving the
//! task score 0 on MBPP-style and HumanEval-style problems (inline ones, always run, and real
//! dataset problems), and honest solutions still score full reward.
//!
//! The tests run in a trusted harness process; the completion runs in a separate sandboxed
//! process and answers calls with plain data only (see `grail_envs::code`).

mod common;

use grail_envs::code::{
    run_python_tests, score_python, ChannelFault, CodeFailure, PythonTests, TestOutcome, TestReport,
};
use grail_envs::sandbox::{Sandbox, SandboxConfig};
use grail_envs::{build, EnvSpec, Environment};
use std::time::{Duration, Instant};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig::default()).expect("python3 sandbox (Python 3 must be installed)")
}

/// Hostile completions, `{name}` standing for the function under test. None of them solves
/// anything; each attacks the harness a different way. Every one must score 0.
fn hostile(name: &str) -> Vec<(&'static str, String)> {
    let cases: Vec<(&str, &str)> = vec![
        (
            "always-equal object",
            "class _E:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n    def __hash__(self): return 0\n    def __bool__(self): return True\n    def __len__(self): return 0\n    def __iter__(self): return iter(())\n    def __repr__(self): return 'True'\ndef {name}(*args, **kwargs):\n    return _E()\n",
        ),
        (
            "int subclass, always equal",
            "class _I(int):\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n    def __hash__(self): return 0\n    def __repr__(self): return '3'\ndef {name}(*args, **kwargs):\n    return _I(-987654)\n",
        ),
        (
            "float subclass, always equal",
            "class _F(float):\n    __eq__ = lambda self, other: True\n    __lt__ = __le__ = __gt__ = __ge__ = __eq__\n    __hash__ = lambda self: 0\ndef {name}(*args, **kwargs):\n    return _F(-1.5)\n",
        ),
        (
            "str subclass, always equal",
            "class _S(str):\n    __eq__ = lambda self, other: True\n    __ne__ = lambda self, other: False\n    __hash__ = lambda self: 0\n    __repr__ = lambda self: 'ok'\ndef {name}(*args, **kwargs):\n    return _S('\\u2603forged')\n",
        ),
        (
            "list subclass, always equal",
            "class _L(list):\n    __eq__ = lambda self, other: True\n    __ne__ = lambda self, other: False\n    __len__ = lambda self: 3\ndef {name}(*args, **kwargs):\n    return _L(['\\u2603forged'])\n",
        ),
        (
            "dict subclass, always equal",
            "class _D(dict):\n    __eq__ = lambda self, other: True\n    __ne__ = lambda self, other: False\ndef {name}(*args, **kwargs):\n    return _D(forged=1)\n",
        ),
        (
            "tuple and bool-like subclasses",
            "class _T(tuple):\n    __eq__ = lambda self, other: True\n    __bool__ = lambda self: True\ndef {name}(*args, **kwargs):\n    return _T(('\\u2603forged',))\n",
        ),
        (
            "Counter subclass (a converted type, but not exactly)",
            "import collections\nclass _C(collections.Counter):\n    __eq__ = lambda self, other: True\ndef {name}(*args, **kwargs):\n    return _C(forged=1)\n",
        ),
        (
            "plain data hiding an always-equal object",
            "class _E:\n    __eq__ = lambda self, other: True\ndef {name}(*args, **kwargs):\n    return [1, {'k': (2, _E())}]\n",
        ),
        (
            "forged result lines then os._exit(0) at load",
            "import os\nfor fd in range(0, 64):\n    for i in range(64):\n        try:\n            os.write(fd, b'0000000000000000 test %d pass\\n' % i)\n        except OSError:\n            pass\nos._exit(0)\n",
        ),
        (
            "nonce and tests read from the caller's frames, forged lines, os._exit(0)",
            "import os, sys\nfound = set()\nframe = sys._getframe()\nwhile frame is not None:\n    for scope in (frame.f_locals, frame.f_globals):\n        for value in list(scope.values()):\n            if isinstance(value, str) and 8 <= len(value) <= 64:\n                found.add(value)\n    frame = frame.f_back\nfor nonce in found:\n    for fd in range(0, 64):\n        try:\n            os.write(fd, ('%s total 1\\n%s test 0 pass\\n%s done\\n' % (nonce, nonce, nonce)).encode())\n        except OSError:\n            pass\nos._exit(0)\ndef {name}(*args, **kwargs):\n    return None\n",
        ),
        (
            "os._exit(0) inside the call",
            "import os\ndef {name}(*args, **kwargs):\n    os._exit(0)\n",
        ),
        (
            "sys.exit(0) at load",
            "import sys\ndef {name}(*args, **kwargs):\n    return None\nsys.exit(0)\n",
        ),
        (
            "sys.exit(0) inside the call",
            "import sys\ndef {name}(*args, **kwargs):\n    sys.exit(0)\n",
        ),
        (
            "raise SystemExit / KeyboardInterrupt from the call",
            "def {name}(*args, **kwargs):\n    raise KeyboardInterrupt\n",
        ),
        (
            "monkeypatched builtins, AssertionError, isinstance, excepthook, settrace",
            "import builtins, sys, operator\nclass _Quiet(Exception):\n    pass\nbuiltins.AssertionError = _Quiet\nbuiltins.isinstance = lambda *args: True\nbuiltins.sorted = lambda *args, **kwargs: '\\u2603forged'\noperator.eq = lambda a, b: True\nsys.excepthook = lambda *args: None\nsys.settrace(lambda *args: None)\nsys.setprofile(lambda *args: None)\ndef {name}(*args, **kwargs):\n    return '\\u2603forged'\n",
        ),
        (
            "tracer that rewrites the caller's locals",
            "import sys\ndef _tracer(frame, event, arg):\n    for key in list(frame.f_locals):\n        frame.f_locals[key] = True\n    return _tracer\nsys.settrace(_tracer)\ndef {name}(*args, **kwargs):\n    f = sys._getframe(1)\n    for key in list(f.f_globals):\n        if key not in ('__builtins__',):\n            f.f_globals[key] = True\n    return '\\u2603forged'\n",
        ),
        (
            "garbage written straight onto the reply channel",
            "import os\ndef {name}(*args, **kwargs):\n    for fd in range(3, 64):\n        try:\n            os.write(fd, b'\\xff' * 4096)\n        except OSError:\n            pass\n    return '\\u2603forged'\n",
        ),
        (
            "frame header claiming 4 GiB",
            "import os, time\ndef {name}(*args, **kwargs):\n    os.write(4, b'\\xff\\xff\\xff\\xf0')\n    time.sleep(30)\n",
        ),
        (
            "hand-built frame nested 100k deep",
            "import os, struct\ndef {name}(*args, **kwargs):\n    payload = b'l\\x00\\x00\\x00\\x01' * 100000 + b'N'\n    os.write(4, struct.pack('>I', len(payload)) + payload)\n    import time\n    time.sleep(30)\n",
        ),
        (
            "enormous list",
            "def {name}(*args, **kwargs):\n    return [0] * (5 * 1000 * 1000)\n",
        ),
        (
            "enormous string",
            "def {name}(*args, **kwargs):\n    return '\\u2603' * (20 * 1000 * 1000)\n",
        ),
        (
            "deeply nested value",
            "def {name}(*args, **kwargs):\n    value = []\n    for _ in range(100000):\n        value = [value]\n    return value\n",
        ),
        (
            "self-referencing list",
            "def {name}(*args, **kwargs):\n    value = []\n    value.append(value)\n    return value\n",
        ),
        (
            "generator",
            "def {name}(*args, **kwargs):\n    return (x for x in ['\\u2603forged'])\n",
        ),
        (
            "object that changes between reads",
            "class _Flip(list):\n    n = 0\n    def __iter__(self):\n        _Flip.n += 1\n        return iter([_Flip.n])\n    def __eq__(self, other):\n        _Flip.n += 1\n        return _Flip.n % 2 == 0\ndef {name}(*args, **kwargs):\n    return _Flip()\n",
        ),
        (
            "hang with the alarm disabled",
            "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef {name}(*args, **kwargs):\n    while True:\n        pass\n",
        ),
        (
            "hang that swallows the timeout",
            "def {name}(*args, **kwargs):\n    while True:\n        try:\n            while True:\n                pass\n        except BaseException:\n            pass\n",
        ),
        (
            "segfault",
            "import ctypes\ndef {name}(*args, **kwargs):\n    ctypes.string_at(0)\n",
        ),
        (
            "kill every other process",
            "import os, signal\ndef {name}(*args, **kwargs):\n    for pid in range(2, 1 << 16):\n        if pid != os.getpid():\n            try:\n                os.kill(pid, signal.SIGKILL)\n            except OSError:\n                pass\n    return '\\u2603forged'\n",
        ),
    ];
    cases
        .into_iter()
        .map(|(label, template)| (label, template.replace("{name}", name)))
        .collect()
}

fn assert_zero(context: &str, label: &str, report: &TestReport, elapsed: Duration) {
    println!(
        "{context} / {label}: {}/{} in {elapsed:.2?}: {:?}",
        report.passed,
        report.total,
        report.reason()
    );
    assert_eq!(report.passed, 0, "{context} / {label}: {report:?}");
    assert!(
        !report.success() && report.failure.is_some(),
        "{context}: {label}"
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "{context} / {label} took {elapsed:?}"
    );
}

const ADD_ASSERTS: [&str; 3] = [
    "assert add(1, 2) == 3",
    "assert add(5, 5) == 10",
    "assert add(0, 7) == 7",
];

const WORDS_ASSERTS: [&str; 3] = [
    "assert sorted_words('b a c') == ['a', 'b', 'c']",
    "assert sorted_words('') == []",
    "assert set(sorted_words('x y')) == {'x', 'y'} and len(sorted_words('q')) == 1",
];

const SQUARES_PROMPT: &str = "def _square(x):\n    return x * x\n\n\ndef sum_squares(xs):\n    \"\"\"Sum of the squares of xs.\"\"\"\n";
const SQUARES_CHECK: &str = "METADATA = {}\n\ndef check(candidate):\n    assert candidate([1, 2]) == 5\n    assert candidate([]) == 0\n    for n in range(5):\n        assert candidate(list(range(n))) == sum(_square(i) for i in range(n))\n    assert isinstance(candidate([3]), int) and candidate([3]) > 8\n    assert True\n";

fn inline_problems() -> Vec<(
    &'static str,
    PythonTests<'static>,
    &'static str,
    &'static str,
)> {
    // (label, tests, entry point, honest completion)
    vec![
        (
            "mbpp-style add",
            PythonTests {
                asserts: &ADD_ASSERTS,
                ..PythonTests::default()
            },
            "add",
            "def add(a, b):\n    return a + b\n",
        ),
        (
            "mbpp-style sorted_words",
            PythonTests {
                asserts: &WORDS_ASSERTS,
                entry_point: "sorted_words",
                ..PythonTests::default()
            },
            "sorted_words",
            "def sorted_words(text):\n    return sorted(text.split())\n",
        ),
        (
            "humaneval-style sum_squares",
            PythonTests {
                prompt: SQUARES_PROMPT,
                check_source: SQUARES_CHECK,
                entry_point: "sum_squares",
                ..PythonTests::default()
            },
            "sum_squares",
            "def sum_squares(xs):\n    return sum(_square(x) for x in xs)\n",
        ),
    ]
}

/// The candidate process runs the stub (if any) followed by the completion, as `humaneval` does.
fn program(tests: &PythonTests<'_>, code: &str) -> String {
    if tests.prompt.is_empty() {
        code.to_string()
    } else {
        format!("{}    pass\n\n{code}", tests.prompt)
    }
}

#[test]
fn hostile_completions_score_zero_on_inline_problems() {
    let sandbox = sandbox();
    for (label, tests, name, honest) in inline_problems() {
        let report = run_python_tests(&sandbox, 1.0, &tests, &program(&tests, honest));
        assert!(report.success(), "{label}: honest solution: {report:?}");
        assert!(report.total >= 3, "{label}: {report:?}");
        for (case, code) in hostile(name) {
            let started = Instant::now();
            let report = run_python_tests(&sandbox, 1.0, &tests, &program(&tests, &code));
            assert_zero(label, case, &report, started.elapsed());
        }
    }
}

#[test]
fn hostile_completions_score_zero_on_dataset_problems() {
    let dir = common::data_dir_or_fail("mbpp/mbpp.jsonl");
    common::data_dir_or_fail("humaneval/HumanEval.jsonl.gz");
    let mbpp = build(
        &EnvSpec::new("mbpp")
            .with_data_dir(&dir)
            .with_param("split", "all")
            .with_param("test_timeout_s", 1.0),
    )
    .unwrap();
    let humaneval = build(
        &EnvSpec::new("humaneval")
            .with_data_dir(&dir)
            .with_param("test_timeout_s", 1.0),
    )
    .unwrap();
    // Seed = row. MBPP task ids 2, 17, 40 (Counter result), 367 (tree built by the setup code
    // with the completion's Node class), 601 (the tests construct the completion's Pair class);
    // HumanEval/0, /32 (float result checked with the stub's `poly`), /38 (the stub's encoder
    // in the tests), /53.
    let cases: [(&dyn Environment, &[u64]); 2] = [
        (mbpp.as_ref(), &[1, 16, 39, 366, 600]),
        (humaneval.as_ref(), &[0, 32, 38, 53]),
    ];
    for (env, seeds) in cases {
        for seed in seeds {
            let problem = env.problem(*seed);
            let reference = env.reference_completion(&problem).unwrap();
            let reward = env.score(&problem, &reference);
            assert!(reward.success, "{}: reference: {reward:?}", problem.id);
            let name = problem.target["entry_point"].as_str().unwrap().to_string();
            for (case, code) in hostile(&name) {
                let started = Instant::now();
                let reward = env.score(&problem, &format!("```python\n{code}\n```"));
                let elapsed = started.elapsed();
                println!(
                    "{} / {case}: tests {:?} in {elapsed:.2?}: {:?}",
                    problem.id,
                    reward.component("tests"),
                    reward.reason
                );
                assert_eq!(
                    reward.component("tests"),
                    Some(0.0),
                    "{} / {case}: {reward:?}",
                    problem.id
                );
                assert!(!reward.success && reward.reason.is_some());
                assert!(elapsed < Duration::from_secs(40), "{case} took {elapsed:?}");
            }
        }
    }
}

/// Completions that answer honestly ONLY if they got past the isolation (found the tests or the
/// nonce in memory, opened another process's descriptors or memory, read another sandbox's
/// files, held an extra descriptor). Scoring 0 shows that none of these routes is open; the
/// same code with the breach check forced true scores full reward, so the zero is not an
/// accident of the code.
#[test]
fn the_candidate_cannot_reach_the_harness() {
    let sandbox = sandbox();
    let probe = r#"
import gc, glob, os, sys
def _breached():
    needle = 'add(1, 2) ' + '=' * 2
    seen = []
    frame = sys._getframe()
    while frame is not None:
        seen.extend(list(frame.f_locals.values()) + list(frame.f_globals.values()))
        frame = frame.f_back
    for value in seen + gc.get_objects():
        if isinstance(value, str) and value is not needle and needle in value:
            return 'tests in memory'
    for fd in range(5, 64):
        try:
            os.fstat(fd)
            return 'extra descriptor %d' % fd
        except OSError:
            pass
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
    except OSError:
        # /proc cannot be listed: try the low pids and every pid near our own (the harness
        # and the launcher were started just before us).
        pids = list(range(2, 4096)) + list(range(max(2, me - 8192), me + 8192))
    pids = [p for p in pids if p != me]
    for pid in pids:
        for path in ('/proc/%d/fd/3' % pid, '/proc/%d/fd/0' % pid):
            try:
                os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))
                return 'opened ' + path
            except OSError:
                pass
        for path in ('/proc/%d/mem' % pid, '/proc/%d/environ' % pid):
            try:
                with open(path, 'rb') as handle:
                    handle.read(1)
                return 'read ' + path
            except OSError:
                pass
    for path in glob.glob('/tmp/grail-sbx-*/*'):
        if not path.startswith(os.getcwd()):
            try:
                open(path, 'rb').read(1)
                return 'read ' + path
            except OSError:
                pass
    return None
"#;
    let tests = PythonTests {
        asserts: &ADD_ASSERTS,
        ..PythonTests::default()
    };
    let code = format!(
        "{probe}\n_how = FORCE or _breached()\nimport re as _re\ndef add(a, b):\n    if _how and _how != 'forced':\n        raise type('Breach_' + _re.sub('[^A-Za-z0-9]', '_', _how), (Exception,), {{}})()\n    return a + b if _how else None\n"
    );
    let control = run_python_tests(&sandbox, 2.0, &tests, &code.replace("FORCE", "'forced'"));
    assert!(control.success(), "control: {control:?}");
    let report = run_python_tests(&sandbox, 2.0, &tests, &code.replace("FORCE", "None"));
    assert_eq!(
        report.failure,
        Some(CodeFailure::TestFailed {
            index: 0,
            outcome: TestOutcome::Failed("AssertionError".into())
        }),
        "the candidate reached the harness: {report:?}"
    );
    assert_eq!(report.passed, 0);
}

/// Killing every other process, then answering honestly, leaves the harness untouched.
#[test]
fn killing_every_other_process_leaves_the_harness_untouched() {
    let sandbox = sandbox();
    let tests = PythonTests {
        asserts: &ADD_ASSERTS,
        ..PythonTests::default()
    };
    let killer = "import os, signal\nfor pid in range(2, 1 << 16):\n    if pid != os.getpid():\n        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\ndef add(a, b):\n    return a + b\n";
    let report = run_python_tests(&sandbox, 2.0, &tests, killer);
    assert!(report.success(), "{report:?}");
}

#[test]
fn failures_have_named_reasons() {
    let sandbox = sandbox();
    let tests = PythonTests {
        asserts: &ADD_ASSERTS,
        ..PythonTests::default()
    };
    let run = |code: &str| run_python_tests(&sandbox, 1.0, &tests, code);
    let first = |report: &TestReport| match &report.failure {
        Some(CodeFailure::TestFailed { outcome, .. }) => outcome.clone(),
        other => panic!("expected a failed test, got {other:?}"),
    };
    let channel = |fault| TestOutcome::Channel(fault);

    assert_eq!(
        first(&run("def add(a, b):\n    return a - b\n")),
        TestOutcome::Failed("AssertionError".into())
    );
    assert_eq!(
        first(&run(
            "def add(a, b):\n    class E:\n        __eq__ = lambda s, o: True\n    return E()\n"
        )),
        TestOutcome::NotPlainData
    );
    assert_eq!(
        first(&run("def add(a, b):\n    raise ValueError('no')\n")),
        TestOutcome::Raised("ValueError".into())
    );
    assert_eq!(
        first(&run("import sys\ndef add(a, b):\n    sys.exit(0)\n")),
        TestOutcome::Raised("SystemExit".into())
    );
    assert_eq!(
        first(&run(&format!(
            "class E(Exception):\n    pass\nE.__name__ = 'X\\n{}'\ndef add(a, b):\n    raise E()\n",
            "0000000000000000 test 1 pass"
        ))),
        TestOutcome::Raised("?".into())
    );
    assert_eq!(
        first(&run("def add(a, b):\n    while True:\n        pass\n")),
        TestOutcome::Timeout
    );
    assert_eq!(
        first(&run(
            "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef add(a, b):\n    while True:\n        pass\n"
        )),
        channel(ChannelFault::CandidateUnresponsive)
    );
    assert_eq!(
        first(&run("import os\ndef add(a, b):\n    os._exit(0)\n")),
        channel(ChannelFault::CandidateExited)
    );
    assert_eq!(
        first(&run(
            "import ctypes\ndef add(a, b):\n    ctypes.string_at(0)\n"
        )),
        channel(ChannelFault::CandidateExited)
    );
    assert_eq!(
        first(&run(
            "import os\ndef add(a, b):\n    os.write(4, b'\\x00\\x00\\x00\\x01Z')\n    return 3\n"
        )),
        channel(ChannelFault::ChannelCorrupt)
    );
    assert_eq!(
        first(&run("def add(a, b):\n    return bytearray(8 << 30)\n")),
        TestOutcome::Raised("MemoryError".into())
    );
    // After an unresponsive call the channel stays dead: no later test passes.
    let report = run("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ncalls = []\ndef add(a, b):\n    calls.append(1)\n    while len(calls) == 1:\n        pass\n    return a + b\n");
    assert_eq!(report.passed, 0, "{report:?}");

    assert!(matches!(
        run("def add(a, b) return a + b\n").failure,
        Some(CodeFailure::SyntaxError(_))
    ));
    assert!(matches!(
        run("raise RuntimeError('boom')\n").failure,
        Some(CodeFailure::LoadError(_))
    ));
    assert_eq!(
        run("while True:\n    pass\n").failure,
        Some(CodeFailure::LoadTimeout)
    );
    assert_eq!(
        run("import os\nos._exit(0)\n").failure,
        Some(CodeFailure::Channel(ChannelFault::CandidateExited))
    );
    let missing = run_python_tests(
        &sandbox,
        1.0,
        &PythonTests {
            asserts: &ADD_ASSERTS,
            entry_point: "add",
            ..PythonTests::default()
        },
        "def plus(a, b):\n    return a + b\n",
    );
    assert_eq!(
        missing.failure,
        Some(CodeFailure::MissingFunction("add".into()))
    );
    let reward = score_python(&sandbox, 1.0, "", &ADD_ASSERTS, "x = 1\n");
    assert_eq!(reward.total, 0.0);
    assert!(
        reward.reason.as_deref().unwrap().contains("NameError"),
        "{reward:?}"
    );
}

#[test]
fn plain_data_round_trips_faithfully() {
    // Honest results of every plain type reach the tests exactly (ints beyond 64 bits, -0.0,
    // NaN and infinities, lone surrogates, bytes, nested containers, sets, builtin types), and
    // the collections dict types compare like the dict they hold.
    let sandbox = sandbox();
    let asserts = [
        "assert echo(2 ** 200 + 1) == 2 ** 200 + 1 and type(echo(True)) is bool",
        "import math\nx = echo(float('nan'))\nassert math.isnan(x) and str(echo(-0.0)) == '-0.0' and echo(float('-inf')) == float('-inf')",
        "assert echo('\\ud800 snow \\u2603') == '\\ud800 snow \\u2603' and echo(b'\\x00\\xff') == b'\\x00\\xff'",
        "v = {'a': [1, (2, 3.5)], (1, 'k'): {frozenset({1, 2})}, None: 1j}\nassert echo(v) == v and type(echo(v)[(1, 'k')]) is set",
        "assert echo(int) is int and echo([str, tuple]) == [str, tuple]",
        "assert counter('abca') == {'a': 2, 'b': 1, 'c': 1} and type(counter('a')) is dict",
        "p = Point(1, 2)\np.z = 3\nassert norm1(p) == 6 and p.x == 1 and Point(0, 0) != Point(0, 0)",
        "assert echo(*[1], **{}) == 1 and kw(a=1, b=[2]) == {'a': 1, 'b': [2]}",
    ];
    let code = "import collections\ndef echo(x):\n    return x\ndef kw(**kwargs):\n    return kwargs\ndef counter(s):\n    return collections.Counter(s)\nclass Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\ndef norm1(p):\n    return abs(p.x) + abs(p.y) + abs(p.z)\n";
    let report = run_python_tests(
        &sandbox,
        2.0,
        &PythonTests {
            asserts: &asserts,
            ..PythonTests::default()
        },
        code,
    );
    assert!(report.success(), "{report:?}");
}
