//! An outside miner joins a running `grail up` (authenticated bus, default tiny-model cluster)
//! with only the URL, a fresh hotkey file and the owner's address, and earns weight; a miner
//! pinning the wrong owner is refused before it mines anything.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn grail() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_grail"));
    c.env("NO_COLOR", "1")
        .env("RUST_LOG", "info,async_nats=warn");
    c
}

use common::free_port;

fn metrics(addr: &str) -> String {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Kills the process (and so its embedded nats-server) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn address_of(key: &Path) -> String {
    let out = grail().args(["keys", "show"]).arg(key).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

fn log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn an_outside_miner_joins_with_url_hotkey_and_owner_and_earns_weight() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, format!("[metrics]\nlisten = \"{listen}\"\n")).unwrap();
    let up_log = dir.path().join("up.log");
    let _up = Killed(
        grail()
            .args(["up", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&up_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let url_file = dir.path().join("run/nats.url");
    let started = Instant::now();
    while !(url_file.exists() && metrics(&listen).contains("grail_miner_weight{")) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "grail up scored no window: {}",
            log(&up_log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let url = std::fs::read_to_string(&url_file)
        .unwrap()
        .trim()
        .to_string();
    let owner = address_of(&dir.path().join("run/keys/owner.json"));

    // Someone else's owner address: the login (bound to the owner) is refused, and the miner
    // says so instead of retrying for ever.
    let stranger = dir.path().join("stranger.json");
    assert!(grail()
        .args(["keys", "new", "--out"])
        .arg(&stranger)
        .status()
        .unwrap()
        .success());
    let hotkey = dir.path().join("outside-miner.json");
    assert!(grail()
        .args(["keys", "new", "--out"])
        .arg(&hotkey)
        .status()
        .unwrap()
        .success());
    let wrong = grail()
        .args(["miner", "--network", &url, "--hotkey"])
        .arg(&hotkey)
        .args(["--owner", &address_of(&stranger), "--run-dir"])
        .arg(dir.path().join("wrong"))
        .output()
        .unwrap();
    assert!(
        !wrong.status.success(),
        "a miner pinning another owner mined"
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("did not accept the login") && stderr.contains("--owner"),
        "{stderr}"
    );

    // The real owner: only URL, hotkey and owner; model, env and sampling from the manifest.
    let miner = address_of(&hotkey);
    let miner_log = dir.path().join("miner.log");
    let _miner = Killed(
        grail()
            .current_dir(dir.path())
            .args(["miner", "--network", &url, "--hotkey"])
            .arg(&hotkey)
            .args(["--owner", &owner, "--run-dir"])
            .arg(dir.path().join("outside"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&miner_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let weight = |body: &str| -> f64 {
        let prefix = format!("grail_miner_weight{{miner=\"{miner}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let started = Instant::now();
    while weight(&metrics(&listen)) <= 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "the outside miner earned no weight.\nminer: {}\nup: {}",
            log(&miner_log),
            log(&up_log)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The gatekeeper admitted it as a new hotkey (a counter that moved, not just a series).
    let new_logins: f64 = metrics(&listen)
        .lines()
        .find_map(|l| {
            l.strip_prefix("grail_auth_logins_total{kind=\"new\"} ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    assert!(
        new_logins >= 1.0,
        "the miner did not log in through the gatekeeper"
    );
}
