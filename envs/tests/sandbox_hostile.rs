//! Hostile completions are contained, score 0 with a reason, and leave nothing behind.
//! One test function on purpose: the /proc and temp-dir scans at the end must not see
//! sandboxes of concurrently running tests.

use grail_envs::code::score_python;
use grail_envs::sandbox::{Exit, Sandbox, SandboxConfig};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn sandbox() -> Option<Sandbox> {
    match Sandbox::new(SandboxConfig::default()) {
        Ok(sandbox) => Some(sandbox),
        Err(error) => {
            eprintln!("skip: {error}");
            None
        }
    }
}

/// Pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}

fn sandbox_dirs() -> HashSet<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with("grail-sbx-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn random_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    format!(
        "{:x}",
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    )
}

const ASSERTS: [&str; 2] = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"];

#[test]
fn hostile_completions_are_contained() {
    let Some(sandbox) = sandbox() else { return };
    let caps = sandbox.capabilities().clone();
    println!("sandbox capabilities: {caps:?}");
    let dirs_before = sandbox_dirs();
    let marker = format!("grail-hostile-{}", random_tag());
    let pwned = std::env::temp_dir().join(format!("pwned-{}", random_tag()));

    // Sanity: a correct solution passes, so the zeros below are the hostile code's doing.
    let good = score_python(
        &sandbox,
        1.0,
        "",
        &ASSERTS,
        "```python\ndef add(a, b):\n    return a + b\n```",
    );
    assert!(good.success && (good.total - 1.0).abs() < 1e-6, "{good:?}");

    let cases: Vec<(&str, String)> = vec![
        ("infinite loop", "def add(a, b):\n    return a + b\nwhile True:\n    pass\n".to_string()),
        (
            "alarm-proof infinite loop",
            "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef add(a, b):\n    return a + b\nwhile True:\n    pass\n".to_string(),
        ),
        ("fork bomb", "import os\ndef add(a, b):\n    return a + b\nwhile True:\n    os.fork()\n".to_string()),
        (
            "escaping child",
            format!(
                "import os, sys\ndef add(a, b):\n    return a + b\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    os.execv(sys.executable, [sys.executable, '-c', 'while True: pass', '{marker}'])\n"
            ),
        ),
        (
            "subprocess",
            format!("import subprocess\nsubprocess.Popen(['sleep', '30', '{marker}'])\ndef add(a, b):\n    return a + b\n"),
        ),
        (
            "huge output",
            "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(400):\n    sys.stdout.write(chunk)\ndef add(a, b):\n    return a + b\nraise SystemExit(1)\n".to_string(),
        ),
        (
            "write outside the work dir",
            format!("open({:?}, 'w').write('pwned')\ndef add(a, b):\n    return a + b\n", pwned.display().to_string()),
        ),
        (
            "socket via stub",
            "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\ndef add(a, b):\n    return a + b\n".to_string(),
        ),
        (
            "socket bypassing the stub",
            "import sys\nfor name in ('socket', '_socket'):\n    sys.modules.pop(name, None)\nimport socket\nsocket.socket().connect(('127.0.0.1', 22))\ndef add(a, b):\n    return a + b\n".to_string(),
        ),
        ("memory bomb", "blob = bytearray(8 << 30)\ndef add(a, b):\n    return a + b\n".to_string()),
        ("kill the parent", "import os\nos.kill(os.getppid(), 9)\ndef add(a, b):\n    return a + b\n".to_string()),
        ("megabytes of completion", format!("def add(a, b):\n    return a + b\n#{}\n", "x".repeat(5 << 20))),
        ("forged results", "import os\nos.write(3, b'0000 test 0 pass\\n0000 test 1 pass\\n')\nos._exit(0)\n".to_string()),
    ];
    for (name, code) in &cases {
        let started = Instant::now();
        let reward = score_python(
            &sandbox,
            1.0,
            "",
            &ASSERTS,
            &format!("```python\n{code}\n```"),
        );
        let elapsed = started.elapsed();
        println!(
            "{name}: tests={:?} in {elapsed:.2?}: {:?}",
            reward.component("tests"),
            reward.reason
        );
        assert_eq!(reward.component("tests"), Some(0.0), "{name}: {reward:?}");
        assert!(!reward.success && reward.reason.is_some(), "{name}");
        assert!(elapsed < Duration::from_secs(15), "{name} took {elapsed:?}");
    }

    // Reading files outside the sandbox: a test that only passes if /etc/passwd is readable.
    let read = score_python(
        &sandbox,
        1.0,
        "",
        &["assert len(open('/etc/passwd').read()) > 0"],
        "```python\nx = 1\n```",
    );
    // The same read from the completion's own process.
    let read_by_completion = score_python(
        &sandbox,
        1.0,
        "",
        &ASSERTS,
        "```python\nsecret = open('/etc/passwd').read()\ndef add(a, b):\n    return a + b\n```",
    );
    if caps.landlock_abi.is_some() {
        assert!(
            !read.success,
            "reading /etc/passwd must fail under Landlock: {read:?}"
        );
        assert_eq!(
            read_by_completion.component("tests"),
            Some(0.0),
            "{read_by_completion:?}"
        );
        assert!(!pwned.exists(), "write outside the work dir succeeded");
    } else {
        eprintln!(
            "note: no Landlock on this kernel; reads/writes outside the work dir are not confined"
        );
        let _ = std::fs::remove_file(&pwned);
    }

    // Huge output is drained and capped, not buffered.
    let output = sandbox
        .run("import sys\nchunk = 'y' * (1 << 20)\nfor _ in range(300):\n    sys.stdout.write(chunk)\n", &[], b"")
        .unwrap();
    assert_eq!(output.exit, Exit::Code(0));
    assert_eq!(output.stdout.len(), sandbox.config().max_output_bytes);
    assert!(output.output_bytes >= 300 << 20);

    // Nothing left running, nothing left on disk. A SIGKILLed group can take a moment to
    // disappear from /proc on a loaded machine: wait for it (bounded), then insist.
    let started = std::time::Instant::now();
    while !processes_with(&marker).is_empty() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "escaped processes still running"
    );
    let leftover: Vec<_> = sandbox_dirs().difference(&dirs_before).cloned().collect();
    assert!(
        leftover.is_empty(),
        "work directories left behind: {leftover:?}"
    );
}

#[test]
fn work_dir_is_writable_and_environment_is_clean() {
    let Some(sandbox) = sandbox() else { return };
    let script = "import os, sys\nopen('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())\nprint(sorted(k for k in os.environ if k != 'LC_CTYPE'))\nprint(hash('grail'))\n";
    let first = sandbox.run(script, &[], b"").unwrap();
    let second = sandbox.run(script, &[], b"").unwrap();
    assert_eq!(
        first.exit,
        Exit::Code(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8_lossy(&first.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok");
    assert_eq!(
        lines[1],
        "['LANG', 'PYTHONDONTWRITEBYTECODE', 'PYTHONHASHSEED', 'PYTHONIOENCODING']"
    );
    assert_eq!(
        first.stdout, second.stdout,
        "string hashing must be deterministic"
    );
}
