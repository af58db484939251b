//! Builds the eBPF programs of `host-ebpf` for `bpfel-unknown-none` with the
//! pinned nightly toolchain (see `scripts/bootstrap`), so the agent can embed
//! them. `AYA_BUILD_SKIP=1` skips this for tools that only read the code.

/// Must match `EBPF_TOOLCHAIN` in `scripts/bootstrap`: bpf-linker links with
/// the LLVM major this nightly uses.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../host-ebpf");
    let programs = aya_build::Package {
        name: "flowattr-host-ebpf",
        root_dir,
        features: &["programs"],
        ..Default::default()
    };
    aya_build::build_ebpf([programs], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}
