// flowattr.js — write a flowattr plugin in JavaScript.
//
// A plugin built with componentize-js exports the WIT's interface as an
// object. This module makes that object from a few plain functions:
//
//   import { identityPlugin, attributed, unattributed } from './flowattr.js';
//   export const identity = identityPlugin({
//     init(config) { … },                  // the manifest's [config], parsed
//     identify(queries, nowNs) {           // rows: { address, port, timeNs, … }
//       return queries.map((q) => q.address === '10.0.0.5'
//         ? attributed(web, q.timeNs, nowNs + 1n)
//         : unattributed('not-found'));
//     },
//   });
//
// It turns the batch's columns into rows and the answers back into columns,
// keeps the workload table (each workload object crosses to the host once
// per instance), reads files from the directories a manifest grants
// (`readFile`, `WatchedFile`), and makes errors readable: an exception in
// `init` becomes init's error result, one in `identify` is logged through
// the host's `log` as one line (message and where it was thrown) before the
// call fails and the host rebuilds the instance.
//
// Times are BigInts of nanoseconds since the Unix epoch (they pass 2^53).

import { log as hostLog, nowNs as hostNowNs } from 'flowattr:plugin/host@0.3.0';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';
import { localQueries, WorkloadTable } from './columns.js';

export {
  AddressSet, addressKey, addressText, attributed, canonicalAddress, parseAddress, REASONS, TABLE_CAPACITY,
  unattributed, WorkloadTable,
} from './columns.js';

/// Lines to the host's structured log, tagged with the plugin's name and
/// rate-limited by the host. `console.log` and `console.error` reach it too
/// (as info and warn lines, through stdout and stderr).
export const log = Object.freeze({
  trace: (message) => hostLog('trace', String(message)),
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
});

/// The host's clock (the fleet simulator drives it): use it, not `Date.now()`.
export function nowNs() {
  return hostNowNs();
}

/// One line saying what `e` is and where it was thrown: `TypeError: x is
/// undefined (at identify@plugin.js:12:7)`. A WASI call's error is its code.
export function describeError(e) {
  if (e instanceof Error) {
    const code = Object.hasOwn(e, 'payload') ? ` (${JSON.stringify(e.payload)})` : '';
    const frame = String(e.stack ?? '')
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l !== '' && !l.includes('/sources/initializer.js') && !l.includes('flowattr.js'));
    return `${e.name}: ${e.message}${code}${frame ? ` (at ${frame})` : ''}`;
  }
  if (e !== null && typeof e === 'object' && Object.hasOwn(e, 'payload')) return String(e.payload);
  return String(e);
}

// Calls `f`; on an exception logs `what` and the error as one line and
// throws again, which fails the call (a trap: the host rebuilds the
// instance, as after a Rust plugin's panic).
function guarded(what, f) {
  try {
    return f();
  } catch (e) {
    hostLog('error', `${what} threw ${describeError(e)}`);
    if (e instanceof Error && e.stack) hostLog('debug', `${what}: the stack was ${e.stack.trim().replaceAll('\n', ' < ')}`);
    // What reaches the engine is only a note (it prints an uncaught
    // exception's stack to stderr, and the line above already said it all).
    throw `${what} failed: the error is logged above; the host rebuilds the instance`;
  }
}

// `init(config-json) -> result<_, string>`: an exception is the error
// result, so the host reports the plugin's own message.
function initExport(init) {
  return (configJson) => {
    try {
      init?.(JSON.parse(configJson));
      return { tag: 'ok', val: undefined };
    } catch (e) {
      return { tag: 'err', val: describeError(e) };
    }
  };
}

/// The `identity` export of an identity plugin. `impl.init(config)` gets the
/// manifest's `[config]` table as an object (throw to refuse it);
/// `impl.identify(queries, nowNs)` gets the batch as rows and returns one
/// answer per query, in order, each `attributed(…)` or `unattributed(…)`.
export function identityPlugin(impl) {
  if (typeof impl?.identify !== 'function') throw new TypeError('identityPlugin needs an identify function');
  const table = new WorkloadTable();
  return {
    init: initExport(impl.init),
    identify: (columns) =>
      guarded('identify', () => {
        const queries = localQueries(columns);
        const answers = impl.identify(queries, hostNowNs());
        return table.encode(answers, queries.length);
      }),
  };
}

// ---- Files in granted directories ----------------------------------------

let preopens;

// The granted directory holding `path` and the path inside it.
function locate(path) {
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new TypeError(`${JSON.stringify(path)}: give an absolute path inside a granted directory`);
  }
  preopens ??= getDirectories();
  let best;
  for (const [dir, guest] of preopens) {
    const root = guest.replace(/\/+$/, '');
    if ((path === root || path.startsWith(`${root}/`)) && (!best || root.length > best[1].length)) {
      best = [dir, root];
    }
  }
  if (!best) {
    const granted = preopens.map(([, g]) => g).join(', ') || 'none';
    throw new Error(`${path} is not in a directory the manifest grants (granted: ${granted})`);
  }
  const inside = path.slice(best[1].length).replace(/^\/+/, '') || '.';
  return [best[0], inside];
}

function fsError(path, e) {
  const code = e !== null && typeof e === 'object' && Object.hasOwn(e, 'payload') ? e.payload : undefined;
  return code === undefined ? e : new Error(`${path}: ${code}`);
}

/// Size and modification time (BigInt nanoseconds) of a file in a granted
/// directory; throws `Error("PATH: no-entry")` and the like.
export function statFile(path) {
  const [dir, inside] = locate(path);
  try {
    const st = dir.statAt({ symlinkFollow: true }, inside);
    const m = st.dataModificationTimestamp;
    return { size: st.size, mtimeNs: m ? m.seconds * 1_000_000_000n + BigInt(m.nanoseconds) : 0n };
  } catch (e) {
    throw fsError(path, e);
  }
}

/// The bytes of a file in a granted directory (read-only grants).
export function readFile(path) {
  const [dir, inside] = locate(path);
  let file;
  try {
    file = dir.openAt({ symlinkFollow: true }, inside, {}, { read: true });
    const chunks = [];
    let length = 0;
    for (;;) {
      const [bytes, end] = file.read(65536n, BigInt(length));
      chunks.push(bytes);
      length += bytes.length;
      if (end || bytes.length === 0) break;
    }
    const out = new Uint8Array(length);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  } catch (e) {
    throw fsError(path, e);
  } finally {
    // Descriptors are host resources (256 per instance): give it back now.
    file?.[Symbol.dispose]?.();
  }
}

/// A file in a granted directory, parsed, re-read when it changes. Answer
/// from `refresh(nowNs)`'s result: the parsed value, or `undefined` while the
/// file is missing or `parse` refuses it (never an older version). Each
/// distinct failure is logged once as an error, each load as info.
/// `checkedNs` is when the file was last checked: an answer from it should
/// not be valid past that.
export class WatchedFile {
  #path;
  #parse;
  #what;
  #seen;
  #value;
  #problem;

  /// `parse(bytes)` returns the value or throws; `what` names it in the log.
  constructor(path, parse, what = 'file') {
    this.#path = path;
    this.#parse = parse;
    this.#what = what;
    this.checkedNs = 0n;
  }

  get path() {
    return this.#path;
  }

  /// Checks the file (one stat; a read and parse when its size or
  /// modification time changed) and returns its current value.
  refresh(now) {
    this.checkedNs = now;
    let stat;
    try {
      stat = statFile(this.#path);
    } catch (e) {
      return this.#failed(undefined, e);
    }
    const seen = `${stat.size}/${stat.mtimeNs}`;
    if (seen === this.#seen) return this.#value;
    try {
      const value = this.#parse(readFile(this.#path));
      this.#seen = seen;
      this.#value = value;
      this.#problem = undefined;
      hostLog('info', `Loaded the ${this.#what} ${this.#path}.`);
      return value;
    } catch (e) {
      return this.#failed(seen, e);
    }
  }

  #failed(seen, e) {
    this.#seen = seen;
    this.#value = undefined;
    const problem = describeError(e);
    if (problem !== this.#problem) {
      this.#problem = problem;
      hostLog('error', `The ${this.#what} ${this.#path} is unusable, so every answer is source-unavailable: ${problem}`);
    }
    return undefined;
  }
}
