//! Host bindings for the four plugin worlds. The shared `types` and `host`
//! interfaces are generated once, with the identity world, and reused by the
//! others, so one set of conversions (in `convert`) serves every kind.
//! Exports are called asynchronously so a call can be abandoned at its
//! deadline while the guest waits in WASI ([`crate::Runtime`]); the host's
//! own imports never wait and stay synchronous.

pub mod identity {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "identity-plugin",
        exports: { default: async },
    });
}

pub mod resolver {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "resolver-plugin",
        exports: { default: async },
        with: {
            "flowattr:plugin/types": crate::bindings::identity::flowattr::plugin::types,
            "flowattr:plugin/host": crate::bindings::identity::flowattr::plugin::host,
        },
    });
}

pub mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy-plugin",
        exports: { default: async },
        with: {
            "flowattr:plugin/types": crate::bindings::identity::flowattr::plugin::types,
            "flowattr:plugin/host": crate::bindings::identity::flowattr::plugin::host,
        },
    });
}

pub mod sink {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sink-plugin",
        exports: { default: async },
        with: {
            "flowattr:plugin/types": crate::bindings::identity::flowattr::plugin::types,
            "flowattr:plugin/host": crate::bindings::identity::flowattr::plugin::host,
        },
    });
}

pub use identity::flowattr::plugin::host as wit_host;
pub use identity::flowattr::plugin::types as wit;
