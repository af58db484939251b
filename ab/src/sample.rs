//! A small comparison for the unit tests of the tally, the table and the
//! page: the heartbeat method wrong once through its ownership ranges (on a
//! flow the legacy method got wrong the same way, so no disagreement shows
//! it), right once through the load-balancer fallback, and once left
//! incomplete; the legacy method wrong twice.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use flowattr_model::{AttributionSource, Initiator, UnattributedReason, Workload};

use crate::{AttributionPath, Compared, Dependencies, Outcome, Report, Tally, Truth};

pub(crate) fn w(id: &str, app: &str) -> Arc<Workload> {
    Arc::new(Workload {
        app: Some(app.into()),
        ..Workload::with_id(id)
    })
}

/// Real owners by remote endpoint.
pub(crate) struct Owners(pub HashMap<SocketAddr, &'static str>);

impl Truth for Owners {
    fn owner(&self, record: &Compared) -> Option<&str> {
        self.0.get(&record.remote).copied()
    }

    fn depends(&self, _: &str, _: &str) -> Option<bool> {
        None
    }
}

/// A gateway's flow at second `s` to `remote`, as both methods answered.
pub(crate) fn flow(
    s: u64,
    remote: &str,
    heartbeat: Outcome,
    path: Option<AttributionPath>,
    legacy: Outcome,
) -> Compared {
    Compared {
        start_ns: s * 1_000_000_000,
        local: Some(w("gw-1", "gateway")),
        local_endpoint: Some("10.1.0.1:5000".parse().unwrap()),
        remote: remote.parse().unwrap(),
        initiator: Initiator::Local,
        heartbeat,
        heartbeat_path: path,
        legacy,
    }
}

/// The truth the sample is judged by: owners, and the gateway depending on
/// api and auth, api on db.
pub(crate) fn truth() -> (Owners, Dependencies) {
    let owners = [("10.0.0.7:443", "api-1"), ("10.0.0.8:443", "api-2")]
        .into_iter()
        .map(|(r, o)| (r.parse().unwrap(), o))
        .collect();
    let deps = "[services]\ngateway = [\"api\", \"auth\"]\napi = [\"db\"]\n";
    (Owners(owners), Dependencies::parse(deps).unwrap())
}

pub(crate) fn tally() -> Tally {
    let truth = truth();
    let ranges = Some(AttributionPath::new(AttributionSource::Heartbeat, ""));
    let lb = Some(AttributionPath::new(
        AttributionSource::Resolver,
        "sonar-legacy",
    ));
    let batch = Outcome::Attributed(w("batch-7", "batch"));
    let mut t = Tally::new("sonar-legacy");
    for record in [
        flow(
            100,
            "10.0.0.8:443",
            Outcome::Attributed(w("api-2", "api")),
            lb,
            Outcome::Attributed(w("db-3", "db")),
        ),
        flow(110, "10.0.0.7:443", batch.clone(), ranges, batch),
        flow(
            120,
            "10.0.0.9:443",
            Outcome::Unattributed(UnattributedReason::Incomplete),
            None,
            Outcome::Unattributed(UnattributedReason::NotFound),
        ),
    ] {
        t.add(&record, &truth);
    }
    t
}

pub(crate) fn report() -> Report {
    tally().report(Some("gateway"), &truth())
}
