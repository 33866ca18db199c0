// Fake Anthropic upstream for the benchmark: a minimal node:http server in its own process.
// POST /v1/messages answers a small JSON message, or with "stream":true an SSE stream of N events
// (header x-bench-events, default 1000), each event its own write, as fast as the socket takes them.
// With x-bench-pace-ms the events are spaced by that many ms instead, each carrying the monotonic
// time (process.hrtime, system-wide CLOCK_MONOTONIC) it was written at, so the client can measure
// per-event one-way delay. Every request must carry the expected real key (x-api-key); mismatches
// are counted and reported over IPC. BENCH_UPSTREAM_PORT pins its loopback port (default: any free one).
import http from 'node:http';

const EXPECTED_KEY = process.env.BENCH_REAL_KEY;
const stats = { requests: 0, streams: 0, keyMismatches: 0, mismatchSamples: /** @type {{ url?: string, headers: string[] }[]} */ ([]) };
// Forked by bench/run.mjs, so the IPC channel is always there; its messages are plain JSON.
const send = /** @type {NonNullable<typeof process.send>} */ (process.send).bind(process);

const MESSAGE = Buffer.from(
  JSON.stringify({
    id: 'msg_bench01',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-5',
    content: [{ type: 'text', text: 'Hello from the bench upstream.' }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: { input_tokens: 12, output_tokens: 8, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
  }),
);
const JSON_HEADERS = { 'content-type': 'application/json', 'content-length': MESSAGE.length, 'request-id': 'req_bench' };
const SSE_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': 'req_bench' };

const ev = (name, data) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
const START = ev('message_start', {
  type: 'message_start',
  message: {
    id: 'msg_bench01',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-5',
    content: [],
    stop_reason: null,
    stop_sequence: null,
    usage: { input_tokens: 12, output_tokens: 1 },
  },
});
const BLOCK_START = ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
const DELTA = ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'tok ' } });
const BLOCK_STOP = ev('content_block_stop', { type: 'content_block_stop', index: 0 });
const stopEvents = (n) => ev('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: n } });
const STOP = ev('message_stop', { type: 'message_stop' });
// Paced deltas carry their send time: `"t":"<ns>"` right after `"type"` so the client finds it cheaply.
const pacedDelta = () =>
  `event: content_block_delta\ndata: {"type":"content_block_delta","t":"${process.hrtime.bigint()}","index":0,"delta":{"type":"text_delta","text":"tok "}}\n\n`;

function events(n) {
  const out = [START, BLOCK_START];
  for (let i = 0; i < n - 5; i++) out.push(DELTA);
  out.push(BLOCK_STOP, stopEvents(n - 5), STOP);
  return out;
}
const eventCache = new Map();

function streamFast(res, n) {
  let list = eventCache.get(n);
  if (!list) {
    list = events(n);
    eventCache.set(n, list);
  }
  let i = 0;
  const pump = () => {
    while (i < list.length) {
      if (!res.write(list[i++])) return void res.once('drain', pump);
    }
    res.end();
  };
  pump();
}

function streamPaced(res, n, paceMs) {
  res.write(START);
  let i = 1;
  const timer = setInterval(() => {
    if (res.destroyed || i >= n - 1) {
      clearInterval(timer);
      if (!res.destroyed) res.end(STOP);
      return;
    }
    res.write(pacedDelta());
    i++;
  }, paceMs);
}

const server = http.createServer({ keepAliveTimeout: 60_000, noDelay: true }, (req, res) => {
  stats.requests++;
  if (req.headers['x-api-key'] !== EXPECTED_KEY) {
    stats.keyMismatches++;
    if (stats.mismatchSamples.length < 3) stats.mismatchSamples.push({ url: req.url, headers: Object.keys(req.headers) });
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST' || !req.url?.startsWith('/v1/messages')) {
      res.writeHead(404, { 'content-type': 'application/json' });
      return void res.end('{"type":"error","error":{"type":"not_found_error","message":"bench upstream"}}');
    }
    const body = Buffer.concat(chunks).toString();
    if (!/"stream"\s*:\s*true/.test(body)) {
      res.writeHead(200, JSON_HEADERS);
      return void res.end(MESSAGE);
    }
    stats.streams++;
    res.writeHead(200, SSE_HEADERS);
    res.flushHeaders();
    const n = Number(req.headers['x-bench-events'] ?? 1000);
    const pace = Number(req.headers['x-bench-pace-ms'] ?? 0);
    if (pace > 0) streamPaced(res, n, pace);
    else streamFast(res, n);
  });
});

server.listen(Number(process.env.BENCH_UPSTREAM_PORT ?? 0), '127.0.0.1', () => {
  send({ type: 'ready', port: /** @type {import('node:net').AddressInfo} */ (server.address()).port });
});
process.on('message', (/** @type {any} */ msg) => {
  if (msg.type === 'stats') send({ type: 'stats', stats, cpu: process.cpuUsage() });
  if (msg.type === 'reset') {
    stats.requests = 0;
    stats.streams = 0;
  }
  if (msg.type === 'exit') server.close(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
