//! The Python interpreter with torch and transformers for the (ignored) transformers
//! cross-checks: GRAIL_TORCH_PYTHON, else the repository's .venv-torch, else python3.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to get what these tests need.
pub const NEEDS_TORCH: &str = "needs python3 with torch+transformers: python3 -m venv .venv-torch && .venv-torch/bin/pip install torch transformers (or pip install them, or set GRAIL_TORCH_PYTHON)";

/// The interpreter; panics naming the fix when it cannot import torch and transformers.
pub fn torch_python() -> PathBuf {
    let python: PathBuf = match std::env::var_os("GRAIL_TORCH_PYTHON") {
        Some(p) => p.into(),
        None => {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-torch/bin/python");
            if venv.is_file() {
                venv
            } else {
                "python3".into()
            }
        }
    };
    let ok = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{}` cannot import torch and transformers: {NEEDS_TORCH}",
        python.display()
    );
    python
}

/// A script under the repository's scripts/ folder: relative to the working directory first
/// (cargo runs tests from the package root; a test binary carried to another machine runs
/// from its copy of the repository), then the source tree it was built from.
pub fn script(name: &str) -> PathBuf {
    [
        Path::new("../scripts").join(name),
        Path::new("scripts").join(name),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts")
            .join(name)
    })
}

/// Run `scripts/<name> <dir>` with the torch interpreter, `request` as JSON on stdin; its JSON
/// stdout (panics with the script's stderr when it fails).
pub fn run_json(name: &str, dir: &Path, request: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let (script, python) = (script(name), torch_python());
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        python.display(),
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
