//! `flowattr plugin install`: put a built component into a drop-in directory
//! with its manifest, hash stamped in. The component is written first and the
//! manifest last (each by rename), so a watching host never loads a
//! half-written plugin: until the manifest lands, the hash does not match and
//! the previous version keeps running.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use flowattr_plugin_runtime::manifest::Manifest;
use flowattr_plugin_runtime::{install_plugin, sha256_hex};

pub fn install(
    wasm_path: &Path,
    template: &Path,
    dir: &Path,
    name: Option<&str>,
    grants: &[String],
) -> anyhow::Result<ExitCode> {
    let wasm =
        std::fs::read(wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read {}", template.display()))?;
    let mut manifest = Manifest::parse(&text)
        .with_context(|| format!("{} is not a valid manifest", template.display()))?;
    let name = match name {
        Some(n) => n.to_owned(),
        None => template
            .file_stem()
            .and_then(|s| s.to_str())
            .context("template has no file name")?
            .to_owned(),
    };
    for grant in grants {
        let Some((guest, host)) = grant.split_once('=') else {
            bail!("--grant {grant}: expected /guest=host/path");
        };
        manifest
            .grant(guest, host)
            .with_context(|| format!("--grant {grant}"))?;
    }
    for (host, guest) in manifest.resolved_read_dirs(dir) {
        if !host.is_dir() {
            std::fs::create_dir_all(&host)
                .with_context(|| format!("cannot create granted directory {}", host.display()))?;
            eprintln!("created {} (granted to {name} as {guest})", host.display());
        }
    }
    let header = format!(
        "# Installed by `flowattr plugin install` from {}.\n",
        template.display()
    );
    install_plugin(dir, &name, &wasm, &mut manifest, &header)
        .with_context(|| format!("cannot install {name} in {}", dir.display()))?;
    println!(
        "installed {name} ({} plugin, sha256 {}) in {}",
        manifest.kind,
        &sha256_hex(&wasm)[..12],
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
