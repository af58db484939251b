//! `flowattr plugin new NAME --kind KIND`: scaffold a Rust plugin crate that
//! builds, passes its own native test and `flowattr plugin check` as
//! generated: `Cargo.toml` (its own `[workspace]`, `flowattr-sdk` by path),
//! `src/lib.rs` (the kind's trait implemented small but real, with tests),
//! the manifest template `NAME.toml`, and a README saying how to build,
//! test, install and check it.
//!
//! The SDK is found by walking up from the new crate's directory to a
//! flowattr checkout (a directory with `sdk/Cargo.toml` and
//! `wit/worlds.wit`); outside one, `--sdk` names it, else the checkout this
//! binary was built from is used if it is still there. The checkout's
//! `Cargo.lock` is copied so the crate builds with the versions the SDK was
//! tested with (and offline, from the same compiled dependencies).

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// The four plugin kinds, as `--kind` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Identity,
    Resolver,
    Policy,
    Sink,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Identity => "identity",
            Kind::Resolver => "resolver",
            Kind::Policy => "policy",
            Kind::Sink => "sink",
        }
    }

    fn lib_template(self) -> &'static str {
        match self {
            Kind::Identity => include_str!("templates/identity.rs.tmpl"),
            Kind::Resolver => include_str!("templates/resolver.rs.tmpl"),
            Kind::Policy => include_str!("templates/policy.rs.tmpl"),
            Kind::Sink => include_str!("templates/sink.rs.tmpl"),
        }
    }

    /// The manifest's `[config]` table for the template's example.
    fn config(self, name: &str) -> String {
        match self {
            Kind::Identity => format!(
                "addresses = [\"10.1.0.7\"]     # the local addresses this host's workload holds\n\
                 workload = \"{name}-example\"  # the workload's id\n"
            ),
            Kind::Resolver => {
                "[config.static]           # addresses known up front: address = workload id\n\
                 \"10.9.0.1\" = \"dns\"\n"
                    .into()
            }
            Kind::Policy => "drop_remote_ports = [53]  # flows to these remote ports are dropped\n\
                 redact_process = false     # true: blank out pid and cgroup of the flows kept\n"
                .into(),
            Kind::Sink => {
                "header = true             # start each chunk with the column names\n".into()
            }
        }
    }

    fn summary(self) -> &'static str {
        match self {
            Kind::Identity => "attributes the local side of flows from a list of addresses",
            Kind::Resolver => "attributes remote addresses from a stream of address events",
            Kind::Policy => "drops flows to listed remote ports and can redact the process",
            Kind::Sink => "writes attributed flows as CSV",
        }
    }
}

/// Names Cargo or Rust would refuse or confuse as a crate name.
const RESERVED: &[&str] = &[
    "test",
    "std",
    "core",
    "alloc",
    "proc-macro",
    "self",
    "crate",
    "super",
];

/// A plugin name is also its crate name and the file stem in a drop-in
/// directory: lowercase letters, digits and `-`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "{name:?} is not a plugin name: use lowercase letters, digits and single dashes, \
             starting with a letter, at most 64 characters (such as `my-identity`)"
        );
    }
    if RESERVED.contains(&name) {
        bail!("{name:?} is reserved by Rust; pick another plugin name");
    }
    Ok(())
}

/// `my-identity` → `MyIdentity`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|first| first.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The closest ancestor of `dir` that is a flowattr checkout.
fn checkout_above(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join("sdk/Cargo.toml").is_file() && d.join("wit/worlds.wit").is_file())
        .map(Path::to_path_buf)
}

/// `to` relative to `from` (both absolute, no `..`).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// Where the SDK is for a crate at `crate_dir`, and how the README should
/// describe it.
struct SdkPlace {
    /// The path as written in Cargo.toml.
    path: String,
    /// The checkout holding it, if it exists (for Cargo.lock).
    checkout: Option<PathBuf>,
    note: String,
}

fn locate_sdk(crate_dir: &Path, sdk: Option<&Path>) -> anyhow::Result<SdkPlace> {
    if let Some(sdk) = sdk {
        let sdk = std::path::absolute(sdk)?;
        if !sdk.join("Cargo.toml").is_file() {
            bail!(
                "--sdk {}: no Cargo.toml there (give the flowattr checkout's sdk/ directory)",
                sdk.display()
            );
        }
        return Ok(SdkPlace {
            path: sdk.display().to_string(),
            checkout: sdk
                .parent()
                .filter(|c| c.join("wit/worlds.wit").is_file())
                .map(Path::to_path_buf),
            note: format!(
                "`flowattr-sdk` is taken from `{}` (given with `--sdk`).",
                sdk.display()
            ),
        });
    }
    if let Some(checkout) = checkout_above(crate_dir) {
        let path = relative(crate_dir, &checkout.join("sdk"));
        return Ok(SdkPlace {
            path: path.display().to_string(),
            note: format!(
                "`flowattr-sdk` is taken by path from the flowattr checkout this crate lives in \
                 (`{}`). If you move the crate, point `[dependencies] flowattr-sdk` at your \
                 checkout's `sdk/` directory, or a git source.",
                path.display()
            ),
            checkout: Some(checkout),
        });
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Some(checkout) = checkout_above(&built_from.canonicalize().unwrap_or(built_from)) {
        let sdk = checkout.join("sdk");
        return Ok(SdkPlace {
            path: sdk.display().to_string(),
            note: format!(
                "This crate is outside a flowattr checkout, so `flowattr-sdk` is taken from the \
                 checkout `flowattr` was built from (`{}`). Elsewhere, point `[dependencies] \
                 flowattr-sdk` at a checkout's `sdk/` directory (`path = \"…/flowattr/sdk\"`) or \
                 a git source (`git = \"…\"`).",
                sdk.display()
            ),
            checkout: Some(checkout),
        });
    }
    Ok(SdkPlace {
        path: "../flowattr/sdk".into(),
        note: "No flowattr checkout was found: **edit `[dependencies] flowattr-sdk` in \
               Cargo.toml** to point at a checkout's `sdk/` directory (`path = \"…/flowattr/sdk\"`) \
               or a git source before building."
            .into(),
        checkout: None,
    })
}

fn cargo_toml(name: &str, kind: Kind, sdk_path: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
description = "flowattr {kind} plugin: {summary}."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the Wasm component; rlib: the native tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
flowattr-sdk = {{ path = "{sdk_path}" }}
log = "0.4"
serde = {{ version = "1", features = ["derive"] }}

# A workspace of its own: this crate is not a member of any other.
[workspace]

# As flowattr's own plugins: one codegen unit lets LLVM inline across each
# crate that runs in Wasm, and the flags match flowattr's workspace, so a
# shared CARGO_TARGET_DIR reuses what it already built.
[profile.release]
debug = "line-tables-only"
incremental = false
[profile.release.package.flowattr-model]
codegen-units = 1
[profile.release.package.flowattr-sdk]
codegen-units = 1
[profile.release.package.{name}]
codegen-units = 1
"#,
        kind = kind.as_str(),
        summary = kind.summary(),
    )
}

fn manifest(name: &str, kind: Kind) -> String {
    let limits = match kind {
        Kind::Identity | Kind::Policy => "memory_mib = 32\ncall_timeout_ms = 50",
        Kind::Resolver | Kind::Sink => "memory_mib = 64\ncall_timeout_ms = 250",
    };
    format!(
        r#"# {name}: {summary}.
# A template: `flowattr plugin install` stamps sha256 in when it puts the plugin in a drop-in directory.
kind = "{kind}"
wit = "0.3.0"             # the WIT package version the component implements
order = 50                # lower runs first within its kind (ipman is 10, ec2-disk 20)
mode = "active"           # active | shadow (answers recorded, not used)
on_failure = "skip"       # skip | fail-closed

[limits]
{limits}

[capabilities]
# Directories the plugin may read, nothing else: read_dirs = [{{ host = "/run/flowattr/{name}", guest = "/data" }}]
read_dirs = []

[config]
{config}"#,
        kind = kind.as_str(),
        summary = kind.summary(),
        config = kind.config(name),
    )
}

fn readme(name: &str, kind: Kind, note: &str) -> String {
    let lib = name.replace('-', "_");
    let mut out = format!(
        r#"# {name}

A flowattr **{kind}** plugin: {summary}. Generated by
`flowattr plugin new {name} --kind {kind}`; `src/lib.rs` is a small working
plugin to replace with yours, `{name}.toml` its manifest template.

{note}

## Build and test

```sh
rustup target add wasm32-wasip2          # once
cargo test --release                     # the native tests (flowattr_sdk::testing::Harness)
cargo build --release --target wasm32-wasip2
# → target/wasm32-wasip2/release/{lib}.wasm
```

Inside a flowattr checkout, `CARGO_TARGET_DIR=<checkout>/target` reuses
what the checkout already built.

## Install, check, run

```sh
flowattr plugin install target/wasm32-wasip2/release/{lib}.wasm --manifest {name}.toml --dir /tmp/dropin
flowattr plugin check /tmp/dropin
"#,
        kind = kind.as_str(),
        summary = kind.summary(),
    );
    let input = match kind {
        Kind::Identity => {
            r#"{"now_ns": 2000, "queries": [{"local": "10.1.0.7:443", "time_ns": 1000}]}"#
        }
        Kind::Resolver => {
            r#"{"events": [], "queries": [{"address": "10.9.0.1", "time_ns": 1000, "asked_at_ns": 1000}]}"#
        }
        Kind::Policy | Kind::Sink => "",
    };
    if input.is_empty() {
        let _ = writeln!(
            out,
            "flowattr plugin run {name} --dir /tmp/dropin --input flows.json   # {{\"flows\": [...]}}"
        );
    } else {
        let _ = writeln!(out, "echo '{input}' > input.json");
        let _ = writeln!(
            out,
            "flowattr plugin run {name} --dir /tmp/dropin --input input.json"
        );
    }
    out.push_str(
        "```\n\nThe SDK guide (`sdk/README.md` in the flowattr checkout) has the rules \
         every plugin follows.\n",
    );
    out
}

pub fn new(name: &str, kind: Kind, parent: &Path, sdk: Option<&Path>) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let parent = std::path::absolute(parent)
        .with_context(|| format!("cannot resolve {}", parent.display()))?;
    if !parent.is_dir() {
        bail!(
            "{}: no such directory to create the plugin in",
            parent.display()
        );
    }
    let dir = parent.join(name);
    if dir.symlink_metadata().is_ok() {
        bail!(
            "{} already exists: pick another name or --dir, or remove it first",
            dir.display()
        );
    }
    let sdk = locate_sdk(&dir, sdk)?;
    let files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml".into(), cargo_toml(name, kind, &sdk.path)),
        (
            "src/lib.rs".into(),
            kind.lib_template()
                .replace("{{name}}", name)
                .replace("{{Type}}", &type_name(name)),
        ),
        (format!("{name}.toml").into(), manifest(name, kind)),
        ("README.md".into(), readme(name, kind, &sdk.note)),
        (".gitignore".into(), "/target\n".into()),
    ];
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::create_dir(dir.join("src"))?;
    for (file, text) in &files {
        std::fs::write(dir.join(file), text)
            .with_context(|| format!("cannot write {}", dir.join(file).display()))?;
    }
    // The versions the SDK was built and tested with; Cargo drops what this
    // crate does not use.
    if let Some(lock) = sdk
        .checkout
        .map(|c| c.join("Cargo.lock"))
        .filter(|l| l.is_file())
    {
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("cannot copy {}", lock.display()))?;
    }
    println!(
        "created {} ({} plugin {name})",
        dir.display(),
        kind.as_str()
    );
    println!(
        "  cd {} && cargo test --release && cargo build --release --target wasm32-wasip2",
        dir.display()
    );
    println!(
        "  flowattr plugin install target/wasm32-wasip2/release/{}.wasm --manifest {name}.toml --dir DROP-IN-DIR",
        name.replace('-', "_")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["my-identity", "a", "geo2-sink"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "My",
            "1st",
            "a_b",
            "a--b",
            "a-",
            "x/y",
            "test",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("my-geo2-sink"), "MyGeo2Sink");
    }

    #[test]
    fn relative_paths_walk_up_then_down() {
        assert_eq!(
            relative(
                Path::new("/w/flowattr/target/x/p"),
                Path::new("/w/flowattr/sdk")
            ),
            PathBuf::from("../../../sdk")
        );
    }
}
