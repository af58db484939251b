//! The instance identity document: parsing, validation and lookup.
//!
//! The document is AWS's instance identity document (camelCase JSON) plus a few
//! fields of ours (`app`, `cluster`, `stack`, `autoScalingGroup`). Fields this
//! plugin does not use are ignored, because AWS adds fields over time. Every
//! field it does use is validated before the document is accepted, so a bad
//! document is refused as a whole rather than half-used. Everything here is
//! pure: the file is read by [`crate::watch`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use std::sync::Arc;

use flowattr_sdk::Workload;
use serde::Deserialize;

use flowattr_sdk::source::Source;

/// The document as written on disk (only the fields this plugin reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    instance_id: String,
    account_id: String,
    region: String,
    private_ip: String,
    pending_time: Option<String>,
    availability_zone: Option<String>,
    instance_type: Option<String>,
    ipv6_addresses: Option<Vec<String>>,
    public_ip: Option<String>,
    app: Option<String>,
    cluster: Option<String>,
    stack: Option<String>,
    auto_scaling_group: Option<String>,
}

/// A validated identity: the instance's workload, its addresses and since
/// when it has existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The instance as a workload (id = instance id).
    pub workload: Arc<Workload>,
    /// Every address of the instance, canonical (no IPv4-mapped IPv6).
    pub addresses: Vec<IpAddr>,
    /// When the instance was launched (`pendingTime`), in Unix nanoseconds.
    pub pending_ns: Option<u64>,
}

/// What the document says about one local address at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The address is the instance's, and the instance existed from `since_ns`.
    Mine { since_ns: u64 },
    /// The address is the instance's, but the time is before its launch.
    BeforeLaunch,
    /// Not one of the instance's addresses.
    NotMine,
}

impl Identity {
    /// Answers for `address` at `time_ns`.
    pub fn lookup(&self, address: IpAddr, time_ns: u64) -> Lookup {
        if !self.addresses.contains(&address.to_canonical()) {
            return Lookup::NotMine;
        }
        match self.pending_ns {
            Some(pending) if time_ns < pending => Lookup::BeforeLaunch,
            pending => Lookup::Mine {
                since_ns: pending.unwrap_or(0),
            },
        }
    }
}

impl Source for Identity {
    const WHAT: &'static str = "identity document";

    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawDocument = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Identity::try_from(raw)
    }

    fn summary(&self) -> String {
        let addresses: Vec<String> = self.addresses.iter().map(IpAddr::to_string).collect();
        format!(
            "instance {} with {}",
            self.workload.id,
            addresses.join(", ")
        )
    }
}

impl TryFrom<RawDocument> for Identity {
    type Error = String;

    fn try_from(raw: RawDocument) -> Result<Self, String> {
        for (field, value) in [
            ("instanceId", &raw.instance_id),
            ("accountId", &raw.account_id),
            ("region", &raw.region),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{field} is empty"));
            }
        }
        let mut addresses = vec![address("privateIp", &raw.private_ip)?];
        if let Some(public) = &raw.public_ip {
            addresses.push(address("publicIp", public)?);
        }
        for v6 in raw.ipv6_addresses.iter().flatten() {
            addresses.push(address("ipv6Addresses", v6)?);
        }
        let pending_ns = raw.pending_time.as_deref().map(rfc3339_ns).transpose()?;

        let mut labels = BTreeMap::new();
        for (key, value) in [
            ("asg", raw.auto_scaling_group),
            ("availability-zone", raw.availability_zone),
            ("instance-type", raw.instance_type),
        ] {
            if let Some(value) = value {
                labels.insert(key.to_owned(), value);
            }
        }
        let workload = Workload {
            id: raw.instance_id,
            app: raw.app,
            cluster: raw.cluster,
            stack: raw.stack,
            account: Some(raw.account_id),
            region: Some(raw.region),
            labels,
        };
        Ok(Identity {
            workload: Arc::new(workload),
            addresses,
            pending_ns,
        })
    }
}

fn address(field: &str, text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map(|a| a.to_canonical())
        .map_err(|_| format!("{field} {text:?} is not an IP address"))
}

/// Parses an RFC 3339 UTC timestamp (`2024-05-01T12:00:00Z`, fractions
/// allowed) into Unix nanoseconds.
fn rfc3339_ns(text: &str) -> Result<u64, String> {
    let bad = |why: &dyn std::fmt::Display| format!("pendingTime {text:?} is not usable: {why}");
    let t = humantime::parse_rfc3339(text).map_err(|e| bad(&e))?;
    let since_epoch = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad(&"before 1970"))?;
    u64::try_from(since_epoch.as_nanos()).map_err(|_| bad(&"too far in the future"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "instanceId": "i-0abc", "accountId": "123456789012", "region": "us-east-1",
        "privateIp": "10.0.0.5", "publicIp": "203.0.113.7",
        "ipv6Addresses": ["2600:1f18::5"], "pendingTime": "2024-05-01T12:00:00Z",
        "availabilityZone": "us-east-1a", "instanceType": "m5.large",
        "app": "web", "cluster": "web-prod", "stack": "prod", "autoScalingGroup": "web-prod-v042",
        "kernelId": null, "architecture": "x86_64", "devpayProductCodes": null
    }"#;

    /// 2024-05-01T12:00:00Z in Unix nanoseconds.
    const PENDING_NS: u64 = 1_714_564_800_000_000_000;

    fn parse(json: &str) -> Result<Identity, String> {
        Identity::parse(json.as_bytes())
    }

    #[test]
    fn full_document_maps_to_workload_labels_and_addresses() {
        let id = parse(FULL).unwrap();
        assert_eq!(id.workload.id, "i-0abc");
        assert_eq!(id.workload.app.as_deref(), Some("web"));
        assert_eq!(id.workload.cluster.as_deref(), Some("web-prod"));
        assert_eq!(id.workload.stack.as_deref(), Some("prod"));
        assert_eq!(id.workload.account.as_deref(), Some("123456789012"));
        assert_eq!(id.workload.region.as_deref(), Some("us-east-1"));
        let labels: Vec<(&str, &str)> = id
            .workload
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("asg", "web-prod-v042"),
                ("availability-zone", "us-east-1a"),
                ("instance-type", "m5.large")
            ]
        );
        let want: Vec<IpAddr> = ["10.0.0.5", "203.0.113.7", "2600:1f18::5"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(id.addresses, want);
        assert_eq!(id.pending_ns, Some(PENDING_NS));
    }

    #[test]
    fn minimal_document_is_enough() {
        let id = parse(
            r#"{"instanceId": "i-1", "accountId": "1", "region": "eu-west-1", "privateIp": "10.1.2.3"}"#,
        )
        .unwrap();
        assert_eq!(id.addresses, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(id.pending_ns, None);
        assert!(id.workload.labels.is_empty());
        assert_eq!(id.workload.app, None);
    }

    #[test]
    fn fractional_pending_time_is_exact() {
        let id = parse(
            r#"{"instanceId": "i-1", "accountId": "1", "region": "r", "privateIp": "10.1.2.3",
                "pendingTime": "2024-05-01T12:00:00.000000250Z"}"#,
        )
        .unwrap();
        assert_eq!(id.pending_ns, Some(PENDING_NS + 250));
    }

    #[test]
    fn lookup_respects_addresses_and_launch_time() {
        let id = parse(FULL).unwrap();
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        let v6: IpAddr = "2600:1f18::5".parse().unwrap();
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        let mine = Lookup::Mine {
            since_ns: PENDING_NS,
        };
        assert_eq!(id.lookup(v4, PENDING_NS), mine);
        assert_eq!(id.lookup(mapped, PENDING_NS + 1), mine);
        assert_eq!(id.lookup(v6, PENDING_NS + 1), mine);
        assert_eq!(id.lookup(v4, PENDING_NS - 1), Lookup::BeforeLaunch);
        assert_eq!(id.lookup(other, PENDING_NS + 1), Lookup::NotMine);
    }

    #[test]
    fn lookup_without_pending_time_is_valid_from_zero() {
        let id = parse(
            r#"{"instanceId": "i-1", "accountId": "1", "region": "r", "privateIp": "10.1.2.3"}"#,
        )
        .unwrap();
        assert_eq!(
            id.lookup("10.1.2.3".parse().unwrap(), 0),
            Lookup::Mine { since_ns: 0 }
        );
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        let base = r#""instanceId": "i-1", "accountId": "1", "region": "r""#;
        let cases = [
            (String::from("{not json"), "key must be a string"),
            (
                String::from(r#"{"accountId": "1", "region": "r", "privateIp": "10.0.0.1"}"#),
                "instanceId",
            ),
            (format!(r#"{{{base}}}"#), "privateIp"),
            (
                format!(r#"{{{base}, "privateIp": "10.0.0.300"}}"#),
                "privateIp \"10.0.0.300\"",
            ),
            (
                format!(r#"{{{base}, "privateIp": "10.0.0.1", "publicIp": "x"}}"#),
                "publicIp",
            ),
            (
                format!(r#"{{{base}, "privateIp": "10.0.0.1", "ipv6Addresses": ["fd00::g"]}}"#),
                "ipv6Addresses",
            ),
            (
                format!(r#"{{{base}, "privateIp": "10.0.0.1", "pendingTime": "yesterday"}}"#),
                "pendingTime",
            ),
            (
                format!(
                    r#"{{{base}, "privateIp": "10.0.0.1", "pendingTime": "1969-12-31T23:59:59Z"}}"#
                ),
                "pendingTime \"1969-12-31T23:59:59Z\" is not usable",
            ),
            (
                String::from(
                    r#"{"instanceId": "", "accountId": "1", "region": "r", "privateIp": "10.0.0.1"}"#,
                ),
                "instanceId is empty",
            ),
            (
                String::from(
                    r#"{"instanceId": "i-1", "accountId": 1, "region": "r", "privateIp": "10.0.0.1"}"#,
                ),
                "invalid type",
            ),
        ];
        for (json, want) in cases {
            let err = parse(&json).expect_err(&json);
            assert!(
                err.contains(want),
                "{json}: {err:?} should mention {want:?}"
            );
        }
    }
}
