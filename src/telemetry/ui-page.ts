// The live page itself: one self-contained HTML document (inline CSS and JS, no build step, nothing
// fetched but its own /events stream), kept as a TS string so `tsc` ships it with the rest of dist/.
// Every value from the gateway is inserted with textContent or setAttribute, never as markup: group
// names, labels and models come from clients. Script and style carry the response's CSP nonce.

/** The page, its inline script and style tagged with `nonce`. */
export function uiPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>llm-socket-gateway: live</title>
<style nonce="${nonce}">
body { font: 14px system-ui, sans-serif; margin: 1rem 2rem; color: #222; background: #fafafa; }
h1 { font-size: 1.2rem; } h2 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
table { border-collapse: collapse; } td, th { padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
svg { background: #fff; border: 1px solid #ddd; }
.muted { color: #777; } .bad { color: #b00; }
ul { margin: 0; padding-left: 1.2rem; } .legend span { margin-right: 1rem; }
#state.live { color: #080; } #state.down { color: #b00; }
</style>
</head>
<body>
<h1>llm-socket-gateway <span id="state" data-testid="connection-state">connecting</span></h1>
<p class="muted"><span id="live-keys" data-testid="live-keys">0</span> live keys, <span id="in-flight" data-testid="in-flight">0</span> calls in flight,
$<span id="total-spend" data-testid="total-spend">0.0000</span> spent; <span id="calls-total" data-testid="calls-total">0</span> calls and
<span id="refusals-total" data-testid="refusals-total">0</span> refusals in the last 2 hours.</p>
<h2>Calls per minute</h2>
<svg id="calls" data-testid="calls-chart" width="720" height="120" viewBox="0 0 720 120" role="img" aria-label="calls per minute"></svg>
<h2>Spend per group per minute (USD)</h2>
<svg id="spend" data-testid="spend-chart" width="720" height="160" viewBox="0 0 720 160" role="img" aria-label="spend per group"></svg>
<div id="legend" class="legend"></div>
<h2>Live keys</h2>
<table><thead><tr><th>key</th><th>group</th><th>label</th><th class="num">spent USD</th><th class="num">in flight</th><th class="num">calls</th><th class="num">req/min</th></tr></thead>
<tbody id="keys" data-testid="keys-table"></tbody></table>
<h2>Groups</h2>
<table><thead><tr><th>group</th><th class="num">spent USD</th><th class="num">reserved USD</th><th class="num">budget USD</th><th class="num">live keys</th></tr></thead>
<tbody id="groups" data-testid="groups-table"></tbody></table>
<h2>Current streams</h2>
<ul id="streams" data-testid="streams"></ul>
<h2>Recent refusals</h2>
<ul id="refusals" data-testid="refusals"></ul>
<script nonce="${nonce}">
"use strict";
const MINUTES = 120, MAX_REFUSALS = 50, COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);
/** minute (epoch ms / 60000) -> { calls, refusals, spend: Map(group -> usd) } (a Map: group names are client data, "__proto__" included) */
const minutes = new Map();
let refusals = [];

function el(tag, text, attrs) {
  const node = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}
function row(cells) {
  const tr = el('tr');
  for (const [text, num] of cells) tr.append(el('td', text, num ? { class: 'num' } : {}));
  return tr;
}
const usd = (n) => (n || 0).toFixed(4);
const nowMinute = () => Math.floor(Date.now() / 60000);

function addCall(c) {
  const m = Math.floor(c.time / 60000);
  const bucket = minutes.get(m) || { calls: 0, refusals: 0, spend: new Map() };
  bucket.calls++;
  if (c.status >= 400) bucket.refusals++;
  if (c.costUsd > 0) bucket.spend.set(c.group, (bucket.spend.get(c.group) || 0) + c.costUsd);
  minutes.set(m, bucket);
}
function addRefusal(c) {
  refusals.unshift(c);
  refusals.length = Math.min(refusals.length, MAX_REFUSALS);
}

function trim() {
  const oldest = nowMinute() - MINUTES + 1;
  for (const m of minutes.keys()) if (m < oldest) minutes.delete(m);
}

function drawCalls() {
  const svg = $('calls'), w = 720, h = 120, pad = 18, now = nowMinute();
  let max = 1, total = 0, refused = 0;
  for (const b of minutes.values()) { max = Math.max(max, b.calls); total += b.calls; refused += b.refusals; }
  svg.replaceChildren(el('svg:text', max, { x: 2, y: 12, 'font-size': 10, fill: '#777' }), el('svg:text', '-2h', { x: 2, y: h - 4, 'font-size': 10, fill: '#777' }),
    el('svg:text', 'now', { x: w - 22, y: h - 4, 'font-size': 10, fill: '#777' }));
  const bw = (w - 2 * pad) / MINUTES;
  for (const [m, b] of minutes) {
    const x = pad + (MINUTES - 1 - (now - m)) * bw, bh = ((h - 2 * pad) * b.calls) / max;
    const bar = el('svg:rect', undefined, { x: x.toFixed(1), y: (h - pad - bh).toFixed(1), width: Math.max(1, bw - 1).toFixed(1), height: bh.toFixed(1),
      fill: b.refusals ? '#d62728' : '#1f77b4', 'data-minute': m, 'data-calls': b.calls, 'data-refusals': b.refusals });
    bar.append(el('svg:title', new Date(m * 60000).toLocaleTimeString() + ': ' + b.calls + ' calls, ' + b.refusals + ' refused'));
    svg.append(bar);
  }
  $('calls-total').textContent = String(total);
  $('refusals-total').textContent = String(refused);
}

function drawSpend() {
  const svg = $('spend'), w = 720, h = 160, pad = 18, now = nowMinute();
  const groups = new Set();
  let max = 0;
  for (const b of minutes.values()) for (const [g, v] of b.spend) { groups.add(g); max = Math.max(max, v); }
  svg.replaceChildren(el('svg:text', max ? '$' + max.toPrecision(3) : 'no spend yet', { x: 2, y: 12, 'font-size': 10, fill: '#777' }));
  const legend = $('legend');
  legend.replaceChildren();
  const step = (w - 2 * pad) / (MINUTES - 1);
  [...groups].sort().forEach((g, i) => {
    const color = COLORS[i % COLORS.length], points = [];
    for (let k = MINUTES - 1; k >= 0; k--) {
      const b = minutes.get(now - k), v = (b && b.spend.get(g)) || 0;
      points.push((pad + (MINUTES - 1 - k) * step).toFixed(1) + ',' + (h - pad - ((h - 2 * pad) * v) / max).toFixed(1));
    }
    const line = el('svg:polyline', undefined, { points: points.join(' '), fill: 'none', stroke: color, 'stroke-width': 1.5, 'data-group': g });
    line.append(el('svg:title', g));
    svg.append(line);
    const key = el('span', '\\u25A0 ' + g, { 'data-group': g });
    key.style.color = color; // CSSOM, which the CSP allows (a style attribute it would block)
    legend.append(key);
  });
}

function drawRefusals() {
  $('refusals').replaceChildren(...refusals.map((c) => el('li', new Date(c.time).toLocaleTimeString() + ' ' + c.status + ' ' + (c.errorKind || 'error') +
    ' (key ' + c.keyId + ', group ' + c.group + (c.model ? ', model ' + c.model : '') + ')',
    { 'data-testid': 'refusal', 'data-error-kind': c.errorKind || '', 'data-status': c.status, class: 'bad' })));
}

function drawSnapshot(s) {
  $('live-keys').textContent = String(s.totals.liveKeys);
  $('in-flight').textContent = String(s.totals.inFlight);
  $('total-spend').textContent = usd(s.totals.spentUsd);
  $('keys').replaceChildren(...s.keys.map((k) => {
    const tr = row([[k.id], [k.group], [k.label || ''], [usd(k.spentUsd), 1], [k.inFlight, 1], [k.calls, 1], [k.requestsLastMinute, 1]]);
    tr.setAttribute('data-key-id', k.id);
    return tr;
  }));
  if (s.keysOmitted) $('keys').append(row([['… ' + s.keysOmitted + ' more keys']]));
  $('groups').replaceChildren(...s.groups.map((g) => row([[g.group], [usd(g.spentUsd), 1], [usd(g.reservedUsd), 1], [g.budgetUsd === undefined ? '-' : usd(g.budgetUsd), 1], [g.liveKeys, 1]])));
  const busy = s.keys.filter((k) => k.inFlight > 0);
  $('streams').replaceChildren(...(busy.length ? busy.map((k) => el('li', k.inFlight + ' in flight: key ' + k.id + ' (' + k.group + (k.label ? ', ' + k.label : '') + ')', { 'data-key-id': k.id }))
    : [el('li', 'none', { class: 'muted' })]));
}

function draw() { trim(); drawCalls(); drawSpend(); drawRefusals(); }

const token = new URLSearchParams(location.search).get('token');
const events = new EventSource('events' + (token ? '?token=' + encodeURIComponent(token) : ''));
events.addEventListener('open', () => { $('state').textContent = 'live'; $('state').className = 'live'; });
events.addEventListener('error', () => { $('state').textContent = 'disconnected, retrying'; $('state').className = 'down'; });
events.addEventListener('snapshot', (e) => {
  const s = JSON.parse(e.data);
  if (s.history) {
    minutes.clear();
    for (const b of s.history.minutes) minutes.set(b.minute, { calls: b.calls, refusals: b.refusals, spend: new Map(Object.entries(b.spend)) });
    refusals = s.history.refusals.slice(0, MAX_REFUSALS);
  }
  drawSnapshot(s);
  draw();
});
events.addEventListener('call', (e) => {
  const c = JSON.parse(e.data);
  addCall(c);
  if (c.status >= 400) addRefusal(c);
  draw();
});
setInterval(draw, 30000);
</script>
</body>
</html>
`;
}
