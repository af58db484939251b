//! Writes each target's seeds into `CORPUS/TARGET/seed-N` (the campaign's
//! starting corpus): `fuzz-seeds CORPUS`.

use std::path::{Path, PathBuf};

fn main() -> anyhow::Result<()> {
    let corpus: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: fuzz-seeds CORPUS_DIR"))?
        .into();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for target in flowattr_fuzz::TARGETS {
        let dir = corpus.join(target.name);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in flowattr_fuzz::seeds::of(target.name, &root)
            .iter()
            .enumerate()
        {
            std::fs::write(dir.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}
