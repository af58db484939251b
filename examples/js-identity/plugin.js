// js-identity: an identity plugin in JavaScript. On a Google Compute Engine
// VM, attributes the local side of flows to the instance, from its metadata
// document on disk (what `computeMetadata/v1/instance/?recursive=true`
// returns, written to a file the manifest grants). README.md says what it
// answers and how to build it.

import {
  AddressSet, attributed, identityPlugin, unattributed, WatchedFile,
} from '../../sdk/js/flowattr.js';

// The document's fields this plugin uses; others are ignored (Google adds
// fields over time). Throws on anything it cannot use, so a bad document is
// refused whole, never half-used.
function parseInstance(bytes) {
  const doc = JSON.parse(new TextDecoder().decode(bytes));
  const text = (key) => {
    if (typeof doc[key] !== 'string' || doc[key] === '') throw new Error(`${key} is missing or empty`);
    return doc[key];
  };
  // zone: "projects/123456789012/zones/us-central1-a"
  const zonePath = text('zone').match(/^projects\/([^/]+)\/zones\/([a-z0-9-]+)$/);
  if (!zonePath) throw new Error(`zone ${JSON.stringify(doc.zone)} is not projects/PROJECT/zones/ZONE`);
  const [, project, zone] = zonePath;
  const interfaces = doc.networkInterfaces;
  if (!Array.isArray(interfaces) || interfaces.length === 0) throw new Error('networkInterfaces is missing or empty');
  const addresses = new AddressSet();
  for (const nic of interfaces) {
    for (const a of [nic.ip, ...(nic.ipv6s ?? []), ...(nic.accessConfigs ?? []).map((c) => c.externalIp)]) {
      if (a !== undefined && a !== null && a !== '') addresses.add(a);
    }
  }
  if (addresses.size === 0) throw new Error('no network interface has an address');
  const attributes = doc.attributes ?? {};
  const labels = { zone };
  if (typeof doc.machineType === 'string') labels['machine-type'] = doc.machineType.split('/').pop();
  if (typeof doc.hostname === 'string') labels.hostname = doc.hostname;
  const workload = {
    id: text('name'),
    app: attributes.app ?? null,
    cluster: attributes.cluster ?? null,
    stack: attributes.stack ?? null,
    account: project,
    region: zone.replace(/-[a-z]$/, ''),
    labels,
  };
  return { workload, addresses };
}

let metadata;

export const identity = identityPlugin({
  init(config) {
    for (const key of Object.keys(config)) {
      if (key !== 'document') throw new Error(`unknown config key ${JSON.stringify(key)} (known: document)`);
    }
    metadata = new WatchedFile(config.document ?? '/gce/instance.json', parseInstance, 'instance metadata');
  },

  identify(queries, nowNs) {
    const instance = metadata.refresh(nowNs);
    // Never valid past this check: the host may cache the answer until then.
    const end = metadata.checkedNs + 1n;
    return queries.map((q) => {
      if (instance === undefined) return unattributed('source-unavailable');
      if (q.timeNs > metadata.checkedNs) return unattributed('clock-skew');
      if (!instance.addresses.has(q)) return unattributed('not-found');
      return attributed(instance.workload, 0n, end);
    });
  },
});
