// Back-pressure and bounded stream memory: a client that stops reading a stream pauses the upstream
// instead of growing the gateway's memory, the stream resumes intact when the client reads again, and
// what metering keeps of one endless or giant event is bounded without losing its usage.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { test } from 'node:test';
import { SseSplitter } from '../src/wire/sse.ts';
import { createUsageMeter } from '../src/metering/usage.ts';
import { providersAt, startFixture } from './support/fixture.ts';

const CHUNK = Buffer.alloc(64 * 1024, 'a');
const TOTAL_CHUNKS = 2048; // 128 MiB, far more than every socket buffer on the way holds

test('a client that stops reading pauses the upstream; reading again delivers every byte', async () => {
  let written = 0;
  let blocked: () => void = () => undefined;
  const upstreamBlocked = new Promise<void>((resolve) => (blocked = resolve));
  const upstream = http.createServer(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (let i = 0; i < TOTAL_CHUNKS; i++) {
      written += CHUNK.length;
      if (!res.write(CHUNK)) {
        blocked();
        await once(res, 'drain');
      }
    }
    res.end();
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const { port } = upstream.address() as net.AddressInfo;
  const fx = await startFixture(
    {},
    {
      providers: providersAt(port),
    },
  );
  try {
    const { socketPath } = await fx.gateway.mint({ group: 'g' });
    const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, stream: true, messages: [] });
    const socket = net.connect(socketPath);
    socket.write(
      `POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    );
    await once(socket, 'readable');
    socket.pause(); // the client stops reading

    // The upstream is pushed back: its writes stop long before the stream's end.
    await upstreamBlocked;
    const settle = written;
    await new Promise((resolve) => setTimeout(resolve, 300));
    const heldBack = written;
    assert.ok(heldBack < 32 * 1024 * 1024, `the upstream wrote ${heldBack} bytes to a client that reads nothing`);
    assert.ok(heldBack - settle <= 16 * CHUNK.length, 'the upstream kept writing while the client read nothing');

    // Reading again: every byte arrives.
    let received = 0;
    socket.on('data', (chunk: Buffer) => (received += chunk.length));
    socket.resume();
    await new Promise<void>((resolve) => {
      const check = () => (received >= TOTAL_CHUNKS * CHUNK.length ? resolve() : undefined);
      socket.on('data', check);
    });
    assert.equal(written, TOTAL_CHUNKS * CHUNK.length);
    socket.destroy();
  } finally {
    await fx.close();
    upstream.closeAllConnections();
    upstream.close();
  }
});

test('the metering splitter keeps at most its bound of an event that never ends, head and tail', () => {
  const splitter = new SseSplitter({ maxEventChars: 256 * 1024 });
  splitter.push(Buffer.from('event: response.completed\ndata: {"type":"response.completed","response":{"instructions":"'));
  for (let i = 0; i < 512; i++) {
    assert.deepEqual(splitter.push(CHUNK), []);
    assert.ok(splitter.pendingChars <= 256 * 1024, `kept ${splitter.pendingChars} chars`);
  }
  const [event] = splitter.push(Buffer.from('","usage":{"input_tokens":7}}}\n\n'));
  assert.equal(event!.event, 'response.completed');
  assert.equal(event!.truncated, true);
  assert.ok(event!.data.startsWith('{"type":"response.completed"'));
  assert.ok(event!.data.endsWith('"usage":{"input_tokens":7}}}'));
  assert.equal(splitter.pendingChars, 0);
});

test('a Responses stream whose final event is too long to keep whole is still metered from its tail', () => {
  const meter = createUsageMeter('responses', true)!;
  const instructions = 'x'.repeat(3 * 1024 * 1024);
  const final = JSON.stringify({
    type: 'response.completed',
    response: { instructions, output: [], usage: { input_tokens: 1_000_000, output_tokens: 20, input_tokens_details: { cached_tokens: 0 } } },
  });
  const stream = Buffer.from(`event: response.completed\ndata: ${final}\n\n`);
  for (let at = 0; at < stream.length; at += 64 * 1024) meter.push(stream.subarray(at, at + 64 * 1024));
  const result = meter.result()!;
  assert.equal(result.reported, true);
  assert.equal(result.usage.inputTokens, 1_000_000);
  assert.equal(result.usage.outputTokens, 20);
});
