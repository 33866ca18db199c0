// A loopback HTTP server that plays the Amazon Bedrock runtime for tests: it checks every request's
// SigV4 signature (with the independent verifier in ./sigv4.ts) or its Bedrock API key, answers
// InvokeModel as Anthropic message JSON and InvokeModelWithResponseStream as an AWS event stream of
// Anthropic events (each base64 in a `chunk` message, as Bedrock sends them), counts tokens, and can
// be told to fail the next call. It records what it received, raw, for tests to assert on.
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import type { Block } from './scripted-model.ts';
import { verifySigV4 } from './sigv4.ts';

export interface BedrockStandinOptions {
  accessKeyId: string;
  secretAccessKey: string;
  /** A Bedrock API key accepted as `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  region: string;
  script?: BedrockScript;
}

/** What the model answers to a request body (JSON) for a model id (URL-decoded). */
export type BedrockScript = (body: Record<string, unknown>, modelId: string) => { content: Block[]; stopReason: string };

export interface BedrockSeen {
  method: string;
  /** path and query exactly as received */
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** How the request authenticated, or 'refused'. */
  auth: 'sigv4' | 'bearer' | 'refused';
  /** The SigV4 credential's access key id, when signed. */
  accessKeyId?: string;
}

export interface BedrockError {
  status: number;
  /** `x-amzn-errortype`, e.g. ThrottlingException, ValidationException, AccessDeniedException. */
  type: string;
  message: string;
}

export interface BedrockStandin {
  url: string;
  port: number;
  seen: BedrockSeen[];
  /** Replaceable between calls. */
  script: BedrockScript;
  /** The exact JSON bytes of each Anthropic event of the last stream, before base64: what a client must receive byte-identical. */
  lastStreamEvents: Buffer[];
  /** The next authenticated model call (invoke, stream or count-tokens) answers this error instead. */
  failNext(error: BedrockError): void;
  close(): Promise<void>;
}

export const STANDIN_USAGE = { input_tokens: 40, output_tokens: 12, cache_creation_input_tokens: 5, cache_read_input_tokens: 7 };

/** A thinking signature whose bytes change if the event JSON is parsed and serialised again: U+2028 is sent escaped. */
export const TRICKY_SIGNATURE = 'sig\u2028+/==';

export const defaultScript: BedrockScript = () => ({ content: [{ type: 'text', text: 'Hello from the Bedrock stand-in.' }], stopReason: 'end_turn' });

/** A thinking block (signed with TRICKY_SIGNATURE) before the default text. */
export const thinkingScript: BedrockScript = () => ({
  content: [
    { type: 'thinking', thinking: 'Let me think.', signature: TRICKY_SIGNATURE },
    { type: 'text', text: 'Thought about it.' },
  ],
  stopReason: 'end_turn',
});

const MAX_BODY = 20 * 1024 * 1024;
const ROUTE = /^\/model\/([^/]+)\/(invoke|invoke-with-response-stream|count-tokens)$/;
const codec = new EventStreamCodec(toUtf8, fromUtf8);

export async function startBedrockStandin(options: BedrockStandinOptions): Promise<BedrockStandin> {
  let nextError: BedrockError | undefined;
  let requests = 0;
  const standin = {
    seen: [] as BedrockSeen[],
    script: options.script ?? defaultScript,
    lastStreamEvents: [] as Buffer[],
    failNext(error: BedrockError) {
      nextError = error;
    },
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) req.destroy();
      else chunks.push(chunk);
    });
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const path = req.url ?? '/';
      const seen: BedrockSeen = { method: req.method ?? '', path, headers: req.headers, body, auth: 'refused' };
      standin.seen.push(seen);
      const requestId = `standin-${++requests}`;
      const fail = (error: BedrockError) => {
        const json = JSON.stringify({ message: error.message });
        res.writeHead(error.status, {
          'content-type': 'application/json',
          'x-amzn-errortype': error.type,
          'x-amzn-requestid': requestId,
          'content-length': Buffer.byteLength(json),
        });
        res.end(json);
      };

      Object.assign(seen, authenticate(options, { method: seen.method, path, headers: req.headers, body }));
      if (seen.auth === 'refused') {
        fail({ status: 403, type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' });
        return;
      }
      const queryAt = path.indexOf('?');
      const pathname = queryAt < 0 ? path : path.slice(0, queryAt);
      if (req.method === 'GET' && pathname.startsWith('/inference-profiles')) {
        fail({ status: 404, type: 'ResourceNotFoundException', message: 'The inference profile was not found.' });
        return;
      }
      const route = req.method === 'POST' ? ROUTE.exec(pathname) : null;
      if (!route) {
        fail({ status: 404, type: 'UnknownOperationException', message: 'Unknown operation' });
        return;
      }
      if (nextError) {
        fail(nextError);
        nextError = undefined;
        return;
      }
      let modelId: string;
      let json: Record<string, unknown>;
      try {
        modelId = decodeURIComponent(route[1]!);
        json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      } catch {
        fail({ status: 400, type: 'ValidationException', message: 'Malformed input request, please reformat your input and try again.' });
        return;
      }
      if (route[2] === 'count-tokens') {
        const inner = (json.input as { invokeModel?: { body?: unknown } } | undefined)?.invokeModel?.body;
        if (typeof inner !== 'string') {
          fail({ status: 400, type: 'ValidationException', message: 'input.invokeModel.body is required' });
          return;
        }
        const answer = JSON.stringify({ inputTokens: countTokens(Buffer.from(inner, 'base64')) });
        res.writeHead(200, { 'content-type': 'application/json', 'x-amzn-requestid': requestId });
        res.end(answer);
        return;
      }
      if (json.anthropic_version !== 'bedrock-2023-05-31' || 'model' in json) {
        fail({ status: 400, type: 'ValidationException', message: 'anthropic_version must be bedrock-2023-05-31 and the body must not name a model' });
        return;
      }
      const { content, stopReason } = standin.script(json, modelId);
      const message = {
        id: `msg_bdrk_${requestId}`,
        type: 'message',
        role: 'assistant',
        model: modelId,
        content,
        stop_reason: stopReason,
        stop_sequence: null,
        usage: STANDIN_USAGE,
      };
      if (route[2] === 'invoke') {
        const answer = JSON.stringify(message);
        res.writeHead(200, { 'content-type': 'application/json', 'x-amzn-requestid': requestId, 'content-length': Buffer.byteLength(answer) });
        res.end(answer);
        return;
      }
      standin.lastStreamEvents = streamEvents(message, content, stopReason);
      res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream', 'x-amzn-requestid': requestId });
      for (const event of standin.lastStreamEvents) res.write(chunkMessage(event));
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(standin, {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

function authenticate(
  options: BedrockStandinOptions,
  request: { method: string; path: string; headers: IncomingHttpHeaders; body: Buffer },
): Pick<BedrockSeen, 'auth' | 'accessKeyId'> {
  const authorization = request.headers.authorization ?? '';
  if (authorization.startsWith('Bearer ')) {
    return { auth: options.apiKey !== undefined && authorization === `Bearer ${options.apiKey}` ? 'bearer' : 'refused' };
  }
  const result = verifySigV4(request, options.secretAccessKey);
  const ok = result.ok && result.accessKeyId === options.accessKeyId && result.region === options.region && result.service === 'bedrock';
  return { auth: ok ? 'sigv4' : 'refused', ...(result.accessKeyId ? { accessKeyId: result.accessKeyId } : {}) };
}

/** A rough count (a token per four bytes of the messages), enough for tests to see a number come back. */
function countTokens(invokeBody: Buffer): number {
  return Math.max(1, Math.ceil(invokeBody.length / 4));
}

/** Each Anthropic stream event's JSON, as Bedrock would emit it (U+2028/U+2029 escaped, metrics on message_stop). */
function streamEvents(message: Record<string, unknown>, content: Block[], stopReason: string): Buffer[] {
  const events: unknown[] = [{ type: 'message_start', message: { ...message, content: [], stop_reason: null, usage: { ...STANDIN_USAGE, output_tokens: 1 } } }];
  content.forEach((block, index) => {
    if (block.type === 'tool_use') {
      events.push({ type: 'content_block_start', index, content_block: { ...block, input: {} } });
      const json = JSON.stringify(block.input);
      const half = Math.floor(json.length / 2);
      for (const partial of [json.slice(0, half), json.slice(half)])
        events.push({ type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: partial } });
    } else if (block.type === 'thinking') {
      events.push({ type: 'content_block_start', index, content_block: { type: 'thinking', thinking: '', signature: '' } });
      events.push({ type: 'content_block_delta', index, delta: { type: 'thinking_delta', thinking: block.thinking } });
      events.push({ type: 'content_block_delta', index, delta: { type: 'signature_delta', signature: block.signature } });
    } else {
      events.push({ type: 'content_block_start', index, content_block: { type: 'text', text: '' } });
      events.push({ type: 'content_block_delta', index, delta: { type: 'text_delta', text: block.text } });
    }
    events.push({ type: 'content_block_stop', index });
  });
  events.push({ type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: STANDIN_USAGE.output_tokens } });
  events.push({
    type: 'message_stop',
    'amazon-bedrock-invocationMetrics': {
      inputTokenCount: STANDIN_USAGE.input_tokens,
      outputTokenCount: STANDIN_USAGE.output_tokens,
      invocationLatency: 321,
      firstByteLatency: 123,
      cacheReadInputTokenCount: STANDIN_USAGE.cache_read_input_tokens,
      cacheWriteInputTokenCount: STANDIN_USAGE.cache_creation_input_tokens,
    },
  });
  return events.map((event) => Buffer.from(JSON.stringify(event).replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`)));
}

/** One event-stream message carrying an Anthropic event, with the padding field real Bedrock adds. */
export function chunkMessage(event: Buffer): Uint8Array {
  return codec.encode({
    headers: {
      ':event-type': { type: 'string', value: 'chunk' },
      ':content-type': { type: 'string', value: 'application/json' },
      ':message-type': { type: 'string', value: 'event' },
    },
    body: fromUtf8(JSON.stringify({ bytes: event.toString('base64'), p: 'abcd' })),
  });
}

export interface DecodedBedrockStream {
  /** Each message's headers, as `name: value` strings. */
  headers: Record<string, string>[];
  /** Each chunk's Anthropic event JSON bytes (the base64 `bytes` decoded). */
  eventBytes: Buffer[];
  events: Record<string, unknown>[];
}

/** Splits an event-stream body into its messages (each prefixed by its total length) and decodes them with the real codec. */
export function decodeBedrockStream(body: Buffer): DecodedBedrockStream {
  const out: DecodedBedrockStream = { headers: [], eventBytes: [], events: [] };
  for (let at = 0; at < body.length; ) {
    const length = body.readUInt32BE(at);
    const message = codec.decode(body.subarray(at, at + length));
    at += length;
    out.headers.push(Object.fromEntries(Object.entries(message.headers).map(([name, header]) => [name, String(header.value)])));
    const payload = JSON.parse(toUtf8(message.body)) as { bytes?: string };
    if (typeof payload.bytes !== 'string') continue;
    const bytes = Buffer.from(payload.bytes, 'base64');
    out.eventBytes.push(bytes);
    out.events.push(JSON.parse(bytes.toString('utf8')) as Record<string, unknown>);
  }
  return out;
}
