//! What the `grail` binary's tests share: the binary, free ports, a bare HTTP GET, the
//! datasets root and a small model-backed cluster config.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The `grail` binary under test.
pub fn grail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_grail"))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `addr` over plain HTTP/1.1: the whole response, headers included.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The datasets root (`$GRAIL_DATASETS`, else `shared/datasets` beside a folder above the repo).
pub fn shared_datasets() -> PathBuf {
    if let Some(dir) = std::env::var_os("GRAIL_DATASETS") {
        return PathBuf::from(dir);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.ancestors()
        .skip(1)
        .map(|a| a.join("shared/datasets"))
        .find(|d| d.join("gsm8k/test.jsonl").is_file())
        .expect("gsm8k/test.jsonl not found: put the datasets in ../shared/datasets or set GRAIL_DATASETS")
}

/// One instance of each of the six core roles (a smaller network than the default's).
pub const EVERY_ROLE_ONCE: &str = "[roles.clock]\ninstances = 1\n[roles.miner]\ninstances = 1\n\
     [roles.verifier]\ninstances = 1\n[roles.trainer]\ninstances = 1\n\
     [roles.publisher]\ninstances = 1\n[roles.scorer]\ninstances = 1\n";

/// The product loop on the tiny model, fast: 3 s windows, 6 new tokens, the default cluster's
/// trainer settings, no /metrics, anchors every `anchor_every` checkpoints; `extra` is appended.
pub fn model_cluster_toml(anchor_every: u32, extra: &str) -> String {
    format!(
        "[window]\nlength_secs = 3.0\nsubmit_fraction = 0.6\nchain_length = 1000\n\
         [metrics]\nlisten = \"\"\n[compute]\nkind = \"model\"\n[sampling]\nmax_new_tokens = 6\n\
         [trainer]\nlr = 0.003\nweight_decay = 0.0\nkl_coef = 0.0\nentropy_coef = 0.0\n\
         [checkpoints]\nanchor_every = {anchor_every}\n{extra}"
    )
}

/// `grail up` in the background, its stdout lines on a channel; killed on drop.
pub struct Up {
    child: Child,
    lines: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Up {
    pub fn start(config: &Path) -> Up {
        let mut child = grail()
            .args(["up", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start grail up");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Up {
            child,
            lines,
            seen: vec![],
        }
    }

    /// Reads lines until one starts with `prefix`; panics with what it saw after `timeout`.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line.clone());
                if line.starts_with(prefix) {
                    return line;
                }
            }
        }
        panic!(
            "no line starting {prefix:?} within {timeout:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
