//! Statistics the kernel keeps per loaded program, read with
//! `BPF_OBJ_GET_INFO_BY_FD` (aya exposes run counts but not these).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya_obj::generated::bpf_prog_info;

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// How many times the kernel skipped running the program because a tracing
/// program was already running on that CPU (BPF's recursion protection: a
/// tracepoint hit in softirq while one of our programs runs in process
/// context). Each skipped run of the state-change program can lose a record.
pub fn recursion_misses(program: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: bpf_prog_info is plain integers; all-zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: (&mut info as *mut bpf_prog_info) as u64,
    };
    // SAFETY: attr points at a live InfoByFd whose `info` points at a
    // bpf_prog_info of the length given; the kernel writes at most that.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoByFd,
            size_of::<InfoByFd>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}
