//! Finding the checkout's bundled files (the drop-in directory scripts/build
//! fills, the scenarios) from wherever a command is run.

use std::path::{Path, PathBuf};

/// `relative` under the first of: the current directory, the checkout the
/// running executable sits in (`target/release/flowattr` → `../..`), the
/// checkout it was built from. Where none has it, `relative` as given, so
/// the error names the path the user would expect.
pub fn path(relative: &str) -> PathBuf {
    candidates(relative)
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(relative))
}

fn candidates(relative: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from(".")];
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/flowattr, or target/<profile>/deps/… in tests.
        roots.extend(exe.ancestors().skip(3).take(2).map(Path::to_path_buf));
    }
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    roots.into_iter().map(|r| r.join(relative)).collect()
}

/// Fails, saying what to pass, when `dir` (given with `flag`) has no `file`.
pub fn require(dir: &Path, file: &str, flag: &str) -> anyhow::Result<()> {
    if dir.join(file).is_file() {
        return Ok(());
    }
    anyhow::bail!(
        "no {file} in {}: pass {flag} DIR, the drop-in directory scripts/build fills \
         (plugins/ of a flowattr checkout, after scripts/build)",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_checkouts_plugins_from_another_directory() {
        let found = path("scenarios/default.toml");
        assert!(found.is_file(), "{}", found.display());
        assert_eq!(path("no/such/file"), PathBuf::from("no/such/file"));
    }

    #[test]
    fn a_directory_without_the_plugin_says_what_to_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let e = require(tmp.path(), "sonar-legacy.wasm", "--plugins").unwrap_err();
        assert!(e.to_string().contains("pass --plugins DIR"), "{e}");
    }
}
