//! The kernel struct offsets the programs need, resolved from the running
//! kernel's BTF.

use flowattr_host_ebpf::KernelOffsets;

use super::btf::{Btf, BtfError, Field};

/// A field the programs need is missing or not the size they read.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("kernel field {path} is {found} bytes, the capture programs read {expected}")]
    UnexpectedSize {
        path: String,
        expected: u32,
        found: u32,
    },
}

/// Resolves every field of [`KernelOffsets`], checking each has the size the
/// programs read.
pub fn resolve(btf: &Btf) -> Result<KernelOffsets, OffsetError> {
    let field = |path: &str, size: u32| -> Result<u32, OffsetError> {
        let Field {
            offset,
            size: found,
        } = btf.field(path)?;
        if found != size {
            return Err(OffsetError::UnexpectedSize {
                path: path.to_owned(),
                expected: size,
                found,
            });
        }
        Ok(offset)
    };
    Ok(KernelOffsets {
        tcp_bytes_received: field("tcp_sock.bytes_received", 8)?,
        tcp_bytes_acked: field("tcp_sock.bytes_acked", 8)?,
        tcp_segs_in: field("tcp_sock.segs_in", 4)?,
        tcp_segs_out: field("tcp_sock.segs_out", 4)?,
        tcp_total_retrans: field("tcp_sock.total_retrans", 4)?,
        tcp_srtt_us: field("tcp_sock.srtt_us", 4)?,
        sock_err: field("sock.sk_err", 4)?,
        sock_net: field("sock.__sk_common.skc_net", 8)?,
        net_ns_inum: field("net.ns.inum", 4)?,
        sock_flags: field("sock.__sk_common.skc_flags", 8)?,
        sock_protocol: field("sock.sk_protocol", 2)?,
        skc_family: field("sock.__sk_common.skc_family", 2)?,
        inet_sport: field("inet_sock.inet_sport", 2)?,
        skc_dport: field("sock.__sk_common.skc_dport", 2)?,
        inet_saddr: field("inet_sock.inet_saddr", 4)?,
        skc_daddr: field("sock.__sk_common.skc_daddr", 4)?,
        skc_v6_rcv_saddr: field("sock.__sk_common.skc_v6_rcv_saddr", 16)?,
        skc_v6_daddr: field("sock.__sk_common.skc_v6_daddr", 16)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_offset_on_this_kernel() {
        let btf = Btf::from_vmlinux().expect("this machine has BTF");
        let o = resolve(&btf).expect("all fields resolve");
        // sk_common is the first member of sock, itself first in tcp_sock,
        // so socket fields sit before the TCP ones.
        assert!(o.sock_net < o.sock_err, "{o:?}");
        assert!(o.sock_err < o.tcp_bytes_acked, "{o:?}");
        assert_ne!(o.tcp_bytes_acked, o.tcp_bytes_received);
        assert!(o.net_ns_inum > 0);
    }
}
