#!/usr/bin/env node
// Builds a JavaScript flowattr plugin into a WebAssembly component with
// componentize-js (pinned in package.json).
//
//   node sdk/js/build.mjs PLUGIN.js --kind identity --out PLUGIN.wasm [--wit DIR]
//
// The component is built against the world `KIND-plugin` of wit/js.wit: the
// flowattr world of that kind plus the WASI filesystem preopens (for
// flowattr.js's file reading). The WIT packages it uses are assembled in a
// temporary directory: flowattr's own (the checkout's wit/, or --wit) and
// WASI 0.2.12's, which jco (a dependency of componentize-js) ships. Fetch and
// HTTP are left out: the host offers no wasi:http and refuses a component that
// imports it. Works offline once `npm ci` has run in sdk/js.

import { componentize } from '@bytecodealliance/componentize-js';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const KINDS = ['identity', 'resolver', 'policy', 'sink'];
const WASI = '0.2.12';
const here = dirname(fileURLToPath(import.meta.url));

function fail(message) {
  console.error(`flowattr-js-build: ${message}`);
  process.exit(1);
}

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      kind: { type: 'string' },
      out: { type: 'string', short: 'o' },
      wit: { type: 'string' },
    },
  });
} catch (e) {
  fail(e.message);
}
const [source, ...extra] = args.positionals;
const { kind, out } = args.values;
if (!source || extra.length > 0 || !kind || !out) {
  fail('usage: build.mjs PLUGIN.js --kind identity|resolver|policy|sink --out PLUGIN.wasm [--wit DIR]');
}
if (!KINDS.includes(kind)) fail(`--kind ${kind}: expected one of ${KINDS.join(', ')}`);
if (!existsSync(source)) fail(`${source}: no such file`);
const outPath = resolve(out);

function commonAncestor(a, b) {
  const x = a.split(sep);
  const y = b.split(sep);
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  return x.slice(0, i).join(sep) || sep;
}

const flowattrWit = resolve(args.values.wit ?? join(here, '../../wit'));
if (!existsSync(join(flowattrWit, 'worlds.wit'))) {
  fail(`${flowattrWit} holds no worlds.wit: pass the flowattr checkout's wit/ directory with --wit`);
}
const wasiWit = join(here, 'node_modules/@bytecodealliance/jco/lib/wit/builtin', WASI);
if (!existsSync(wasiWit)) {
  fail(`${wasiWit} is missing: run \`npm ci\` in ${here} first`);
}

const witDir = mkdtempSync(join(tmpdir(), 'flowattr-js-wit-'));
try {
  copyFileSync(join(here, 'wit/js.wit'), join(witDir, 'js.wit'));
  const deps = join(witDir, 'deps');
  mkdirSync(deps);
  const links = [
    ['flowattr', flowattrWit],
    ['wasi-filesystem', join(wasiWit, 'wasi-filesystem')],
    ['wasi-io', join(wasiWit, 'wasi-io')],
    ['wasi-clocks', join(wasiWit, 'wasi-clocks')],
  ];
  for (const [name, target] of links) symlinkSync(target, join(deps, name), 'dir');

  // componentize-js lets the module import only files under the working
  // directory (it maps that directory into the build), so work from the
  // deepest directory holding both the plugin and this SDK: the plugin may
  // then import flowattr.js by its relative path. Where that is `/` (which
  // componentize-js 0.23 mishandles), from the plugin's own directory: a
  // copy of flowattr.js and columns.js there is what it imports.
  const sourcePath = resolve(source);
  const common = commonAncestor(dirname(sourcePath), here);
  process.chdir(common === sep ? dirname(sourcePath) : common);
  const started = Date.now();
  const { component } = await componentize({
    sourcePath,
    witPath: witDir,
    worldName: `${kind}-plugin`,
    disableFeatures: ['http', 'fetch-event'],
  });
  writeFileSync(outPath, component);
  const mib = (component.length / 1048576).toFixed(1);
  console.error(`built ${out} (${kind} plugin, ${mib} MiB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  console.error(`flowattr-js-build: ${source}: ${e?.message ?? e}`);
  if (/Error loading module/.test(String(e?.message)) && process.cwd() === dirname(resolve(source))) {
    console.error(
      `flowattr-js-build: ${source} and ${here} share no directory but /, so the plugin can import only files ` +
        `in its own directory: copy flowattr.js and columns.js next to it and import './flowattr.js'`,
    );
  }
  process.exitCode = 1;
} finally {
  rmSync(witDir, { recursive: true, force: true });
}
