//! The drop-in directory: each plugin is `NAME.wasm` beside `NAME.toml`.
//!
//! [`PluginDirectory::reload`] reconciles what is loaded with what is on disk:
//! new and changed plugins are validated in full before they replace anything;
//! a plugin that fails validation is refused with a message naming the file and
//! the field, and the version already running (if any) keeps running; plugins
//! whose files are gone are unloaded. Calls in flight keep the `Arc<Plugin>`
//! they started with, so a swap never loses a call.
//!
//! The directory and every plugin file (`NAME.toml`, `NAME.wasm`, and the
//! optional signature `NAME.wasm.sig`) must be owned by this process's user
//! or root and writable by no one else: whoever can write them chooses the
//! code the host runs and what it may read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::counters::Counters;
use crate::engine::Runtime;
use crate::manifest::{Manifest, PluginKind};
use crate::plugin::{LoadError, Plugin, sha256_hex};
use crate::trust::{Owners, check_path};

/// A plugin that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub name: String,
    /// The file the problem is in.
    pub file: PathBuf,
    pub reason: String,
    /// Whether a previous version of the plugin is still running.
    pub kept_previous: bool,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)?;
        if self.kept_previous {
            write!(f, " (the previous version keeps running)")?;
        }
        Ok(())
    }
}

/// What one [`PluginDirectory::reload`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    pub refused: Vec<Refusal>,
}

/// What one reload found for one plugin name.
enum Outcome {
    /// The same files as the loaded version.
    Unchanged,
    /// The same files as a version already refused.
    StillRefused,
    Loaded(Entry),
    /// File, reason, and the version refused if its files could be read.
    Refused((PathBuf, String, Option<Fingerprint>)),
}

/// Manifest text, component hash and signature: what a version of a plugin is.
type Fingerprint = (String, String, Option<Vec<u8>>);

struct Entry {
    plugin: Arc<Plugin>,
    /// The version it was loaded from.
    fingerprint: Fingerprint,
}

struct Refused {
    refusal: Refusal,
    /// The version refused, so an unchanged one is not validated again.
    fingerprint: Option<Fingerprint>,
}

#[derive(Default)]
struct State {
    loaded: BTreeMap<String, Entry>,
    refused: BTreeMap<String, Refused>,
    counters: BTreeMap<String, Arc<Counters>>,
}

/// The plugins of one drop-in directory.
pub struct PluginDirectory {
    runtime: Runtime,
    dir: PathBuf,
    state: RwLock<State>,
    reloading: Mutex<()>,
}

/// What is on disk for one name.
struct OnDisk {
    manifest_path: PathBuf,
    wasm_path: PathBuf,
}

impl OnDisk {
    fn signature_path(&self) -> PathBuf {
        self.wasm_path.with_extension("wasm.sig")
    }
}

/// Refuses a drop-in directory others can write, in one sentence.
fn check_dir(dir: &Path) -> std::io::Result<()> {
    check_path(dir, Owners::MeOrRoot).map_err(|why| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "plugin directory {} {why}, so nothing in it is trusted",
                dir.display()
            ),
        )
    })
}

impl PluginDirectory {
    /// Opens `dir` and loads everything valid in it.
    pub fn open(
        runtime: &Runtime,
        dir: impl Into<PathBuf>,
    ) -> std::io::Result<(Self, ReloadReport)> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("plugin directory {} does not exist", dir.display()),
            ));
        }
        check_dir(&dir)?;
        let this = Self {
            runtime: runtime.clone(),
            dir,
            state: RwLock::default(),
            reloading: Mutex::new(()),
        };
        let report = this.reload();
        Ok((this, report))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The loaded plugin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.state
            .read()
            .unwrap()
            .loaded
            .get(name)
            .map(|e| e.plugin.clone())
    }

    /// Every loaded plugin, by name.
    pub fn all(&self) -> Vec<Arc<Plugin>> {
        self.state
            .read()
            .unwrap()
            .loaded
            .values()
            .map(|e| e.plugin.clone())
            .collect()
    }

    /// Loaded plugins of one kind in chain order (manifest `order`, then name).
    pub fn chain(&self, kind: PluginKind) -> Vec<Arc<Plugin>> {
        let mut plugins: Vec<_> = self
            .all()
            .into_iter()
            .filter(|p| p.kind() == kind)
            .collect();
        plugins.sort_by(|a, b| (a.manifest().order, a.name()).cmp(&(b.manifest().order, b.name())));
        plugins
    }

    /// Plugins currently refused, by name.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.state
            .read()
            .unwrap()
            .refused
            .values()
            .map(|r| r.refusal.clone())
            .collect()
    }

    /// Reconciles the loaded set with the directory's contents.
    pub fn reload(&self) -> ReloadReport {
        let _one_at_a_time = self.reloading.lock().unwrap();
        let mut report = ReloadReport::default();
        let on_disk = match self.scan(&mut report) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "Cannot read the plugin directory; keeping what is loaded.");
                return report;
            }
        };

        let mut loaded_now: BTreeMap<String, Entry> = BTreeMap::new();
        let mut refused_now: BTreeMap<String, Refused> = BTreeMap::new();
        for (name, files) in on_disk {
            let (previous, refused_before) = {
                let state = self.state.read().unwrap();
                let previous = state
                    .loaded
                    .get(&name)
                    .map(|e| (e.plugin.clone(), e.fingerprint.clone()));
                let refused_before = state.refused.get(&name).and_then(|r| r.fingerprint.clone());
                (previous, refused_before)
            };
            let outcome = match read_files(&files) {
                Err((file, reason)) => Outcome::Refused((file, reason, None)),
                Ok((fp, _)) if previous.as_ref().is_some_and(|(_, f)| *f == fp) => {
                    Outcome::Unchanged
                }
                Ok((fp, _)) if refused_before.as_ref() == Some(&fp) => Outcome::StillRefused,
                Ok((fp, wasm)) => {
                    let counters = self
                        .state
                        .write()
                        .unwrap()
                        .counters
                        .entry(name.clone())
                        .or_default()
                        .clone();
                    match load_version(&self.runtime, &name, &files, fp.clone(), &wasm, counters) {
                        Ok(entry) => Outcome::Loaded(entry),
                        Err((file, reason)) => Outcome::Refused((file, reason, Some(fp))),
                    }
                }
            };
            match outcome {
                Outcome::Unchanged => {
                    let (plugin, fingerprint) = previous.expect("unchanged implies loaded");
                    report.unchanged.push(name.clone());
                    loaded_now.insert(
                        name,
                        Entry {
                            plugin,
                            fingerprint,
                        },
                    );
                }
                Outcome::StillRefused => {
                    // The same files as last time: keep the refusal (and any
                    // previous version) without validating or logging again.
                    if let Some((plugin, fingerprint)) = previous {
                        loaded_now.insert(
                            name.clone(),
                            Entry {
                                plugin,
                                fingerprint,
                            },
                        );
                    }
                    if let Some(r) = self.state.read().unwrap().refused.get(&name) {
                        let refused = Refused {
                            refusal: r.refusal.clone(),
                            fingerprint: r.fingerprint.clone(),
                        };
                        refused_now.insert(name, refused);
                    }
                }
                Outcome::Loaded(entry) => {
                    if previous.is_some() {
                        tracing::info!(plugin = %name, sha256 = entry.plugin.sha256(), "Replaced plugin.");
                        report.replaced.push(name.clone());
                    } else {
                        tracing::info!(plugin = %name, kind = %entry.plugin.kind(), sha256 = entry.plugin.sha256(), "Loaded plugin.");
                        report.added.push(name.clone());
                    }
                    loaded_now.insert(name, entry);
                }
                Outcome::Refused((file, reason, fingerprint)) => {
                    let kept_previous = previous.is_some();
                    let refusal = Refusal {
                        name: name.clone(),
                        file,
                        reason,
                        kept_previous,
                    };
                    tracing::warn!(plugin = %name, problem = %refusal, "Refused plugin.");
                    if let Some((plugin, fingerprint)) = previous {
                        loaded_now.insert(
                            name.clone(),
                            Entry {
                                plugin,
                                fingerprint,
                            },
                        );
                    }
                    refused_now.insert(
                        name,
                        Refused {
                            refusal,
                            fingerprint,
                        },
                    );
                }
            }
        }
        for r in std::mem::take(&mut report.refused) {
            refused_now.insert(
                r.name.clone(),
                Refused {
                    refusal: r,
                    fingerprint: None,
                },
            );
        }
        report.refused = refused_now.values().map(|r| r.refusal.clone()).collect();

        let mut state = self.state.write().unwrap();
        for name in state.loaded.keys() {
            if !loaded_now.contains_key(name) {
                tracing::info!(plugin = %name, "Unloaded plugin: its files are gone.");
                report.removed.push(name.clone());
            }
        }
        state.loaded = loaded_now;
        state.refused = refused_now;
        report
    }

    /// Lists `NAME.toml` / `NAME.wasm` pairs; lone `.wasm` files are refused.
    fn scan(&self, report: &mut ReloadReport) -> std::io::Result<BTreeMap<String, OnDisk>> {
        check_dir(&self.dir)?;
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let (Some(stem), Some(ext)) =
                (path.file_stem().and_then(|s| s.to_str()), path.extension())
            else {
                continue;
            };
            if stem.starts_with('.') {
                continue;
            }
            if ext == "toml" {
                found.insert(
                    stem.to_owned(),
                    OnDisk {
                        manifest_path: path.clone(),
                        wasm_path: path.with_extension("wasm"),
                    },
                );
            } else if ext == "wasm" && !path.with_extension("toml").exists() {
                report.refused.push(Refusal {
                    name: stem.to_owned(),
                    file: path.clone(),
                    reason: format!("has no manifest: expected {stem}.toml beside it"),
                    kept_previous: false,
                });
            }
        }
        Ok(found)
    }
}

/// Validates and loads the plugin whose manifest is `manifest_path` (its
/// component is the `.wasm` beside it), outside any directory: what
/// `flowattr plugin check FILE` does.
pub fn load_plugin_files(runtime: &Runtime, manifest_path: &Path) -> Result<Plugin, Refusal> {
    let manifest_path = manifest_path.with_extension("toml");
    let name = manifest_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_owned();
    let files = OnDisk {
        wasm_path: manifest_path.with_extension("wasm"),
        manifest_path,
    };
    read_files(&files)
        .and_then(|(fingerprint, wasm)| {
            load_version(runtime, &name, &files, fingerprint, &wasm, Arc::default())
        })
        .map(|entry| Arc::into_inner(entry.plugin).expect("not shared yet"))
        .map_err(|(file, reason)| Refusal {
            name,
            file,
            reason,
            kept_previous: false,
        })
}

/// Reads a plugin's files (each only if no one else can write it) and
/// fingerprints them.
fn read_files(files: &OnDisk) -> Result<(Fingerprint, Vec<u8>), (PathBuf, String)> {
    let trusted = |path: &Path| {
        check_path(path, Owners::MeOrRoot).map_err(|why| {
            (
                path.to_owned(),
                format!("{why}; a plugin file must be writable only by its owner"),
            )
        })
    };
    trusted(&files.manifest_path)?;
    let manifest_text = std::fs::read_to_string(&files.manifest_path)
        .map_err(|e| (files.manifest_path.clone(), format!("cannot read: {e}")))?;
    trusted(&files.wasm_path)?;
    let wasm = std::fs::read(&files.wasm_path)
        .map_err(|e| (files.wasm_path.clone(), format!("cannot read: {e}")))?;
    let signature_path = files.signature_path();
    let signature = if signature_path.exists() {
        trusted(&signature_path)?;
        Some(
            std::fs::read(&signature_path)
                .map_err(|e| (signature_path.clone(), format!("cannot read: {e}")))?,
        )
    } else {
        None
    };
    let sha256 = sha256_hex(&wasm);
    Ok(((manifest_text, sha256, signature), wasm))
}

/// Validates and loads one version of a plugin.
fn load_version(
    runtime: &Runtime,
    name: &str,
    files: &OnDisk,
    fingerprint: Fingerprint,
    wasm: &[u8],
    counters: Arc<Counters>,
) -> Result<Entry, (PathBuf, String)> {
    let manifest = Manifest::parse(&fingerprint.0)
        .map_err(|e| (files.manifest_path.clone(), e.to_string()))?;
    let manifest_dir = files.manifest_path.parent().unwrap_or(Path::new("."));
    let signature = fingerprint.2.as_deref();
    let plugin = Plugin::load(
        runtime,
        name,
        manifest,
        manifest_dir,
        wasm,
        signature,
        counters,
    )
    .map_err(|e| {
        let file = match e {
            LoadError::Manifest(_) => files.manifest_path.clone(),
            LoadError::Component(_) => files.wasm_path.clone(),
            LoadError::Signature(_) if signature.is_some() => files.signature_path(),
            LoadError::Signature(_) => files.wasm_path.clone(),
        };
        (file, e.to_string())
    })?;
    Ok(Entry {
        plugin: Arc::new(plugin),
        fingerprint,
    })
}

/// Puts a component into the drop-in directory `dir` as `NAME.wasm` beside
/// `NAME.toml`, with the component's sha256 stamped into `manifest`. The
/// component is written first and the manifest last, each by rename, so a
/// watching host never loads a half-written plugin: until the manifest lands
/// the hash does not match and the previous version keeps running.
pub fn install_plugin(
    dir: &Path,
    name: &str,
    wasm: &[u8],
    manifest: &mut Manifest,
    header: &str,
) -> std::io::Result<()> {
    manifest.sha256 = Some(sha256_hex(wasm));
    std::fs::create_dir_all(dir)?;
    write_by_rename(&dir.join(format!("{name}.wasm")), wasm)?;
    let text = format!("{header}{}", manifest.to_toml());
    write_by_rename(&dir.join(format!("{name}.toml")), text.as_bytes())
}

/// Copies plugin `name` from the drop-in directory `from` into `to` as
/// `as_name`, after `edit` has changed its manifest (mode, config, grants).
pub fn copy_plugin(
    from: &Path,
    name: &str,
    to: &Path,
    as_name: &str,
    header: &str,
    edit: impl FnOnce(&mut Manifest) -> Result<(), crate::manifest::FieldError>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let wasm = std::fs::read(from.join(format!("{name}.wasm")))
        .with_context(|| format!("{name}.wasm in {}", from.display()))?;
    let text = std::fs::read_to_string(from.join(format!("{name}.toml")))
        .with_context(|| format!("{name}.toml in {}", from.display()))?;
    let mut manifest = Manifest::parse(&text).with_context(|| format!("{name}.toml"))?;
    edit(&mut manifest).with_context(|| format!("{name}.toml"))?;
    install_plugin(to, as_name, &wasm, &mut manifest, header)
        .with_context(|| format!("installing {as_name} into {}", to.display()))
}

fn write_by_rename(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
