// The helper's pure part under Node: `node --test sdk/js/test/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AddressSet, addressText, attributed, canonicalAddress, localQueries, parseAddress, TABLE_CAPACITY,
  unattributed, WorkloadTable,
} from '../columns.js';

test('addresses round-trip through their 16 octets', () => {
  for (const [text, canonical] of [
    ['10.0.0.5', '10.0.0.5'],
    ['::ffff:10.0.0.5', '10.0.0.5'],
    ['2600:1F18:0:0::5', '2600:1f18::5'],
    ['::', '::'],
    ['::1', '::1'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['fe80::1:0:0:1', 'fe80::1:0:0:1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['64:ff9b::192.0.2.1', '64:ff9b::c000:201'],
  ]) {
    assert.equal(canonicalAddress(text), canonical, text);
  }
  for (const bad of ['10.0.0', '10.0.0.256', '01.0.0.1', '1::2::3', ':1::', '1:2:3:4:5:6:7', 'fe80::1%eth0', '1.2.3.4::', 7]) {
    assert.throws(() => parseAddress(bad), TypeError, String(bad));
  }
  const octets = new Uint8Array(32);
  octets.set(parseAddress('192.168.1.2'), 16);
  assert.equal(addressText(octets, 16), '192.168.1.2');
});

function columns(addresses) {
  const n = addresses.length;
  const addressOctets = new Uint8Array(16 * n);
  addresses.forEach((a, i) => addressOctets.set(parseAddress(a), 16 * i));
  return {
    addressOctets, port: new Uint16Array(n).fill(443), protocol: new Uint8Array(n).fill(6),
    timeNs: new BigUint64Array(n).fill(5n), cgroupId: new BigUint64Array(n),
    netnsId: new BigUint64Array(n), pid: new Uint32Array(n),
  };
}

test('queries become rows', () => {
  const rows = localQueries(columns(['10.0.0.5', '2600:1f18::5']));
  assert.deepEqual(rows.map((q) => [q.address, q.port, q.protocol, q.timeNs]), [
    ['10.0.0.5', 443, 6, 5n], ['2600:1f18::5', 443, 6, 5n],
  ]);
  const bad = columns(['10.0.0.5']);
  bad.pid = new Uint32Array(2);
  assert.throws(() => localQueries(bad), /pid holds 2 entries, port 1/);
});

test('answers become columns and each workload crosses once', () => {
  const table = new WorkloadTable();
  const web = { id: 'web', app: 'web', labels: { zone: 'a', az: 'b' } };
  const first = table.encode([attributed(web, 1n, 10n), unattributed('gap'), attributed(web, 2, 3, { portScoped: true })], 3);
  assert.equal(first.tableKeep, 0);
  assert.deepEqual(first.newWorkloads, [{ id: 'web', app: 'web', cluster: undefined, stack: undefined, account: undefined, region: undefined, labels: [['az', 'b'], ['zone', 'a']] }]);
  assert.deepEqual([...first.status], [0, 4, 0]);
  assert.deepEqual([...first.workload], [0, 0, 0]);
  assert.deepEqual([...first.validEndNs], [10n, 0n, 3n]);
  assert.deepEqual([...first.portScoped], [0, 0, 1]);
  assert.throws(() => { web.app = 'changed'; }, TypeError, 'a sent workload is frozen');

  // Known by identity, then by content; a changed copy is a new entry.
  const again = table.encode([attributed(web, 1n, 2n), attributed({ ...web, labels: { ...web.labels } }, 1n, 2n)]);
  assert.equal(again.tableKeep, 1);
  assert.deepEqual(again.newWorkloads, []);
  const changed = table.encode([attributed({ id: 'web', app: 'api' }, 1n, 2n)]);
  assert.equal(changed.tableKeep, 1);
  assert.equal(changed.newWorkloads.length, 1);
  assert.deepEqual([...changed.workload], [1]);
});

test('the table starts over before it outgrows the host', () => {
  const table = new WorkloadTable();
  const many = Array.from({ length: TABLE_CAPACITY }, (_, i) => attributed({ id: `w${i}` }, 0n, 1n));
  assert.equal(table.encode(many).newWorkloads.length, TABLE_CAPACITY);
  const next = table.encode([attributed({ id: 'one-more' }, 0n, 1n), many[0]]);
  assert.equal(next.tableKeep, 0);
  assert.deepEqual(next.newWorkloads.map((w) => w.id), ['one-more', 'w0']);
  assert.deepEqual([...next.workload], [0, 1]);
});

test('bad answers are refused with the answer they are', () => {
  const table = new WorkloadTable();
  assert.throws(() => table.encode([unattributed('nope')]), /answer 0: "nope" is not an unattributed reason/);
  assert.throws(() => table.encode([attributed({ id: '' }, 0n, 1n)]), /non-empty string id/);
  assert.throws(() => table.encode([attributed({ id: 'x' }, 5n, 5n)]), /answer 0: its validity \[5, 5\) is empty/);
  assert.throws(() => table.encode([attributed({ id: 'x' }, 0.5, 1n)]), /startNs must be a BigInt/);
  assert.throws(() => table.encode([unattributed('gap', { portScoped: true })]), /port-scoped/);
  assert.throws(() => table.encode([], 2), /0 answers for 2 queries/);
  assert.equal(table.length, 0, 'nothing refused was sent');
});

test('an address set knows a query by its octets', () => {
  const set = new AddressSet(['10.0.0.5', '2600:1F18::5']);
  const rows = localQueries(columns(['10.0.0.5', '::ffff:10.0.0.5', '2600:1f18:0::5', '10.0.0.6', '::a00:5']));
  assert.deepEqual(rows.map((q) => set.has(q)), [true, true, true, false, false]);
  assert.ok(set.has('::ffff:10.0.0.5'));
  assert.equal(set.size, 2);
});
