// Summarizes a V8 .cpuprofile (node --cpu-prof): self time by function and by module.
//   node bench/profile.mjs FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function moduleOf(url) {
  if (!url) return '(native / V8)';
  if (url.startsWith('node:')) return url.split('/')[0].replace(/^node:internal.*/, 'node:internal');
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  const s = /\/(src|dist|bench)\/(.*)$/.exec(url);
  return s ? `${s[1]}/${s[2]}` : url;
}

export function summarizeProfile(file, n = 25) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const self = new Map(profile.nodes.map((node) => [node.id, 0]));
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) self.set(samples[i], self.get(samples[i]) + (timeDeltas[i] ?? 0));
  const total = [...self.values()].reduce((a, b) => a + b, 0) || 1;
  const byFunction = new Map();
  const byModule = new Map();
  let idle = 0;
  for (const node of profile.nodes) {
    const t = self.get(node.id);
    if (!t) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    // The in-process profiler's own frames (node:inspector) are not the gateway's work: counted as idle.
    if (name === '(idle)' || url === 'node:inspector') {
      idle += t;
      continue;
    }
    const where = url ? `${url.replace(/^file:\/\/.*?\/(node_modules|src|dist|bench)\//, '$1/')}:${lineNumber + 1}` : '';
    const key = `${name}\u0000${where}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + t);
    const mod = name.startsWith('(') ? name : moduleOf(url);
    byModule.set(mod, (byModule.get(mod) ?? 0) + t);
  }
  const busy = total - idle || 1;
  const top = [...byFunction.entries()]
    .filter(([key]) => !key.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([key, t]) => {
      const [name, where] = key.split('\u0000');
      return { name, where, selfMs: t / 1000, selfPct: (100 * t) / busy };
    });
  const modules = [...byModule.entries()]
    .filter(([mod]) => mod !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .map(([module, t]) => ({ module, selfMs: t / 1000, selfPct: (100 * t) / busy }));
  return { totalMs: total / 1000, idleMs: idle / 1000, busyMs: busy / 1000, note: 'percent of non-idle samples', top, byModule: modules };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  const summary = summarizeProfile(file, Number(process.argv[3] ?? 30));
  console.log(`${path.basename(file)}: ${summary.busyMs.toFixed(0)} ms busy of ${summary.totalMs.toFixed(0)} ms`);
  for (const t of summary.top) console.log(`${t.selfPct.toFixed(1).padStart(5)}%  ${t.name}  ${t.where}`);
  console.log('by module:');
  for (const m of summary.byModule.slice(0, 15)) console.log(`${m.selfPct.toFixed(1).padStart(5)}%  ${m.module}`);
}
