// Bedrock event streams: messages made by the real codec decoded however the stream is cut, the bytes of
// each event exactly as encoded (thinking signatures), exceptions, garbage and oversized lengths refused
// without buffering, and the SSE conversions both ways read back with the gateway's own SSE splitter.
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import { describe, test } from 'node:test';
import { EventStreamCodec, type MessageHeaders } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import {
  type BedrockStreamItem,
  BedrockStreamDecoder,
  encodeChunkMessage,
  encodeExceptionMessage,
  MAX_EVENT_STREAM_MESSAGE_BYTES,
  sseFromEvent,
} from '../src/wire/eventstream.ts';
import { SseSplitter } from '../src/wire/sse.ts';

const codec = new EventStreamCodec(toUtf8, fromUtf8);
const str = (value: string) => ({ type: 'string' as const, value });

/** A message as Bedrock sends it: made by the real codec, with the `p` padding field. */
function bedrockChunk(eventJson: string | Buffer, padding = 'abcdefghijklmnopqrstuvwxyzABCDEFGH'): Buffer {
  const payload = JSON.stringify({ bytes: Buffer.from(eventJson).toString('base64'), p: padding });
  return message({ ':event-type': str('chunk'), ':content-type': str('application/json'), ':message-type': str('event') }, payload);
}

function message(headers: MessageHeaders, payload: string | Uint8Array): Buffer {
  const body = typeof payload === 'string' ? fromUtf8(payload) : payload;
  return Buffer.from(codec.encode({ headers, body }));
}

/** Raw bytes of a JSON event: a raw U+2028, `ÿ`, and a signature whose base64 holds `+`, `/` and `=`. */
const SIGNATURE_EVENT = Buffer.from(
  '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCkYIBRgCIkD+/x=="},"t":"\u2028?>\u00ff?"}',
);

// A thinking turn as Claude streams it; Bedrock adds its invocation metrics to message_stop.
const TURN = [
  '{"type":"message_start","message":{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}',
  '{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}',
  '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think \u2014 ok."}}',
  SIGNATURE_EVENT.toString(),
  '{"type":"content_block_stop","index":0}',
  '{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}',
  '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi \ud83d\udc4b"}}',
  '{"type":"content_block_stop","index":1}',
  '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}',
  '{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":42,"invocationLatency":900,"firstByteLatency":300}}',
].map((event) => Buffer.from(event));

/** Feeds `stream` in pieces of `size` bytes, collecting every item and the most bytes ever pending. */
function decodeIn(stream: Buffer, size: number): { items: BedrockStreamItem[]; maxPending: number } {
  const decoder = new BedrockStreamDecoder();
  const items: BedrockStreamItem[] = [];
  let maxPending = 0;
  for (let at = 0; at < stream.length; at += size) {
    items.push(...decoder.push(stream.subarray(at, at + size)));
    maxPending = Math.max(maxPending, decoder.pending);
  }
  assert.equal(decoder.pending, 0, 'nothing left over');
  return { items, maxPending };
}

const events = (items: BedrockStreamItem[]) => items.map((item) => ('event' in item ? item.event : assert.fail(`not an event: ${JSON.stringify(item)}`)));

describe('decoding', () => {
  const stream = Buffer.concat(TURN.map((event) => bedrockChunk(event)));

  test('a whole turn in one chunk: every event, bytes identical', () => {
    const { items } = decodeIn(stream, stream.length);
    assert.deepEqual(events(items), TURN);
  });

  test('any chunking, 1 byte at a time included, gives the same events; pending never exceeds one message', () => {
    const longest = Math.max(...TURN.map((event) => bedrockChunk(event).length));
    for (const size of [1, 2, 3, 5, 11, 12, 13, 64, 333, 1000]) {
      const { items, maxPending } = decodeIn(stream, size);
      assert.deepEqual(events(items), TURN, `chunks of ${size}`);
      assert.ok(maxPending < longest, `chunks of ${size}: ${maxPending} pending`);
    }
  });

  test('pending counts the bytes of the unfinished message', () => {
    const one = bedrockChunk(TURN[0]!);
    const decoder = new BedrockStreamDecoder();
    assert.deepEqual(decoder.push(one.subarray(0, 5)), []);
    assert.equal(decoder.pending, 5);
    assert.deepEqual(decoder.push(one.subarray(5, 40)), []);
    assert.equal(decoder.pending, 40);
    assert.deepEqual(events(decoder.push(Buffer.concat([one.subarray(40), one.subarray(0, 7)]))), [TURN[0]]);
    assert.equal(decoder.pending, 7);
  });

  test('a signature event survives byte for byte (raw U+2028, base64 with + / =)', () => {
    const chunk = bedrockChunk(SIGNATURE_EVENT);
    const base64 = (JSON.parse(Buffer.from(codec.decode(chunk).body).toString()) as { bytes: string }).bytes;
    for (const char of '+/=') assert.ok(base64.includes(char), `the base64 holds ${char}`);
    assert.ok(SIGNATURE_EVENT.includes(Buffer.from('\u2028')), 'raw U+2028 in the event');
    for (const size of [1, 7, chunk.length]) {
      const [item] = decodeIn(chunk, size).items;
      assert.ok(item && 'event' in item && item.event.equals(SIGNATURE_EVENT));
    }
  });

  test('event messages other than chunk are skipped', () => {
    const other = message({ ':event-type': str('metadata'), ':message-type': str('event') }, '{}');
    const { items } = decodeIn(Buffer.concat([other, bedrockChunk(TURN[0]!), other]), 1);
    assert.deepEqual(events(items), [TURN[0]]);
  });

  test('1 MiB fed 1 byte at a time stays linear', (t) => {
    const big = Buffer.from(JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'x'.repeat(768 * 1024) } }));
    const one = bedrockChunk(big);
    const decoder = new BedrockStreamDecoder();
    const items: BedrockStreamItem[] = [];
    const started = process.hrtime.bigint();
    for (let at = 0; at < one.length; at++) items.push(...decoder.push(one.subarray(at, at + 1)));
    const ns = Number(process.hrtime.bigint() - started);
    t.diagnostic(`${one.length} bytes 1 at a time: ${(ns / one.length).toFixed(0)} ns/byte`);
    assert.ok(items.length === 1 && 'event' in items[0]! && items[0].event.equals(big));
    // Quadratic copying would move ~5e11 bytes here: minutes, not this.
    assert.ok(ns < 10e9, `${ns / 1e6} ms`);
  });
});

describe('exceptions', () => {
  test('encodeExceptionMessage round-trips, mid-stream, through the real codec', () => {
    const exception = encodeExceptionMessage('throttlingException', 'Too many requests, please wait before trying again.');
    const decoded = codec.decode(exception);
    assert.equal(decoded.headers[':message-type']?.value, 'exception');
    assert.equal(decoded.headers[':exception-type']?.value, 'throttlingException');
    assert.deepEqual(JSON.parse(Buffer.from(decoded.body).toString()), { message: 'Too many requests, please wait before trying again.' });
    const { items } = decodeIn(Buffer.concat([bedrockChunk(TURN[0]!), exception]), 3);
    assert.deepEqual(items.slice(1), [{ exception: { type: 'throttlingException', message: 'Too many requests, please wait before trying again.' } }]);
  });

  test('the exception types Bedrock sends, as its codec makes them', () => {
    for (const type of ['throttlingException', 'modelStreamErrorException', 'internalServerException', 'validationException']) {
      const raw = message(
        { ':exception-type': str(type), ':content-type': str('application/json'), ':message-type': str('exception') },
        `{"message":"${type} happened"}`,
      );
      assert.deepEqual(decodeIn(raw, 1).items, [{ exception: { type, message: `${type} happened` } }]);
    }
  });

  test('a payload that is not JSON is the message; the event-stream protocol error too; both bounded', () => {
    const plain = message({ ':exception-type': str('internalServerException'), ':message-type': str('exception') }, 'upstream fell over');
    const protocol = message({ ':error-code': str('InternalFailure'), ':error-message': str('e'.repeat(10_000)), ':message-type': str('error') }, '');
    const huge = message({ ':exception-type': str('x'.repeat(1000)), ':message-type': str('exception') }, JSON.stringify({ message: 'm'.repeat(100_000) }));
    const [a, b, c] = decodeIn(Buffer.concat([plain, protocol, huge]), 4096).items as { exception: { type: string; message: string } }[];
    assert.deepEqual(a, { exception: { type: 'internalServerException', message: 'upstream fell over' } });
    assert.equal(b!.exception.type, 'InternalFailure');
    assert.ok(b!.exception.message.length <= 2051);
    assert.ok(c!.exception.type.length <= 131 && c!.exception.message.length <= 2051);
  });
});

describe('garbage is refused, never buffered', () => {
  /** Pushes `stream` 1 byte at a time; returns the error and the bytes pushed when it came. */
  function failure(stream: Buffer): { error: Error; at: number; decoder: BedrockStreamDecoder } {
    const decoder = new BedrockStreamDecoder();
    for (let at = 0; at < stream.length; at++) {
      try {
        decoder.push(stream.subarray(at, at + 1));
      } catch (error) {
        return { error: error as Error, at: at + 1, decoder };
      }
    }
    assert.fail('no error');
  }

  /** A prelude declaring `total` and `headers` lengths, with its CRC right. */
  function prelude(total: number, headers: number): Buffer {
    const bytes = Buffer.alloc(12);
    bytes.writeUInt32BE(total, 0);
    bytes.writeUInt32BE(headers, 4);
    bytes.writeUInt32BE(crc32(bytes.subarray(0, 8)), 8);
    return bytes;
  }

  test('a flipped payload byte: message CRC mismatch; the decoder stays failed', () => {
    const good = bedrockChunk(TURN[0]!);
    const bad = Buffer.from(good);
    bad[bad.length - 20]! ^= 1;
    const { error, at, decoder } = failure(Buffer.concat([bedrockChunk(TURN[1]!), bad]));
    assert.match(error.message, /Bedrock event stream: a garbled message \(The message checksum/);
    assert.equal(at, good.length + bedrockChunk(TURN[1]!).length);
    assert.throws(() => decoder.push(good), /garbled/);
  });

  test('a flipped length byte: prelude CRC mismatch, on the 12th byte', () => {
    const bad = bedrockChunk(TURN[0]!);
    bad[2]! ^= 0x10;
    const { error, at } = failure(bad);
    assert.match(error.message, /prelude CRC mismatch/);
    assert.equal(at, 12);
  });

  test('a declared length over the bound throws on its prelude, before anything is allocated', () => {
    const { error, at, decoder } = failure(Buffer.concat([prelude(MAX_EVENT_STREAM_MESSAGE_BYTES + 1, 0), Buffer.alloc(64)]));
    assert.match(error.message, /16777217 bytes declared, over the 16777216-byte bound/);
    assert.equal(at, 12);
    assert.equal(decoder.pending, 12);
    assert.match(failure(prelude(0xffffffff, 0)).error.message, /over the/);
  });

  test('impossible lengths: shorter than a prelude and CRC, or headers longer than the message', () => {
    assert.match(failure(prelude(15, 0)).error.message, /impossible lengths/);
    assert.match(failure(prelude(100, 85)).error.message, /impossible lengths/);
  });

  test("a header value said to run past its message (CRCs right) throws, and never shows the next bytes' content", () => {
    // The codec reads a string header through the ArrayBuffer under the message it is given: handed a
    // slice of a larger buffer, this `:exception-type` would take in the bytes that follow.
    const header = (name: string, value: Buffer, length = value.length) =>
      Buffer.concat([Buffer.from([name.length]), Buffer.from(name), Buffer.from([7, length >> 8, length & 0xff]), value]);
    const headers = Buffer.concat([header(':message-type', Buffer.from('exception')), header(':exception-type', Buffer.from('x'), 40)]);
    const total = 12 + headers.length + 2 + 4;
    const bytes = Buffer.concat([prelude(total, headers.length), headers, Buffer.from('{}'), Buffer.alloc(4)]);
    bytes.writeUInt32BE(crc32(bytes.subarray(0, total - 4)), total - 4);
    const stream = Buffer.concat([bytes, Buffer.from('SECRET-'.repeat(20))]);
    for (const size of [1, stream.length]) {
      const decoder = new BedrockStreamDecoder();
      assert.throws(
        () => {
          for (let at = 0; at < stream.length; at += size) decoder.push(stream.subarray(at, at + size));
        },
        (error: Error) => /garbled message/.test(error.message) && !error.message.includes('SECRET'),
      );
    }
  });

  test('chunks that are not JSON, lack their bytes, or are not base64; an unknown message type', () => {
    const chunk = (payload: string) => message({ ':event-type': str('chunk'), ':message-type': str('event') }, payload);
    assert.match(failure(chunk('not json')).error.message, /not JSON/);
    assert.match(failure(chunk('{"p":"x"}')).error.message, /without its bytes/);
    assert.match(failure(chunk('{"bytes":"eyJ0eXBlIjoi!!!!"}')).error.message, /not base64/);
    assert.match(failure(message({ ':message-type': str('surprise') }, '{}')).error.message, /unknown :message-type "surprise"/);
    assert.match(failure(message({}, '{}')).error.message, /unknown :message-type "\(none\)"/);
  });
});

describe('encoding', () => {
  test("encodeChunkMessage is Bedrock's chunk, as the real codec reads it", () => {
    const decoded = codec.decode(encodeChunkMessage(SIGNATURE_EVENT));
    assert.deepEqual(Object.fromEntries(Object.entries(decoded.headers).map(([name, header]) => [name, header.value])), {
      ':event-type': 'chunk',
      ':content-type': 'application/json',
      ':message-type': 'event',
    });
    assert.deepEqual(JSON.parse(Buffer.from(decoded.body).toString()), { bytes: SIGNATURE_EVENT.toString('base64') });
  });
});

describe('SSE both ways', () => {
  /** The Anthropic SSE stream of TURN, as the Messages API sends it. */
  const sse = Buffer.concat(TURN.map((event) => Buffer.from(`event: ${JSON.parse(event.toString()).type}\ndata: ${event}\n\n`)));

  test('Bedrock upstream, Messages client: sseFromEvent rebuilds the SSE stream byte for byte', () => {
    const { items } = decodeIn(Buffer.concat(TURN.map((event) => bedrockChunk(event))), 7);
    const out = Buffer.concat(events(items).map(sseFromEvent));
    assert.ok(out.equals(sse));
    const splitter = new SseSplitter();
    const parsed = [...out].flatMap((_, at) => splitter.push(out.subarray(at, at + 1)));
    assert.deepEqual(
      parsed.map((event) => [event.event, event.data]),
      TURN.map((event) => [JSON.parse(event.toString()).type, event.toString()]),
    );
  });

  test('SSE upstream, Bedrock client: each data payload in a chunk message decodes to its bytes', () => {
    const splitter = new SseSplitter();
    const messages: Buffer[] = [];
    for (let at = 0; at < sse.length; at += 5)
      for (const event of splitter.push(sse.subarray(at, at + 5))) messages.push(encodeChunkMessage(Buffer.from(event.data)));
    assert.deepEqual(events(decodeIn(Buffer.concat(messages), 1).items), TURN);
  });

  test('the type is read where it stands, and must be a plain word', () => {
    const later = Buffer.from('{"index":0,"type":"content_block_stop"}');
    assert.equal(sseFromEvent(later).toString(), `event: content_block_stop\ndata: ${later}\n\n`);
    const spaced = Buffer.from(' { "type" : "ping" }');
    assert.equal(sseFromEvent(spaced).toString(), `event: ping\ndata: ${spaced}\n\n`);
    assert.throws(() => sseFromEvent(Buffer.from('{"type":"a\\nevent: x"}')), /without a plain top-level type/);
    assert.throws(() => sseFromEvent(Buffer.from(`{"type":"${'a'.repeat(65)}"}`)), /without a plain top-level type/);
    assert.throws(() => sseFromEvent(Buffer.from('{"delta":{"type":"text_delta"}}')), /without a plain top-level type/);
    assert.throws(() => sseFromEvent(Buffer.from('[1,2')), /not JSON/);
  });

  test('line breaks in an event become data lines of one event, the same JSON', () => {
    const pretty = Buffer.from('{\n  "type": "message_delta",\r\n  "usage": {"output_tokens": 3}\r}');
    const [event, ...rest] = new SseSplitter().push(sseFromEvent(pretty));
    assert.deepEqual(rest, []);
    assert.equal(event!.event, 'message_delta');
    assert.deepEqual(JSON.parse(event!.data), { type: 'message_delta', usage: { output_tokens: 3 } });
  });
});
