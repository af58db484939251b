//! Guest bindings for the four plugin worlds. The shared `types` and `host`
//! interfaces are generated once (with the identity world) and reused by the
//! others, so one set of conversions serves every kind.

pub mod identity {
    wit_bindgen::generate!({
        path: "../wit",
        world: "identity-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_identity_world",
        runtime_path: "flowattr_sdk::__private::wit_bindgen::rt",
    });
}

pub mod resolver {
    wit_bindgen::generate!({
        path: "../wit",
        world: "resolver-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_resolver_world",
        runtime_path: "flowattr_sdk::__private::wit_bindgen::rt",
        with: {
            "flowattr:plugin/types@0.3.0": flowattr_sdk::__private::bindings::identity::flowattr::plugin::types,
            "flowattr:plugin/host@0.3.0": flowattr_sdk::__private::bindings::identity::flowattr::plugin::host,
        },
    });
}

pub mod policy {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        runtime_path: "flowattr_sdk::__private::wit_bindgen::rt",
        with: {
            "flowattr:plugin/types@0.3.0": flowattr_sdk::__private::bindings::identity::flowattr::plugin::types,
            "flowattr:plugin/host@0.3.0": flowattr_sdk::__private::bindings::identity::flowattr::plugin::host,
        },
    });
}

pub mod sink {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sink-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_sink_world",
        runtime_path: "flowattr_sdk::__private::wit_bindgen::rt",
        with: {
            "flowattr:plugin/types@0.3.0": flowattr_sdk::__private::bindings::identity::flowattr::plugin::types,
            "flowattr:plugin/host@0.3.0": flowattr_sdk::__private::bindings::identity::flowattr::plugin::host,
        },
    });
}
