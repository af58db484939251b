// Rows ↔ the WIT's columns, and the plugin's side of the workload table.
// Pure JavaScript with no imports, so it runs under Node as well (see
// test/columns.test.mjs); flowattr.js re-exports what authors use.

/// The WIT's `unattributed-reason` cases in order: an answer's status is
/// 1 + the reason's position (0 is attributed).
export const REASONS = Object.freeze([
  'not-found',
  'source-unavailable',
  'conflict',
  'gap',
  'expired',
  'clock-skew',
  'plugin-failed',
  'incomplete',
]);

/// How many workloads the host keeps per plugin instance (`answers.table-keep`).
export const TABLE_CAPACITY = 65536;

const STATUS = new Map(REASONS.map((r, i) => [r, i + 1]));

/// An attributed answer: `workload` held the queried address (or, with
/// `{ portScoped: true }`, only the queried port) from `startNs` to `endNs`
/// (exclusive), nanoseconds since the Unix epoch as BigInts. The host caches
/// the answer that long: never claim more than you know.
export function attributed(workload, startNs, endNs, { portScoped = false } = {}) {
  return { workload, startNs, endNs, portScoped };
}

/// An unattributed answer. `not-found` passes the query to the next plugin of
/// the chain; every other reason is final.
export function unattributed(reason, { portScoped = false } = {}) {
  return { reason, portScoped };
}

/// The text of an address given as 16 octets in network order, as the
/// columns carry it: IPv4-mapped addresses as IPv4 (`10.0.0.5`), others in
/// RFC 5952 form (`2600:1f18::5`).
export function addressText(octets, offset = 0) {
  let mapped = octets[offset + 10] === 0xff && octets[offset + 11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) mapped = octets[offset + i] === 0;
  if (mapped) {
    return `${octets[offset + 12]}.${octets[offset + 13]}.${octets[offset + 14]}.${octets[offset + 15]}`;
  }
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push((octets[offset + i] << 8) | octets[offset + i + 1]);
  // The longest run of two or more zero groups (the first of equals) becomes `::`.
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (gs) => gs.map((g) => g.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLength))}`;
}

/// The 16 octets of an IPv4 or IPv6 address's text (IPv4 as IPv4-mapped), or
/// throws a TypeError naming it.
export function parseAddress(text) {
  const bad = () => new TypeError(`${JSON.stringify(text)} is not an IP address`);
  if (typeof text !== 'string') throw bad();
  const ipv4 = (s) => {
    const parts = s.split('.');
    if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) {
      throw bad();
    }
    return parts.map(Number);
  };
  const out = new Uint8Array(16);
  if (!text.includes(':')) {
    out[10] = out[11] = 0xff;
    out.set(ipv4(text), 12);
    return out;
  }
  const halves = text.split('::');
  if (halves.length > 2) throw bad();
  // The 16-bit words of one side of `::`; only the address's last group may
  // be an embedded IPv4 address (`::ffff:10.0.0.5`).
  const words = (s, last) => {
    if (s === '') return [];
    const groups = s.split(':');
    return groups.flatMap((g, i) => {
      if (last && i === groups.length - 1 && g.includes('.')) {
        const [a, b, c, d] = ipv4(g);
        return [(a << 8) | b, (c << 8) | d];
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
      return [parseInt(g, 16)];
    });
  };
  const head = words(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? words(halves[1], true) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) throw bad();
  const all = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  all.forEach((word, i) => {
    out[2 * i] = word >> 8;
    out[2 * i + 1] = word & 0xff;
  });
  return out;
}

/// The address's canonical text (what `addressText` gives for it), so the
/// text of a document and of a query compare equal: `::ffff:10.0.0.5` and
/// `10.0.0.5` are both `10.0.0.5`, `2600:1F18:0::5` is `2600:1f18::5`.
export function canonicalAddress(text) {
  return addressText(parseAddress(text));
}

/// A compact key for the 16 address octets at `at` of `words` (the octets
/// as a `Uint32Array`): what `AddressSet` compares, much cheaper to make than
/// the address's text. An IPv4(-mapped) address is a number.
function wordsKey(w, at) {
  const j = at >> 2;
  // 00 00 ff ff read as one little- or big-endian word.
  if (w[j] === 0 && w[j + 1] === 0 && (w[j + 2] === 0xffff0000 || w[j + 2] === 0x0000ffff)) return w[j + 3];
  return `${w[j]}:${w[j + 1]}:${w[j + 2]}:${w[j + 3]}`;
}

/// `wordsKey` of 16 octets.
export function addressKey(octets, at = 0) {
  return wordsKey(words(octets), at);
}

// The octets as 32-bit words (a view when aligned, else a copy).
function words(octets) {
  return octets.byteOffset % 4 === 0
    ? new Uint32Array(octets.buffer, octets.byteOffset, octets.length >> 2)
    : new Uint32Array(octets.slice().buffer);
}

/// A set of addresses given as text (`10.0.0.5`, `2600:1f18::5`), asked
/// about a query's local address: `set.has(query)` compares octets, so no
/// text is made per query. IPv4-mapped IPv6 is the IPv4 address.
export class AddressSet {
  #keys = new Set();

  constructor(addresses = []) {
    for (const a of addresses) this.add(a);
  }

  add(text) {
    this.#keys.add(addressKey(parseAddress(text)));
    return this;
  }

  get size() {
    return this.#keys.size;
  }

  /// Whether the set holds `query`'s address (a `LocalQuery`, or the
  /// address's text).
  has(query) {
    return this.#keys.has(typeof query === 'string' ? addressKey(parseAddress(query)) : query.addressKey);
  }
}

/// One local query of an `identify` batch, as a row: `address` (text),
/// `port`, `protocol` (IANA number: 6 TCP, 17 UDP), `timeNs` (when the flow
/// was seen, BigInt), `cgroupId`, `netnsId` (BigInts), `pid`. The address's
/// text is made only when asked for; `AddressSet.has(query)` does without.
export class LocalQuery {
  constructor(columns, words, i) {
    this._c = columns;
    this._w = words;
    this._i = i;
    this._text = undefined;
    this.port = columns.port[i];
    this.timeNs = columns.timeNs[i];
  }

  get protocol() {
    return this._c.protocol[this._i];
  }

  get cgroupId() {
    return this._c.cgroupId[this._i];
  }

  get netnsId() {
    return this._c.netnsId[this._i];
  }

  get pid() {
    return this._c.pid[this._i];
  }

  /// The local address's text (IPv4 as `10.0.0.5`).
  get address() {
    if (this._text === undefined) this._text = addressText(this._c.addressOctets, 16 * this._i);
    return this._text;
  }

  /// The local address's 16 octets (a view of the batch; copy to keep).
  get octets() {
    return this._c.addressOctets.subarray(16 * this._i, 16 * this._i + 16);
  }

  /// The address as `AddressSet` compares it.
  get addressKey() {
    return wordsKey(this._w, 16 * this._i);
  }

  toJSON() {
    const { address, port, protocol, timeNs, cgroupId, netnsId, pid } = this;
    return { address, port, protocol, timeNs: String(timeNs), cgroupId: String(cgroupId), netnsId: String(netnsId), pid };
  }
}

/// The rows of a `local-queries` record.
export function localQueries(columns) {
  const n = columns.port.length;
  for (const [name, length] of [
    ['addressOctets', columns.addressOctets.length / 16],
    ['protocol', columns.protocol.length],
    ['timeNs', columns.timeNs.length],
    ['cgroupId', columns.cgroupId.length],
    ['netnsId', columns.netnsId.length],
    ['pid', columns.pid.length],
  ]) {
    if (length !== n) throw new RangeError(`local-queries: ${name} holds ${length} entries, port ${n}`);
  }
  const w = words(columns.addressOctets);
  const rows = new Array(n);
  for (let i = 0; i < n; i++) rows[i] = new LocalQuery(columns, w, i);
  return rows;
}

const OPTIONAL = ['app', 'cluster', 'stack', 'account', 'region'];

/// Checks a workload (`{ id, app?, cluster?, stack?, account?, region?,
/// labels?: { key: value } }`) and gives it in the WIT's shape.
function witWorkload(w) {
  if (w === null || typeof w !== 'object') throw new TypeError(`a workload must be an object, not ${w}`);
  if (typeof w.id !== 'string' || w.id === '') throw new TypeError('a workload needs a non-empty string id');
  const out = { id: w.id };
  for (const key of OPTIONAL) {
    const v = w[key];
    if (v !== undefined && v !== null && typeof v !== 'string') {
      throw new TypeError(`workload ${w.id}: ${key} must be a string, null or absent`);
    }
    out[key] = v ?? undefined;
  }
  const labels = w.labels ?? {};
  if (typeof labels !== 'object') throw new TypeError(`workload ${w.id}: labels must be an object of strings`);
  out.labels = Object.entries(labels)
    .map(([k, v]) => {
      if (typeof v !== 'string') throw new TypeError(`workload ${w.id}: label ${k} must be a string`);
      return [k, v];
    })
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const key of Object.keys(w)) {
    if (key !== 'id' && key !== 'labels' && !OPTIONAL.includes(key)) {
      throw new TypeError(`workload ${w.id}: unknown field ${key}`);
    }
  }
  return out;
}

/// The plugin's side of the per-instance workload table: which workloads it
/// has sent the host, at which index. Each workload crosses once per
/// instance; a later answer refers to it by index. A workload object is known
/// by its identity (keep the same object between batches: that is what makes
/// it free) and frozen once sent, since the host keeps the attributes it was
/// sent with; another object with a known id is compared by content and sent
/// again only if it differs. Past `TABLE_CAPACITY` entries the table starts
/// over (`tableKeep` 0), as the protocol says.
export class WorkloadTable {
  #sent = [];
  #keys = [];
  #byObject = new Map();
  #byId = new Map();

  get length() {
    return this.#sent.length;
  }

  /// The WIT's `answers` record for one answer per query (from `attributed`
  /// and `unattributed`). Throws a TypeError naming the first bad answer.
  encode(answers, queries) {
    if (!Array.isArray(answers)) throw new TypeError('identify must return an array of answers');
    const n = answers.length;
    if (queries !== undefined && n !== queries) {
      throw new RangeError(`${n} answers for ${queries} queries: one answer per query, in order`);
    }
    // Every answer is checked before the table changes, so a refused batch
    // leaves it as it was.
    const status = new Uint8Array(n);
    const validStartNs = new BigUint64Array(n);
    const validEndNs = new BigUint64Array(n);
    const portScoped = new Uint8Array(n);
    const distinct = new Map();
    for (let i = 0; i < n; i++) {
      const a = answers[i];
      if (a?.workload !== undefined) {
        const start = toNs(a.startNs, i, 'startNs');
        const end = toNs(a.endNs, i, 'endNs');
        if (end <= start) throw new RangeError(`answer ${i}: its validity [${start}, ${end}) is empty`);
        validStartNs[i] = start;
        validEndNs[i] = end;
        if (!distinct.has(a.workload)) distinct.set(a.workload, this.#indexOf(a.workload, i));
      } else {
        const s = STATUS.get(a?.reason);
        if (s === undefined) {
          throw new TypeError(`answer ${i}: ${JSON.stringify(a?.reason)} is not an unattributed reason (${REASONS.join(', ')}); make answers with attributed() or unattributed()`);
        }
        if (a.portScoped && s !== 1) throw new TypeError(`answer ${i}: only attributed and not-found answers may be port-scoped`);
        status[i] = s;
      }
      portScoped[i] = a.portScoped ? 1 : 0;
    }
    const wits = new Map();
    let unsent = 0;
    for (const [w, i] of distinct) {
      if (i < 0) {
        unsent++;
        wits.set(w, witWorkload(w));
      }
    }
    if (this.#sent.length + unsent > TABLE_CAPACITY) {
      if (distinct.size > TABLE_CAPACITY) {
        throw new RangeError(`a batch names ${distinct.size} workloads, more than the table holds (${TABLE_CAPACITY})`);
      }
      this.#clear();
      for (const w of distinct.keys()) distinct.set(w, -1);
    }
    const tableKeep = this.#sent.length;
    const newWorkloads = [];
    for (const [w, i] of distinct) {
      if (i >= 0) continue;
      distinct.set(w, this.#sent.length);
      // A known workload sent again after a restart was checked when first sent.
      const wit = wits.get(w) ?? witWorkload(w);
      this.#add(w, wit);
      newWorkloads.push(wit);
    }
    const workload = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      if (status[i] === 0) workload[i] = distinct.get(answers[i].workload);
    }
    return { tableKeep, newWorkloads, status, workload, validStartNs, validEndNs, portScoped };
  }

  /// The table index of `w` if it was sent with these attributes, else -1.
  #indexOf(w, answer) {
    const known = this.#byObject.get(w);
    if (known !== undefined) return known;
    if (w === null || typeof w !== 'object') throw new TypeError(`answer ${answer}: a workload must be an object, not ${w}`);
    const i = this.#byId.get(w.id);
    if (i === undefined || this.#keys[i] !== contentKey(witWorkload(w))) return -1;
    // The same workload in another object: hold this one instead.
    this.#byObject.delete(this.#sent[i]);
    this.#byObject.set(w, i);
    this.#sent[i] = freeze(w);
    return i;
  }

  #add(w, wit) {
    const i = this.#sent.length;
    this.#sent.push(freeze(w));
    this.#keys.push(contentKey(wit));
    this.#byObject.set(w, i);
    this.#byId.set(w.id, i);
  }

  #clear() {
    this.#sent = [];
    this.#keys = [];
    this.#byObject.clear();
    this.#byId.clear();
  }
}

function contentKey(wit) {
  return JSON.stringify([wit.id, ...OPTIONAL.map((k) => wit[k] ?? null), wit.labels]);
}

function freeze(w) {
  if (w.labels && typeof w.labels === 'object') Object.freeze(w.labels);
  return Object.freeze(w);
}

function toNs(v, i, field) {
  if (typeof v === 'bigint') {
    if (v < 0n || v > 0xffffffffffffffffn) throw new RangeError(`answer ${i}: ${field} ${v} is outside u64`);
    return v;
  }
  if (Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  throw new TypeError(`answer ${i}: ${field} must be a BigInt of nanoseconds (or a safe non-negative integer), not ${v}`);
}
