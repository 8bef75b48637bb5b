//! Landlock (Linux ≥ 5.13) file-system confinement, plus TCP and signal scoping where the kernel
//! supports them (ABI 4 and 6). Unprivileged; a ruleset is built in the parent for each run and
//! applied by the child right before `exec`.
//!
//! Rules: the run's work directory is fully accessible; `/dev/null` may be read and written;
//! the Python installation and system library directories may be read and executed; everything
//! else (e.g. `/etc/passwd`, home directories, `/tmp`) can be neither read nor written.
//! ABI ≥ 4 also forbids every TCP bind/connect; ABI ≥ 6 forbids signalling processes outside the
//! sandbox and connecting to abstract Unix sockets.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const ACCESS_EXECUTE: u64 = 1 << 0;
const ACCESS_WRITE_FILE: u64 = 1 << 1;
const ACCESS_READ_FILE: u64 = 1 << 2;
const ACCESS_READ_DIR: u64 = 1 << 3;
const ACCESS_TRUNCATE: u64 = 1 << 14;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock ABI version, `None` if Landlock is unavailable or disabled.
pub(crate) fn abi_version() -> Option<u32> {
    // SAFETY: the documented version query takes a null attribute and size 0.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (version >= 1).then_some(version as u32)
}

fn handled_fs(abi: u32) -> u64 {
    let mut bits = (1u64 << 13) - 1; // ABI 1: EXECUTE ..= MAKE_SYM
    if abi >= 2 {
        bits |= 1 << 13; // REFER
    }
    if abi >= 3 {
        bits |= ACCESS_TRUNCATE;
    }
    if abi >= 5 {
        bits |= 1 << 15; // IOCTL_DEV
    }
    bits
}

/// A Landlock ruleset ready to be applied with [`restrict_self`].
pub(crate) struct Ruleset {
    fd: OwnedFd,
}

impl Ruleset {
    /// Builds the ruleset for one run (see the module docs); paths that do not exist are skipped.
    pub(crate) fn build(
        abi: u32,
        work_dir: &Path,
        read_only: &[&Path],
    ) -> std::io::Result<Ruleset> {
        let handled = handled_fs(abi);
        let attr = RulesetAttr {
            handled_access_fs: handled,
            handled_access_net: if abi >= 4 {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        };
        let size = match abi {
            1..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: `attr` is a valid ruleset attribute of at least `size` bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a fresh file descriptor that we now own.
        let ruleset = Ruleset {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        };
        let file_rights =
            ACCESS_READ_FILE | ACCESS_WRITE_FILE | if abi >= 3 { ACCESS_TRUNCATE } else { 0 };
        ruleset.allow(work_dir, handled)?;
        ruleset.allow(Path::new("/dev/null"), file_rights)?;
        for root in read_only {
            let rights = if root.is_dir() {
                ACCESS_EXECUTE | ACCESS_READ_FILE | ACCESS_READ_DIR
            } else {
                ACCESS_EXECUTE | ACCESS_READ_FILE
            };
            ruleset.allow(root, rights)?;
        }
        Ok(ruleset)
    }

    fn allow(&self, path: &Path, rights: u64) -> std::io::Result<()> {
        let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
            return Ok(());
        };
        // SAFETY: valid NUL-terminated path; O_PATH opens need no permissions on the file.
        let raw = unsafe { libc::open(c_path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if raw < 0 {
            return Ok(()); // absent path: nothing to allow
        }
        // SAFETY: fresh descriptor from open.
        let parent = unsafe { OwnedFd::from_raw_fd(raw) };
        let attr = PathBeneathAttr {
            allowed_access: rights,
            parent_fd: parent.as_raw_fd(),
        };
        // SAFETY: valid ruleset fd and rule attribute.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Applies a ruleset to the calling process (child side, async-signal-safe; needs no_new_privs).
pub(crate) fn restrict_self(ruleset_fd: i32) -> std::io::Result<()> {
    // SAFETY: plain syscall on a descriptor inherited from the parent.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset_fd, 0u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
