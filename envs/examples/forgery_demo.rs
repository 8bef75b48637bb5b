//! The two forgeries from issue 18 and the honest solution, scored through `score_python` (every
//! sandbox layer on) against `add(1, 2) == 3`, `add(5, 5) == 10`, `add(0, 7) == 7`.
//!
//! `cargo run --release -p grail-envs --example forgery_demo`

use grail_envs::code::score_python;
use grail_envs::sandbox::{Sandbox, SandboxConfig};
use std::time::Instant;

const ASSERTS: [&str; 3] = [
    "assert add(1, 2) == 3",
    "assert add(5, 5) == 10",
    "assert add(0, 7) == 7",
];

fn main() {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("python3 sandbox");
    let cases = [
        ("honest `return a + b`", "def add(a, b):\n    return a + b\n"),
        (
            "always-equal object",
            "class X:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return X()\n",
        ),
        (
            "nonce + tests from the harness frame, forged lines on fd 3, os._exit(0)",
            "import os, sys\nf = sys._getframe(1).f_locals\nnonce = f.get('nonce', '')\ntests = [t for t in f.get('tests', []) if t[0] == 'test']\nfor i in range(len(tests)):\n    os.write(3, ('%s test %d pass\\n' % (nonce, i)).encode())\nos.write(3, ('%s done\\n' % nonce).encode())\nos._exit(0)\n",
        ),
    ];
    println!("| completion | tests | success | time | reason |");
    println!("|---|---:|---|---:|---|");
    for (name, code) in cases {
        let started = Instant::now();
        let reward = score_python(
            &sandbox,
            3.0,
            "",
            &ASSERTS,
            &format!("```python\n{code}```"),
        );
        println!(
            "| {name} | {:.2} | {} | {:.1?} | {} |",
            reward.component("tests").unwrap_or(0.0),
            reward.success,
            started.elapsed(),
            reward.reason.as_deref().unwrap_or("")
        );
    }
}
