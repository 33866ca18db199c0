// The metering fast path (issue 20): chunks of whole, plain events are read by position
// (wire/sse.ts PlainEvents) instead of through the splitter. Anything else must fall back, and the
// meter must come to the same figures whichever way a stream's bytes are cut.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { createUsageMeter } from '../src/metering/usage.ts';
import type { Endpoint } from '../src/wire/endpoints.ts';
import { PlainEvents } from '../src/wire/sse.ts';

const text = (chunk: Buffer, span: { start: number; end: number }) => chunk.toString('utf8', span.start, span.end);

describe('PlainEvents', () => {
  test('reads named and data-only events by position, with or without the space after the colon', () => {
    const chunk = Buffer.from('event: message_start\ndata: {"a":1}\n\ndata:{"b":"é"}\n\nevent:ping\ndata: \n\n');
    const spans = new PlainEvents().read(chunk);
    assert.deepEqual(
      spans?.map((span) => [span.event, text(chunk, span)]),
      [
        ['message_start', '{"a":1}'],
        ['', '{"b":"é"}'],
        ['ping', ''],
      ],
    );
  });

  test('leaves every other chunk to the splitter', () => {
    const plain = new PlainEvents();
    for (const other of [
      'event: a\ndata: {}\n', // not ended by a blank line
      'event: a\r\ndata: {}\r\n\r\n', // CR line ends
      ': keep-alive\n\n', // a comment
      'id: 7\ndata: {}\n\n', // another field
      'data: one\ndata: two\n\n', // several data lines
      'event: a\n\n', // no data line
      'event: a\ndata: {}\n\n\n', // a stray blank line
      '\n',
    ]) {
      assert.equal(plain.read(Buffer.from(other)), undefined, JSON.stringify(other));
    }
  });

  test('an event name equal to the last one is the same string; a new one is read anew', () => {
    const plain = new PlainEvents();
    const first = plain.read(Buffer.from('event: content_block_delta\ndata: {}\n\n'))![0]!.event;
    const again = plain.read(Buffer.from('event: content_block_delta\ndata: {}\n\n'))![0]!.event;
    const other = plain.read(Buffer.from('event: content_block_delte\ndata: {}\n\n'))![0]!.event;
    assert.equal(first, 'content_block_delta');
    assert.equal(again, 'content_block_delta');
    assert.equal(other, 'content_block_delte');
  });

  test('a name that starts as the last one but goes on, or stops short, is its own; a CR after it leaves the chunk to the splitter', () => {
    const plain = new PlainEvents();
    const name = (line: string) => plain.read(Buffer.from(`${line}\ndata: {}\n\n`))?.[0]?.event;
    assert.equal(name('event: message_delta'), 'message_delta');
    assert.equal(name('event: message_deltas'), 'message_deltas');
    assert.equal(name('event: message_delta'), 'message_delta');
    assert.equal(name('event: message_delt'), 'message_delt');
    assert.equal(name('event:message_delt'), 'message_delt');
    assert.equal(plain.read(Buffer.from('event: message_delt\r\ndata: {}\r\n\r\n')), undefined);
    assert.equal(name('event:'), '');
    assert.equal(name('event: '), '');
    assert.equal(name('event: ping'), 'ping');
  });
});

/** A stream of one API's events, in the forms providers send and some they may. */
function anthropicEvents(texts: string[], final: boolean, crlf: boolean, split: boolean): string {
  const nl = crlf ? '\r\n' : '\n';
  const event = (name: string, data: unknown) => `event: ${name}${nl}data: ${JSON.stringify(data)}${nl}${nl}`;
  let out = event('message_start', { type: 'message_start', message: { usage: { input_tokens: 12, cache_read_input_tokens: 3, output_tokens: 1 } } });
  for (const piece of texts) {
    const delta = { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: piece } };
    // A data field split over two lines is legal SSE (joined by a newline): the slow path reads it.
    out += split ? `event: content_block_delta${nl}data: ${JSON.stringify(delta).replace(',', `,${nl}data: `)}${nl}${nl}` : event('content_block_delta', delta);
  }
  out += `: a comment${nl}${nl}`;
  if (final) out += event('message_delta', { type: 'message_delta', usage: { output_tokens: 99 } });
  return out;
}

function chatEvents(texts: string[], final: boolean): string {
  let out = '';
  for (const piece of texts) out += `data: ${JSON.stringify({ choices: [{ delta: { content: piece } }] })}\n\n`;
  if (final) out += `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 20, completion_tokens: 7 } })}\n\n`;
  return `${out}data: [DONE]\n\n`;
}

/**
 * The meter's result for `bytes` cut at `cuts` (offsets), one event per chunk (as providers write:
 * the fast path), and one byte at a time (always the splitter).
 */
function meterBothWays(endpoint: Endpoint, bytes: Buffer, cuts: number[]) {
  const chunked = createUsageMeter(endpoint, true)!;
  let from = 0;
  for (const cut of [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)) {
    if (cut > from) chunked.push(bytes.subarray(from, cut));
    from = Math.max(from, cut);
  }
  if (from < bytes.length) chunked.push(bytes.subarray(from));
  const eventWise = createUsageMeter(endpoint, true)!;
  for (const event of bytes.toString('utf8').split(/(?<=\r?\n\r?\n)/)) eventWise.push(Buffer.from(event));
  const byteWise = createUsageMeter(endpoint, true)!;
  for (let i = 0; i < bytes.length; i++) byteWise.push(bytes.subarray(i, i + 1));
  assert.deepEqual(eventWise.result(), byteWise.result());
  return { chunked: chunked.result(), byteWise: byteWise.result() };
}

describe('the stream meter reads the same figures however the bytes are cut', () => {
  const pieces = fc.array(fc.string({ unit: fc.constantFrom('a', 'é', '😀', '"', '\\', '\n', ' ', 'z'), maxLength: 12 }), { maxLength: 20 });

  test('Anthropic messages: plain, CRLF, split data lines, with and without the final counts', () => {
    fc.assert(
      fc.property(pieces, fc.boolean(), fc.boolean(), fc.boolean(), fc.array(fc.nat(), { maxLength: 30 }), (texts, final, crlf, split, cuts) => {
        const bytes = Buffer.from(anthropicEvents(texts, final, crlf, split));
        const { chunked, byteWise } = meterBothWays('messages', bytes, cuts);
        assert.deepEqual(chunked, byteWise);
        assert.equal(chunked?.reported, final);
        if (final) assert.equal(chunked?.usage.outputTokens, 99);
        // Cut short: the text delivered, each escape as written, a character per code point, 4 a token
        // (message_start's own count of 1 is the floor).
        const chars = texts.reduce((sum, piece) => sum + [...JSON.stringify(piece).slice(1, -1)].length, 0);
        if (!final) assert.equal(chunked?.usage.outputTokens, Math.max(1, Math.ceil(chars / 4)));
      }),
      { numRuns: 300 },
    );
  });

  test('OpenAI chat completions: data-only chunks', () => {
    fc.assert(
      fc.property(pieces, fc.boolean(), fc.array(fc.nat(), { maxLength: 30 }), (texts, final, cuts) => {
        const bytes = Buffer.from(chatEvents(texts, final));
        const { chunked, byteWise } = meterBothWays('chat_completions', bytes, cuts);
        assert.deepEqual(chunked, byteWise);
        if (final) assert.equal(chunked?.usage.outputTokens, 7);
      }),
      { numRuns: 300 },
    );
  });

  test('a stream cut before its final counts is estimated from its text: escapes as written, a character per code point', () => {
    const bytes = Buffer.from(anthropicEvents(['abcd', 'é😀', 'a"b'], false, false, false));
    const meter = createUsageMeter('messages', true)!;
    meter.push(bytes);
    // 4 + 2 + 4 (`a\"b`: the escape counts as written) = 10 characters: 3 tokens at 4 a token.
    assert.deepEqual({ reported: meter.result()?.reported, output: meter.result()?.usage.outputTokens }, { reported: false, output: 3 });
  });
});
