//! What the runtime trusts: directories only their owner can write (the
//! compile cache, the drop-in directory and its files), grants only under
//! the host paths the daemon allows, and, when keys are configured, only
//! components signed by one of them.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ring::signature::{ED25519, UnparsedPublicKey};

/// Where grants may point when the daemon's config names no roots, besides
/// the directory that holds the drop-in directory.
pub const DEFAULT_GRANT_ROOTS: [&str; 2] = ["/run/flowattr", "/var/lib/flowattr"];

/// The grant and signature policy of one runtime.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    /// `None`: [`DEFAULT_GRANT_ROOTS`] and the drop-in directory's parent.
    grant_roots: Option<Vec<PathBuf>>,
    /// Ed25519 public keys; empty: signatures are not checked.
    keys: Vec<[u8; 32]>,
}

impl TrustPolicy {
    /// A policy granting only under `grant_roots` (the default when `None`)
    /// and, when `keys` (hex Ed25519 public keys) is not empty, loading only
    /// components with a valid `NAME.wasm.sig` by one of them.
    pub fn new(grant_roots: Option<Vec<PathBuf>>, keys: &[String]) -> anyhow::Result<Self> {
        let keys = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                hex::decode(key.trim())
                    .ok()
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .with_context(|| {
                        format!("signing key {i} is not 64 hex digits (an Ed25519 public key)")
                    })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { grant_roots, keys })
    }

    /// Whether components must be signed.
    pub fn requires_signatures(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The roots grants of plugins in `dropin` may point under.
    pub fn grant_roots(&self, dropin: &Path) -> Vec<PathBuf> {
        match &self.grant_roots {
            Some(roots) => roots.clone(),
            None => {
                let mut roots: Vec<PathBuf> =
                    DEFAULT_GRANT_ROOTS.iter().map(PathBuf::from).collect();
                let dropin = dropin.canonicalize().unwrap_or_else(|_| dropin.to_owned());
                roots.push(match dropin.parent() {
                    Some(parent) if parent.parent().is_some() => parent.to_owned(),
                    _ => dropin,
                });
                roots
            }
        }
    }

    /// The real path of the granted directory `host`, if it lies under one
    /// of the allowed roots once symlinks and `..` are resolved.
    pub fn check_grant(&self, host: &Path, dropin: &Path) -> Result<PathBuf, String> {
        let real = host
            .canonicalize()
            .map_err(|e| format!("{} cannot be resolved: {e}", host.display()))?;
        let roots = self.grant_roots(dropin);
        if roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| real.starts_with(root))
        {
            return Ok(real);
        }
        let roots: Vec<_> = roots.iter().map(|r| r.display().to_string()).collect();
        Err(format!(
            "{} is outside the directories this daemon allows grants under ({}); \
             add it to `plugins.allowed_grant_roots` in the daemon's config",
            real.display(),
            roots.join(", ")
        ))
    }

    /// Checks `wasm` against its detached signature (hex text), when keys are
    /// configured.
    pub fn verify(&self, wasm: &[u8], signature: Option<&[u8]>) -> Result<(), String> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let Some(signature) = signature else {
            return Err(
                "is not signed, and this daemon only loads signed components \
                        (a NAME.wasm.sig beside it by a configured key)"
                    .into(),
            );
        };
        let signature = std::str::from_utf8(signature)
            .ok()
            .and_then(|text| hex::decode(text.trim()).ok())
            .ok_or("has a signature file that is not hex text")?;
        if self.keys.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(wasm, &signature)
                .is_ok()
        }) {
            Ok(())
        } else {
            Err("has a signature that no configured key verifies".into())
        }
    }
}

/// Who may own a trusted path besides the effective user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// The effective user only (the compile cache: native code).
    Me,
    /// The effective user or root (plugin files root installed).
    MeOrRoot,
}

/// Why a path with owner `uid` and permission bits `mode` is not trusted by
/// a process running as `euid`, if it is not.
pub fn judge(uid: u32, mode: u32, euid: u32, owners: Owners) -> Option<String> {
    let owner_ok = uid == euid || (owners == Owners::MeOrRoot && uid == 0);
    if !owner_ok {
        return Some(format!(
            "is owned by uid {uid}, not by this process's user (uid {euid}){}",
            if owners == Owners::MeOrRoot {
                " or root"
            } else {
                ""
            }
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "is writable by {} (mode {:o}); remove that with chmod go-w",
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    None
}

/// [`judge`] on `path` as it is on disk (symlinks followed).
pub fn check_path(path: &Path, owners: Owners) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be inspected: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match judge(meta.uid(), meta.mode(), euid, owners) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_write_bits_decide() {
        assert_eq!(judge(1000, 0o40755, 1000, Owners::Me), None);
        assert_eq!(judge(0, 0o100644, 1000, Owners::MeOrRoot), None);
        let other = judge(0, 0o40755, 1000, Owners::Me).unwrap();
        assert!(other.contains("owned by uid 0"), "{other}");
        assert!(judge(1001, 0o644, 1000, Owners::MeOrRoot).is_some());
        let group = judge(1000, 0o40775, 1000, Owners::Me).unwrap();
        assert!(
            group.contains("its group") && group.contains("775"),
            "{group}"
        );
        let world = judge(0, 0o41777, 0, Owners::MeOrRoot).unwrap();
        assert!(world.contains("everyone"), "{world}");
    }

    #[test]
    fn keys_must_be_ed25519_public_keys() {
        assert!(TrustPolicy::new(None, &["00".repeat(32)]).is_ok());
        let err = TrustPolicy::new(None, &["abcd".into()]).unwrap_err();
        assert!(err.to_string().contains("signing key 0"), "{err}");
    }

    #[test]
    fn default_roots_are_the_dropin_parent_but_never_the_filesystem_root() {
        let policy = TrustPolicy::default();
        let roots = policy.grant_roots(Path::new("/nonexistent/etc/plugins"));
        assert!(roots.contains(&PathBuf::from("/nonexistent/etc")));
        let roots = policy.grant_roots(Path::new("/nonexistent"));
        assert!(!roots.contains(&PathBuf::from("/")), "{roots:?}");
    }
}
