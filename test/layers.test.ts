// The layout's rules, checked on every file under src/: no import cycles between files, and no folder
// imports a folder above it (docs/architecture.md). Imports are read with a regex (type-only ones
// included: a type import is still a dependency of the design), so this needs no dependency.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

const SRC = new URL('../src/', import.meta.url).pathname;

/**
 * Rank of each layer: a file may import its own folder and any folder of a lower rank. Layers of the
 * same rank are siblings and must not import each other. `gateway` is src/gateway.ts (the composition
 * root); `index` is src/index.ts, the library surface, which re-exports from every layer below the CLI.
 */
const RANKS: Readonly<Record<string, number>> = {
  util: 0,
  wire: 1,
  keys: 2,
  cloud: 2,
  metering: 3,
  upstream: 3,
  http: 4,
  store: 4,
  github: 5,
  egress: 5,
  services: 5,
  gateway: 6,
  config: 7,
  telemetry: 7,
  control: 8,
  runner: 9,
  cli: 10,
  index: 11,
};

/** The stand-in provider is for tests and the demo: it stands on util and wire only, and only the CLI uses it. */
const DEV_MAY_IMPORT: ReadonlySet<string> = new Set(['util', 'wire']);
const DEV_IMPORTED_BY: ReadonlySet<string> = new Set(['cli']);

type Graph = Map<string, string[]>;

const SPECIFIER =
  /^\s*(?:import|export)\s+(?:type\s+)?(?:[\w$]+\s*,\s*)?(?:\{[^}]*\}|\*(?:\s+as\s+[\w$]+)?|[\w$]+)\s+from\s+['"]([^'"]+)['"]|^\s*import\s+['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm;

/** Relative specifiers each file under `root` imports, as paths relative to `root`. */
function importGraph(root: string): Graph {
  const graph: Graph = new Map();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.ts')) graph.set(path.relative(root, full), importsOf(readFileSync(full, 'utf8'), path.relative(root, full)));
    }
  };
  walk(root);
  return graph;
}

function importsOf(source: string, file: string): string[] {
  const out = new Set<string>();
  for (const match of source.matchAll(SPECIFIER)) {
    const spec = match[1] ?? match[2] ?? match[3]!;
    if (spec.startsWith('.')) out.add(path.normalize(path.join(path.dirname(file), spec)));
  }
  return [...out];
}

/** `http/handler.ts` → `http`; top-level files are their own layer (`gateway.ts` → `gateway`). */
function layerOf(file: string): string {
  const [first, ...rest] = file.split(path.sep);
  return rest.length > 0 ? first! : first!.replace(/\.ts$/, '');
}

/** Every import that breaks a layering rule, as `file -> import: why`. */
function layerViolations(graph: Graph): string[] {
  const out: string[] = [];
  for (const [file, imports] of graph) {
    const from = layerOf(file);
    for (const target of imports) {
      const to = layerOf(target);
      if (from === to) continue;
      const why = violation(from, to);
      if (why) out.push(`${file} -> ${target}: ${why}`);
    }
  }
  return out;
}

function violation(from: string, to: string): string | undefined {
  if (from === 'dev') return DEV_MAY_IMPORT.has(to) ? undefined : `dev may import only ${[...DEV_MAY_IMPORT].join(', ')}`;
  if (to === 'dev') return DEV_IMPORTED_BY.has(from) ? undefined : `dev is imported only by ${[...DEV_IMPORTED_BY].join(', ')} (and tests)`;
  const a = RANKS[from];
  const b = RANKS[to];
  if (a === undefined) return `${from} is no known layer (add it to RANKS and docs/architecture.md)`;
  if (b === undefined) return `${to} is no known layer (add it to RANKS and docs/architecture.md)`;
  if (b > a) return `upward import (${from} is rank ${a}, ${to} is rank ${b})`;
  if (b === a) return `${from} and ${to} are siblings (rank ${a}) and must not import each other`;
  return undefined;
}

/** Each import cycle once, as the path of files around it (`a -> b -> a`). */
function cycles(graph: Graph): string[] {
  const out: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') out.push([...stack.slice(stack.indexOf(next)), next].join(' -> '));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of [...graph.keys()].sort()) if (!state.has(file)) visit(file);
  return out;
}

describe('the checker', () => {
  test('reads every form of import, type-only and re-exports included, and ignores packages', () => {
    const source = [
      "import { a } from './a.ts';",
      "import type { B } from '../wire/b.ts';",
      "import c, { d } from './c.ts';",
      "export { e } from './e.ts';",
      "export type { F } from './f.ts';",
      "export * from './g.ts';",
      "import {\n  h,\n  type H,\n} from './h.ts';",
      "import './side.ts';",
      "import pino from 'pino';",
      "import { readFile } from 'node:fs/promises';",
      "// a comment that says from './not-an-import.ts' is no import",
    ].join('\n');
    assert.deepEqual(importsOf(source, 'http/x.ts').sort(), [
      'http/a.ts',
      'http/c.ts',
      'http/e.ts',
      'http/f.ts',
      'http/g.ts',
      'http/h.ts',
      'http/side.ts',
      'wire/b.ts',
    ]);
  });

  test('finds a cycle and upward, sibling and dev imports', () => {
    const graph: Graph = new Map([
      ['wire/a.ts', ['wire/b.ts']],
      ['wire/b.ts', ['http/c.ts']],
      ['http/c.ts', ['wire/a.ts', 'dev/standin.ts']],
      ['metering/d.ts', ['upstream/e.ts']],
      ['upstream/e.ts', []],
      ['dev/standin.ts', ['keys/store.ts']],
      ['keys/store.ts', []],
    ]);
    assert.deepEqual(cycles(graph), ['http/c.ts -> wire/a.ts -> wire/b.ts -> http/c.ts']);
    assert.deepEqual(layerViolations(graph), [
      'wire/b.ts -> http/c.ts: upward import (wire is rank 1, http is rank 4)',
      'http/c.ts -> dev/standin.ts: dev is imported only by cli (and tests)',
      'metering/d.ts -> upstream/e.ts: metering and upstream are siblings (rank 3) and must not import each other',
      'dev/standin.ts -> keys/store.ts: dev may import only util, wire',
    ]);
  });
});

describe('src/', () => {
  const graph = importGraph(SRC);

  test('is read whole: every folder is a known layer, and the imports are found', () => {
    const layers = new Set([...graph.keys()].map(layerOf));
    assert.deepEqual(
      [...layers].filter((layer) => RANKS[layer] === undefined && layer !== 'dev'),
      [],
    );
    assert.ok(graph.get(path.join('http', 'handler.ts'))?.includes(path.join('wire', 'errors.ts')), 'the handler imports wire/errors.ts');
    for (const [file, imports] of graph) {
      for (const target of imports) assert.ok(graph.has(target), `${file} imports ${target}, which is not a file under src/`);
    }
  });

  test('has no import cycles', () => {
    const found = cycles(graph);
    assert.deepEqual(found, [], `import cycles:\n  ${found.join('\n  ')}`);
  });

  test('has no upward or sideways imports between layers', () => {
    const found = layerViolations(graph);
    assert.deepEqual(found, [], `layering violations:\n  ${found.join('\n  ')}`);
  });
});
