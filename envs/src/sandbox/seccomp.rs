//! A seccomp-BPF filter for sandboxed Python: no new processes, no sockets, no escape hatches.
//!
//! Denied with `EPERM`: `fork`, `vfork`, `clone` without `CLONE_THREAD` (threads stay allowed),
//! `socket`, `socketpair`, io_uring (could open sockets around the filter), `ptrace`,
//! `process_vm_*`, pidfd signalling, `unshare`/`setns`/`mount`/`chroot` and similar
//! administration calls, and signals to any process but the sandboxed one itself (`kill` only
//! for its own pid or process group, `tkill`/`tgkill` only for its own pid). `clone3` returns
//! `ENOSYS` so libc falls back to `clone`, where the flags can be inspected. A foreign
//! architecture (or the x32 ABI) kills the process. Only x86_64 and aarch64 are supported; on
//! other architectures [`Filter::build`] returns `None` and the sandbox reports it.

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

// BPF_LD | BPF_W | BPF_ABS (BPF_LD and BPF_W are 0).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16; // args[0], low 32 bits (little-endian)

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

#[cfg(target_arch = "x86_64")]
const ARCH_ONLY_DENIED: &[libc::c_long] = &[libc::SYS_fork, libc::SYS_vfork];
#[cfg(target_arch = "aarch64")]
const ARCH_ONLY_DENIED: &[libc::c_long] = &[];

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const DENIED: &[libc::c_long] = &[
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pidfd_getfd,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_reboot,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_swapon,
    libc::SYS_swapoff,
];

#[derive(Clone, Copy)]
enum Jump {
    Next,
    To(Label),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Allow,
    Deny,
    NoSys,
    Kill,
    CloneCheck,
    KillCheck,
    TkillCheck,
}

struct Insn {
    code: u16,
    jt: Jump,
    jf: Jump,
    k: u32,
    label: Option<Label>,
    /// `k` is the sandboxed pid (or its negation), patched in the child.
    pid: PidSlot,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PidSlot {
    None,
    Pid,
    NegPid,
}

/// A compiled filter whose pid slots are filled in by [`Filter::install`] in the child.
pub(crate) struct Filter {
    program: Vec<SockFilter>,
    pid_slots: Vec<(usize, PidSlot)>,
}

impl Filter {
    /// The filter for this architecture, `None` where unsupported.
    pub(crate) fn build() -> Option<Filter> {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            Some(compile(program()))
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            None
        }
    }

    /// Installs the filter on the calling process. Runs in the forked child before `exec`:
    /// async-signal-safe (no allocation, only `getpid` and `prctl`). Requires no_new_privs.
    pub(crate) fn install(&mut self) -> std::io::Result<()> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        for (index, slot) in &self.pid_slots {
            self.program[*index].k = match slot {
                PidSlot::NegPid => pid.wrapping_neg(),
                _ => pid,
            };
        }
        let fprog = SockFprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr(),
        };
        // SAFETY: `fprog` points at a valid BPF program that outlives the call.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const SockFprog as libc::c_ulong,
                0,
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

fn insn(code: u16, k: u32, jt: Jump, jf: Jump) -> Insn {
    Insn {
        code,
        jt,
        jf,
        k,
        label: None,
        pid: PidSlot::None,
    }
}

fn labelled(label: Label, mut instruction: Insn) -> Insn {
    instruction.label = Some(label);
    instruction
}

fn pid_compare(slot: PidSlot, jt: Jump, jf: Jump) -> Insn {
    let mut instruction = insn(BPF_JEQ_K, 0, jt, jf);
    instruction.pid = slot;
    instruction
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn program() -> Vec<Insn> {
    use Jump::{Next, To};
    let mut p = vec![
        insn(BPF_LD_W_ABS, OFFSET_ARCH, Next, Next),
        insn(BPF_JEQ_K, AUDIT_ARCH, Next, To(Label::Kill)),
        insn(BPF_LD_W_ABS, OFFSET_NR, Next, Next),
    ];
    if cfg!(target_arch = "x86_64") {
        // x32 ABI syscall numbers have bit 30 set.
        p.push(insn(BPF_JGE_K, 0x4000_0000, To(Label::Kill), Next));
    }
    for nr in DENIED.iter().chain(ARCH_ONLY_DENIED) {
        p.push(insn(BPF_JEQ_K, *nr as u32, To(Label::Deny), Next));
    }
    p.extend([
        insn(BPF_JEQ_K, libc::SYS_clone3 as u32, To(Label::NoSys), Next),
        insn(
            BPF_JEQ_K,
            libc::SYS_clone as u32,
            To(Label::CloneCheck),
            Next,
        ),
        insn(BPF_JEQ_K, libc::SYS_kill as u32, To(Label::KillCheck), Next),
        insn(
            BPF_JEQ_K,
            libc::SYS_tkill as u32,
            To(Label::TkillCheck),
            Next,
        ),
        insn(
            BPF_JEQ_K,
            libc::SYS_tgkill as u32,
            To(Label::TkillCheck),
            Next,
        ),
        insn(BPF_RET_K, RET_ALLOW, Next, Next),
        labelled(
            Label::CloneCheck,
            insn(BPF_LD_W_ABS, OFFSET_ARG0_LOW, Next, Next),
        ),
        insn(
            BPF_JSET_K,
            libc::CLONE_THREAD as u32,
            To(Label::Allow),
            To(Label::Deny),
        ),
        labelled(
            Label::KillCheck,
            insn(BPF_LD_W_ABS, OFFSET_ARG0_LOW, Next, Next),
        ),
        pid_compare(PidSlot::Pid, To(Label::Allow), Next),
        pid_compare(PidSlot::NegPid, To(Label::Allow), Next),
        insn(BPF_JEQ_K, 0, To(Label::Allow), To(Label::Deny)),
        labelled(
            Label::TkillCheck,
            insn(BPF_LD_W_ABS, OFFSET_ARG0_LOW, Next, Next),
        ),
        pid_compare(PidSlot::Pid, To(Label::Allow), To(Label::Deny)),
        labelled(Label::Allow, insn(BPF_RET_K, RET_ALLOW, Next, Next)),
        labelled(
            Label::Deny,
            insn(BPF_RET_K, RET_ERRNO | libc::EPERM as u32, Next, Next),
        ),
        labelled(
            Label::NoSys,
            insn(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32, Next, Next),
        ),
        labelled(Label::Kill, insn(BPF_RET_K, RET_KILL_PROCESS, Next, Next)),
    ]);
    p
}

fn compile(instructions: Vec<Insn>) -> Filter {
    let position = |label: Label| {
        instructions
            .iter()
            .position(|instruction| instruction.label == Some(label))
            .expect("every jump target label is defined")
    };
    let offset = |from: usize, jump: Jump| -> u8 {
        match jump {
            Jump::Next => 0,
            Jump::To(label) => {
                let distance = position(label) - from - 1;
                u8::try_from(distance).expect("seccomp jump fits in 8 bits")
            }
        }
    };
    let mut pid_slots = Vec::new();
    let program = instructions
        .iter()
        .enumerate()
        .map(|(index, instruction)| {
            if instruction.pid != PidSlot::None {
                pid_slots.push((index, instruction.pid));
            }
            SockFilter {
                code: instruction.code,
                jt: offset(index, instruction.jt),
                jf: offset(index, instruction.jf),
                k: instruction.k,
            }
        })
        .collect();
    Filter { program, pid_slots }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_with_forward_jumps_only() {
        let Some(filter) = Filter::build() else {
            eprintln!("skip: seccomp filter unsupported on this architecture");
            return;
        };
        assert!(filter.program.len() < 100);
        assert_eq!(filter.pid_slots.len(), 3);
        let last = filter.program.last().unwrap();
        assert_eq!((last.code, last.k), (BPF_RET_K, RET_KILL_PROCESS));
    }
}
