//! The cap on what one instance holds open. Every WASI resource (a
//! descriptor, a stream, a pollable) is an entry in the store's table, which
//! refuses entries past [`MAX_RESOURCES`]. Most refusals trap; `open-at` is
//! replaced by a version that hands the guest an error instead, so a plugin
//! that leaks files gets `open` failures it can report, and a host file
//! descriptor per leaked file is all it can ever cost, up to the cap.

use wasmtime::component::{Linker, Resource, ResourceTableError};
use wasmtime_wasi::filesystem::WasiFilesystemView as _;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use crate::sandbox::PluginState;

/// Entries one instance's resource table may hold at once.
pub const MAX_RESOURCES: usize = 256;

/// The WASI interface whose `open-at` is replaced.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `descriptor.open-at` (already linked by WASI) with the capped one.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let opened = state
                    .filesystem()
                    .open_at(fd, path_flags, path, open_flags, flags)
                    .await;
                let result = match opened.map_err(|e| e.downcast()) {
                    Ok(fd) => Ok(fd),
                    Err(Ok(code)) => Err(code),
                    Err(Err(trap))
                        if matches!(
                            trap.downcast_ref::<ResourceTableError>(),
                            Some(ResourceTableError::Full)
                        ) =>
                    {
                        state.note_refused_resource();
                        Err(ErrorCode::InsufficientMemory)
                    }
                    Err(Err(trap)) => return Err(trap),
                };
                Ok((result,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
