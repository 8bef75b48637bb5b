//! Running untrusted Python in a subprocess.
//!
//! # What is enforced, and how
//! Each [`Sandbox::run`] gets a fresh temporary work directory (removed afterwards, also on
//! timeout) and one `python3 -s -S -B <script>` process, spawned with a cleared environment
//! (only `PYTHONHASHSEED=0`, so `set`/`dict` ordering of strings is the same on every machine,
//! `PYTHONDONTWRITEBYTECODE=1`, `PYTHONIOENCODING=utf-8`, `LANG=C.UTF-8`). `-s -S` keep user
//! and site packages out; `-I` is not used because it would also ignore `PYTHONHASHSEED`,
//! and with the environment cleared it adds nothing else. Between `fork` and `exec`:
//!
//! * `setsid`: the process leads its own process group; on timeout the whole group gets
//!   `SIGKILL` (`killpg`), and again after every run.
//! * descriptors: the program inherits 0-2 and the descriptors the run maps for it (3 and up),
//!   nothing else: every other descriptor is marked close-on-exec (`close_range`), including
//!   ones the calling process inherited without `FD_CLOEXEC`.
//! * rlimits: `RLIMIT_CPU` (CPU seconds), `RLIMIT_AS` (memory), `RLIMIT_FSIZE` (largest file it
//!   may write), `RLIMIT_NOFILE` 64, `RLIMIT_CORE` 0, `RLIMIT_NPROC` (see below).
//! * network namespace: `unshare(CLONE_NEWNET)` as root, or `CLONE_NEWUSER|CLONE_NEWNET` where
//!   unprivileged user namespaces are allowed: the process sees only a down loopback device.
//!   Where neither works (probed once, [`Capabilities::network_namespace`]) this layer is absent.
//! * capabilities: the bounding, ambient and current sets are emptied, so a program started by
//!   root runs with no capability (no `CAP_SYS_PTRACE`, `CAP_DAC_OVERRIDE`, ...).
//! * `no_new_privs`, then Landlock where the kernel has it ([`Capabilities::landlock_abi`]):
//!   reads only of the Python installation and system library directories, writes only inside
//!   the work directory (so writing `/tmp/x` or reading `/etc/passwd` or `/proc` fails with
//!   `EACCES`), no TCP (ABI ≥ 4), no signals to outside processes (ABI ≥ 6). Each process gets
//!   its own ruleset, hence its own Landlock domain: it cannot ptrace or signal the other.
//! * seccomp-BPF ([`Capabilities::seccomp`]): no `fork`/`vfork`/non-thread `clone` (so fork
//!   bombs and escaping the process group are impossible: the group is always a single
//!   process), no `socket`/`socketpair`, no `ptrace`, no signals to other processes; see
//!   the `seccomp` module docs for the full list.
//! * In Python (not a security boundary): `socket`/`ssl` modules replaced by stubs that raise
//!   `PermissionError`, per-call `SIGALRM` timeouts.
//!
//! The wall-clock limit is enforced by the parent, which polls the output pipes and kills the
//! group at the deadline. stdout/stderr (and the result channel on fd 3) are drained
//! continuously; only the first `max_output_bytes` of each are kept, so printing hundreds of MB
//! neither blocks the child nor grows memory. `RLIMIT_NPROC` only binds non-root users (the kernel
//! exempts root) and counts all of the user's processes, so it is set to the user's current
//! process count plus 256; seccomp is the real guard against process creation.
//!
//! # Two processes for code rewards
//! [`Sandbox::run_pair`] runs a trusted program (the test harness: dataset code only) and an
//! untrusted candidate program (the completion) as two such processes, each with its own work
//! directory, Landlock domain, process group and limits, joined only by a request pipe and a
//! reply pipe. Only the trusted one holds the result channel the parent reads, and it gets its
//! input (nonce, tests) on stdin from an unlinked file, so no path leads to it. With Landlock the
//! candidate can neither open the trusted process's `/proc` entries nor its work directory;
//! where Landlock is absent the trusted harness makes itself non-dumpable, so a capability-less
//! same-uid candidate still cannot open its `/proc/<pid>/fd` or `mem`. See [`crate::code`] for
//! the protocol between the two.
//!
//! Not enforced: there is no cgroup, so memory is bounded per process by `RLIMIT_AS` only.
//! Without Landlock, reads and writes outside the work directory are not confined (the trusted
//! process's work directory holds only the harness script, no tests).

mod io;
mod landlock;
mod pool;
mod seccomp;

pub use pool::set_max_concurrency;

use crate::EnvError;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX_STDIN_BYTES: usize = 4096;

/// Limits for one sandboxed run.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Interpreter to run (`python3` is looked up on `PATH`, then resolved to the real binary).
    pub python: PathBuf,
    /// Wall-clock limit for the whole run.
    pub wall_timeout: Duration,
    /// `RLIMIT_AS` in bytes.
    pub memory_bytes: u64,
    /// `RLIMIT_FSIZE` in bytes.
    pub max_file_bytes: u64,
    /// Bytes kept of stdout, of stderr, and of the result channel each.
    pub max_output_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            python: PathBuf::from("python3"),
            wall_timeout: Duration::from_secs(10),
            memory_bytes: 1 << 30,
            max_file_bytes: 16 << 20,
            max_output_bytes: 64 << 10,
        }
    }
}

/// Which isolation layers this machine supports (probed once per [`Sandbox`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub seccomp: bool,
    pub landlock_abi: Option<u32>,
    pub network_namespace: Option<NetNamespace>,
}

/// How the network namespace is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetNamespace {
    /// `unshare(CLONE_NEWNET)` (needs `CAP_SYS_ADMIN`, e.g. root).
    Direct,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET)` (unprivileged user namespaces).
    ViaUserNamespace,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed at the wall-clock deadline.
    TimedOut,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes the program wrote to file descriptor 3 (the harness's result channel).
    pub results: Vec<u8>,
    /// Total bytes written to stdout and stderr (including those beyond the cap).
    pub output_bytes: u64,
    pub wall: Duration,
}

/// A configured sandbox; cheap to share (`&self` methods, thread-safe).
pub struct Sandbox {
    config: SandboxConfig,
    python: PathBuf,
    read_only_roots: Vec<PathBuf>,
    capabilities: Capabilities,
    nproc_limit: u64,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("python", &self.python)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl Sandbox {
    /// Resolves the interpreter and probes the isolation layers.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, EnvError> {
        let probe = Command::new(&config.python)
            .args(["-s", "-S", "-c", "import sys; print(sys.executable); print(sys.base_prefix); print(sys.exec_prefix)"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                EnvError::Sandbox(format!(
                    "cannot run `{}` ({error}); install python3 or set the code environment's `python` parameter",
                    config.python.display()
                ))
            })?;
        let text = String::from_utf8_lossy(&probe.stdout).to_string();
        let lines: Vec<&str> = text.lines().collect();
        if !probe.status.success() || lines.len() < 3 || lines[0].is_empty() {
            return Err(EnvError::Sandbox(format!(
                "`{}` did not report its installation (exit {:?}); set `python` to a working python3",
                config.python.display(),
                probe.status.code()
            )));
        }
        let python = PathBuf::from(lines[0]);
        let mut read_only_roots: Vec<PathBuf> =
            [lines[1], lines[2]].iter().map(PathBuf::from).collect();
        if let Some(parent) = python.parent() {
            read_only_roots.push(parent.to_path_buf());
        }
        for system in [
            "/usr",
            "/lib",
            "/lib64",
            "/lib32",
            "/bin",
            "/etc/ld.so.cache",
            "/dev/urandom",
        ] {
            read_only_roots.push(PathBuf::from(system));
        }
        let seccomp = seccomp::Filter::build().is_some();
        let capabilities = Capabilities {
            seccomp,
            landlock_abi: landlock::abi_version(),
            network_namespace: probe_network_namespace(&python),
        };
        Ok(Sandbox {
            config,
            python,
            read_only_roots,
            capabilities,
            nproc_limit: count_own_processes() + 256,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The resolved interpreter.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Runs `script` (written to `main.py`) with `files` next to it in a fresh work directory,
    /// feeding `stdin` (at most 4096 bytes). Waits for a slot of the process-wide pool first (see
    /// [`set_max_concurrency`]). `Err` only for infrastructure failures (cannot create the
    /// directory, cannot spawn); anything the program does is reported in [`RunOutput`].
    pub fn run(
        &self,
        script: &str,
        files: &[(&str, &[u8])],
        stdin: &[u8],
    ) -> std::io::Result<RunOutput> {
        self.run_with(&self.config, script, files, stdin)
    }

    /// [`Sandbox::run`] with other limits (`config.python` is ignored: the interpreter resolved
    /// at construction is used).
    pub fn run_with(
        &self,
        config: &SandboxConfig,
        script: &str,
        files: &[(&str, &[u8])],
        stdin: &[u8],
    ) -> std::io::Result<RunOutput> {
        if stdin.len() > MAX_STDIN_BYTES {
            // Larger input could fill the pipe before we start draining output.
            return Err(std::io::Error::other(
                "sandbox stdin is limited to 4096 bytes; pass data as a file",
            ));
        }
        let _slot = pool::pool().acquire();
        let work_dir = tempfile::Builder::new().prefix("grail-sbx-").tempdir()?;
        let script_path = work_dir.path().join("main.py");
        std::fs::write(&script_path, script)?;
        for (name, contents) in files {
            let name = Path::new(name)
                .file_name()
                .ok_or_else(|| std::io::Error::other("bad sandbox file name"))?;
            std::fs::write(work_dir.path().join(name), contents)?;
        }
        let output = self.spawn_and_collect(config, work_dir.path(), &script_path, stdin);
        // Dropping `work_dir` removes it, whatever the program left inside.
        drop(work_dir);
        output
    }

    fn spawn_and_collect(
        &self,
        config: &SandboxConfig,
        work_dir: &Path,
        script: &Path,
        stdin: &[u8],
    ) -> std::io::Result<RunOutput> {
        let started = Instant::now();
        let (results_read, results_write) = io::pipe()?;
        let mut child = self.spawn(
            config,
            work_dir,
            script,
            Stdio::piped(),
            &[(results_write.as_raw_fd(), 3)],
        )?;
        drop(results_write);
        let pid = child.id() as libc::pid_t;
        let guard = GroupKiller(pid);

        if let Some(mut input) = child.stdin.take() {
            // A program that exits early closes stdin; that is not an error of ours.
            let _ = input.write_all(stdin);
        }
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let deadline = started + config.wall_timeout;
        let cap = config.max_output_bytes;
        let mut streams = [
            io::Stream::new(stdout, cap),
            io::Stream::new(stderr, cap),
            io::Stream::new(Some(results_read), cap),
        ];
        let timed_out = io::drain_until(&mut streams, deadline);
        let (exit, _) = wait_exit(&mut child, guard, timed_out, deadline)?;
        let [stdout, stderr, results] = streams;
        Ok(RunOutput {
            exit,
            output_bytes: stdout.total + stderr.total,
            stdout: stdout.kept,
            stderr: stderr.kept,
            results: results.kept,
            wall: started.elapsed(),
        })
    }

    /// Runs two cooperating programs, each in its own sandbox (own work directory, Landlock
    /// domain, process group, rlimits, seccomp filter): a `trusted` one and an untrusted
    /// `candidate` one, connected only by two pipes. File descriptors:
    ///
    /// * trusted: 0 = `trusted_stdin` (an unlinked temporary file, so any size), 1/2 captured,
    ///   3 = result channel (read by us only), 4 = requests to the candidate, 5 = its replies.
    /// * candidate: 0 = `/dev/null`, 1/2 captured, 3 = requests, 4 = replies. It holds no
    ///   descriptor of the trusted program's stdin, output or result channel.
    ///
    /// The run ends when the trusted program has closed its output and result channel (or at
    /// the wall-clock deadline); the candidate's process group is then killed, whatever it is
    /// doing. Takes one slot of the process-wide pool: the two take turns computing.
    pub fn run_pair(
        &self,
        config: &SandboxConfig,
        trusted: &PairProgram<'_>,
        trusted_stdin: &[u8],
        candidate: &PairProgram<'_>,
    ) -> std::io::Result<PairOutput> {
        let _slot = pool::pool().acquire();
        let trusted_dir = prepare_work_dir(trusted)?;
        let candidate_dir = prepare_work_dir(candidate)?;
        let started = Instant::now();
        let mut stdin_file = tempfile::tempfile()?;
        stdin_file.write_all(trusted_stdin)?;
        std::io::Seek::rewind(&mut stdin_file)?;
        let (results_read, results_write) = io::pipe()?;
        let (requests_read, requests_write) = io::pipe()?;
        let (replies_read, replies_write) = io::pipe()?;

        // The harness first: its start-up (imports, reading the tests) is the longer path.
        let mut trusted_child = self.spawn(
            config,
            trusted_dir.path(),
            &trusted_dir.path().join("main.py"),
            Stdio::from(stdin_file),
            &[
                (results_write.as_raw_fd(), 3),
                (requests_write.as_raw_fd(), 4),
                (replies_read.as_raw_fd(), 5),
            ],
        )?;
        let trusted_guard = GroupKiller(trusted_child.id() as libc::pid_t);
        drop((results_write, requests_write, replies_read));
        let mut candidate_child = self.spawn(
            config,
            candidate_dir.path(),
            &candidate_dir.path().join("main.py"),
            Stdio::null(),
            &[
                (requests_read.as_raw_fd(), 3),
                (replies_write.as_raw_fd(), 4),
            ],
        )?;
        let candidate_guard = GroupKiller(candidate_child.id() as libc::pid_t);
        drop((requests_read, replies_write));

        let deadline = started + config.wall_timeout;
        let cap = config.max_output_bytes;
        let take = |child: &mut std::process::Child| {
            (
                child.stdout.take().map(OwnedFd::from),
                child.stderr.take().map(OwnedFd::from),
            )
        };
        let (trusted_out, trusted_err) = take(&mut trusted_child);
        let (candidate_out, candidate_err) = take(&mut candidate_child);
        let mut streams = [
            io::Stream::new(trusted_out, cap),
            io::Stream::new(trusted_err, cap),
            io::Stream::new(Some(results_read), cap),
            io::Stream::new(candidate_out, cap),
            io::Stream::new(candidate_err, cap),
        ];
        let timed_out = io::drain_until_closed(&mut streams, 3, deadline);
        let (trusted_exit, trusted_timed_out) =
            wait_exit(&mut trusted_child, trusted_guard, timed_out, deadline)?;
        // The trusted side is done: the candidate has nothing left to answer.
        drop(candidate_guard);
        let candidate_status = candidate_child.wait()?;
        // Its pipes close with it; keep what it wrote until then (bounded: it is dead).
        io::drain_until(
            &mut streams[3..],
            Instant::now() + Duration::from_millis(500),
        );
        let candidate_exit = if trusted_timed_out {
            Exit::TimedOut
        } else {
            exit_of(candidate_status)
        };
        let [trusted_out, trusted_err, results, candidate_out, candidate_err] = streams;
        let wall = started.elapsed();
        drop((trusted_dir, candidate_dir));
        Ok(PairOutput {
            trusted: RunOutput {
                exit: trusted_exit,
                output_bytes: trusted_out.total + trusted_err.total,
                stdout: trusted_out.kept,
                stderr: trusted_err.kept,
                results: results.kept,
                wall,
            },
            candidate: RunOutput {
                exit: candidate_exit,
                output_bytes: candidate_out.total + candidate_err.total,
                stdout: candidate_out.kept,
                stderr: candidate_err.kept,
                results: Vec::new(),
                wall,
            },
        })
    }

    /// Spawns `script` in `work_dir` with every isolation layer; `fds` maps parent descriptors
    /// to the child's descriptor numbers (3 and up). The child leads its own process group.
    fn spawn(
        &self,
        config: &SandboxConfig,
        work_dir: &Path,
        script: &Path,
        stdin: Stdio,
        fds: &[(RawFd, RawFd)],
    ) -> std::io::Result<std::process::Child> {
        let ruleset = match self.capabilities.landlock_abi {
            Some(abi) => {
                let roots: Vec<&Path> = self.read_only_roots.iter().map(PathBuf::as_path).collect();
                Some(landlock::Ruleset::build(abi, work_dir, &roots)?)
            }
            None => None,
        };
        let mut fd_map = [(-1, -1); MAX_EXTRA_FDS];
        if fds.len() > MAX_EXTRA_FDS {
            return Err(std::io::Error::other(
                "too many descriptors for a sandboxed child",
            ));
        }
        fd_map[..fds.len()].copy_from_slice(fds);
        let mut child_setup = ChildSetup {
            fd_map,
            ruleset_fd: ruleset.as_ref().map(landlock::Ruleset::raw_fd),
            seccomp: seccomp::Filter::build(),
            net: self.capabilities.network_namespace,
            limits: [
                (
                    libc::RLIMIT_CPU,
                    config.wall_timeout.as_secs().max(1),
                    config.wall_timeout.as_secs().max(1) + 1,
                ),
                (libc::RLIMIT_AS, config.memory_bytes, config.memory_bytes),
                (
                    libc::RLIMIT_FSIZE,
                    config.max_file_bytes,
                    config.max_file_bytes,
                ),
                (libc::RLIMIT_NOFILE, 64, 64),
                (libc::RLIMIT_CORE, 0, 0),
                (libc::RLIMIT_NPROC, self.nproc_limit, self.nproc_limit),
            ],
        };
        let mut command = Command::new(&self.python);
        command
            .args(["-s", "-S", "-B"])
            .arg(script)
            .current_dir(work_dir)
            .env_clear()
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .env("LANG", "C.UTF-8")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure only makes async-signal-safe syscalls on pre-allocated data.
        unsafe {
            command.pre_exec(move || child_setup.apply());
        }
        let child = command.spawn();
        drop(ruleset);
        child
    }
}

/// One program of [`Sandbox::run_pair`]: `script` becomes `main.py`, `files` lie next to it.
#[derive(Debug, Clone, Copy)]
pub struct PairProgram<'a> {
    pub script: &'a str,
    pub files: &'a [(&'a str, &'a [u8])],
}

/// What [`Sandbox::run_pair`] produced. `trusted.results` is the only result channel; the
/// candidate has none (`candidate.results` is empty).
#[derive(Debug, Clone)]
pub struct PairOutput {
    pub trusted: RunOutput,
    pub candidate: RunOutput,
}

fn prepare_work_dir(program: &PairProgram<'_>) -> std::io::Result<tempfile::TempDir> {
    let work_dir = tempfile::Builder::new().prefix("grail-sbx-").tempdir()?;
    std::fs::write(work_dir.path().join("main.py"), program.script)?;
    for (name, contents) in program.files {
        let name = Path::new(name)
            .file_name()
            .ok_or_else(|| std::io::Error::other("bad sandbox file name"))?;
        std::fs::write(work_dir.path().join(name), contents)?;
    }
    Ok(work_dir)
}

/// Waits for `child` until `deadline` (unless already `timed_out`), then kills its group.
/// Returns how it ended and whether the deadline hit.
fn wait_exit(
    child: &mut std::process::Child,
    guard: GroupKiller,
    mut timed_out: bool,
    deadline: Instant,
) -> std::io::Result<(Exit, bool)> {
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if timed_out || Instant::now() >= deadline {
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    drop(guard); // SIGKILL to the group, whatever happened
    let status = match status {
        Some(status) => status,
        None => child.wait()?,
    };
    let exit = if timed_out {
        Exit::TimedOut
    } else {
        exit_of(status)
    };
    Ok((exit, timed_out))
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    if let Some(code) = status.code() {
        Exit::Code(code)
    } else {
        Exit::Signal(status.signal().unwrap_or(0))
    }
}

const MAX_EXTRA_FDS: usize = 3;

/// Everything the child does between `fork` and `exec`, prepared in the parent.
struct ChildSetup {
    /// (parent descriptor, child descriptor) pairs; unused entries are (-1, -1).
    fd_map: [(RawFd, RawFd); MAX_EXTRA_FDS],
    ruleset_fd: Option<RawFd>,
    seccomp: Option<seccomp::Filter>,
    net: Option<NetNamespace>,
    limits: [(libc::__rlimit_resource_t, u64, u64); 6],
}

impl ChildSetup {
    /// Child side: only async-signal-safe calls, no allocation.
    fn apply(&mut self) -> std::io::Result<()> {
        // SAFETY: plain syscalls in the single-threaded forked child.
        unsafe {
            check(libc::setsid())?;
            // Move every source above the targets first (a source may sit on another's
            // target number), then onto its target; the moved copies are close-on-exec.
            // The Landlock ruleset too: its number may be one of the targets.
            let ruleset_fd = match self.ruleset_fd {
                Some(fd) => Some(check(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 16))?),
                None => None,
            };
            let mut moved = [-1; MAX_EXTRA_FDS];
            for (slot, (source, _)) in self.fd_map.iter().enumerate() {
                if *source >= 0 {
                    moved[slot] = check(libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, 16))?;
                }
            }
            let mut first_unmapped = 3;
            for (slot, (_, target)) in self.fd_map.iter().enumerate() {
                if moved[slot] >= 0 {
                    check(libc::dup2(moved[slot], *target))?;
                    first_unmapped = first_unmapped.max(*target + 1);
                }
            }
            close_others_on_exec(first_unmapped);
            match self.net {
                Some(NetNamespace::Direct) => {
                    check(libc::unshare(libc::CLONE_NEWNET))?;
                }
                Some(NetNamespace::ViaUserNamespace) => {
                    check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET))?;
                }
                None => {}
            }
            for (resource, soft, hard) in self.limits {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                check(libc::setrlimit(resource, &limit))?;
            }
            drop_capabilities();
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            if let Some(fd) = ruleset_fd {
                landlock::restrict_self(fd)?;
            }
        }
        if let Some(filter) = self.seccomp.as_mut() {
            filter.install()?;
        }
        Ok(())
    }
}

/// Marks every descriptor from `first` up close-on-exec, so the program inherits only 0-2 and
/// the mapped ones, never a descriptor the parent process happened to inherit without
/// `FD_CLOEXEC` (a socket of the launcher, ...). Marking instead of closing keeps the standard
/// library's exec-error pipe working. Child side, async-signal-safe.
fn close_others_on_exec(first: RawFd) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: plain syscalls on descriptor numbers in the forked child.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        // Kernels before 5.11: walk the descriptor table up to the soft limit (bounded).
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let last = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 16) as RawFd
        } else {
            1 << 16
        };
        for fd in first..last {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Empties the capability bounding set, the ambient set and the current sets, so that even a
/// program started as root runs without capabilities after `exec` (no `CAP_SYS_PTRACE` to open
/// another sandboxed process's `/proc/<pid>/fd` or `mem`, no `CAP_DAC_OVERRIDE`, ...). Failures
/// are ignored: an unprivileged caller has nothing to drop. Child side, async-signal-safe.
fn drop_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // SAFETY: plain prctl/capset syscalls on stack data in the forked child.
    unsafe {
        for capability in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
            {
                break; // past the kernel's last capability
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr());
    }
}

fn check(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Kills the child's process group when dropped.
struct GroupKiller(libc::pid_t);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's group; ESRCH (already gone) is fine.
        unsafe {
            libc::killpg(self.0, libc::SIGKILL);
        }
    }
}

/// Tries each way of creating a network namespace once, in a throwaway child.
fn probe_network_namespace(python: &Path) -> Option<NetNamespace> {
    [NetNamespace::Direct, NetNamespace::ViaUserNamespace]
        .into_iter()
        .find(|mode| {
            let flags = match mode {
                NetNamespace::Direct => libc::CLONE_NEWNET,
                NetNamespace::ViaUserNamespace => libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
            };
            let mut command = Command::new(python);
            command
                .args(["-S", "-c", "pass"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: unshare is async-signal-safe.
            unsafe {
                command.pre_exec(move || check(libc::unshare(flags)).map(|_| ()));
            }
            command.status().is_ok_and(|status| status.success())
        })
}

/// Tasks (processes and threads) owned by our real uid, for the `RLIMIT_NPROC` headroom.
fn count_own_processes() -> u64 {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        return 0; // not enforced for root anyway
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 4096;
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let owner = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u32>().ok());
        let threads = status
            .lines()
            .find_map(|line| line.strip_prefix("Threads:"))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
            .unwrap_or(1);
        if owner == Some(uid) {
            count += threads;
        }
    }
    count
}
