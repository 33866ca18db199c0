// THE STAND-IN PROVIDER: a local imitation of the Anthropic and OpenAI APIs, for `make demo` and the
// tests only. It speaks the real wire formats (JSON and SSE), answers with canned text, records every
// request it receives, and refuses any request that does not carry the real key it was given, which is
// how the tests prove the gateway swapped the container's placeholder for the real credential.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface StandinOptions {
  /** The real credentials it accepts. A request without the right one gets a 401. */
  anthropicApiKey?: string;
  anthropicOauthToken?: string;
  openaiApiKey?: string;
  /** Pause between streamed events, to make them observably separate. Default 0. */
  eventDelayMs?: number;
  /**
   * Awaited after each streamed event is written, before the next (a test's lockstep: the next event
   * waits until the client has the last one). Replaces `eventDelayMs`.
   */
  pace?: () => Promise<void>;
  /** Text deltas per streamed answer. Default 8. */
  streamEvents?: number;
  /** Serve HTTPS with this key and certificate (PEM) instead of plain HTTP. */
  tls?: { key: string; cert: string };
  /** Keep every request in `requests` (default true; load tests turn it off). */
  record?: boolean;
  /** Takes over a request before the default answer; return true when it answered. */
  override?: (request: RecordedRequest, res: ServerResponse) => boolean | Promise<boolean>;
}

export interface Standin {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export const STANDIN_REPLY = '[stand-in provider] Hello through the gateway';

export async function startStandin(options: StandinOptions): Promise<Standin> {
  const requests: RecordedRequest[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    collect(req)
      .then(async (body) => {
        const request: RecordedRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body };
        if (options.record !== false) requests.push(request);
        if (options.override && (await options.override(request, res))) return;
        await answer(options, request, res);
      })
      .catch(() => res.destroy());
  };
  const server = options.tls ? https.createServer(options.tls, handler) : http.createServer(handler);
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function collect(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

function authorized(options: StandinOptions, request: RecordedRequest, anthropic: boolean): boolean {
  const bearer = request.headers.authorization?.replace(/^Bearer /, '');
  if (anthropic) {
    return (
      (options.anthropicApiKey !== undefined && request.headers['x-api-key'] === options.anthropicApiKey) ||
      (options.anthropicOauthToken !== undefined && bearer === options.anthropicOauthToken)
    );
  }
  return options.openaiApiKey !== undefined && bearer === options.openaiApiKey;
}

async function answer(options: StandinOptions, request: RecordedRequest, res: ServerResponse): Promise<void> {
  const path = request.url.split('?', 1)[0]!;
  const anthropic = path.startsWith('/v1/messages') || request.headers['anthropic-version'] !== undefined;
  if (!authorized(options, request, anthropic)) {
    const message = 'stand-in provider: missing or wrong credential';
    return anthropic
      ? json(res, 401, { type: 'error', error: { type: 'authentication_error', message } })
      : json(res, 401, { error: { message, type: 'invalid_request_error', param: null, code: 'invalid_api_key' } });
  }
  const body = request.body.length ? (JSON.parse(request.body.toString()) as Record<string, unknown>) : {};
  const model = typeof body.model === 'string' ? body.model : 'stand-in';
  const inputTokens = Math.max(1, Math.ceil(request.body.length / 4));
  const words = STANDIN_REPLY.split(' ').map((word, i) => (i === 0 ? word : ` ${word}`));
  const deltas = spread(words, options.streamEvents ?? 8);
  const stream = new EventWriter(res, options.eventDelayMs ?? 0, options.pace);
  const id = `standin_${Date.now().toString(36)}`;
  const requestId = { 'request-id': `req_${id}`, 'x-request-id': `req_${id}` };

  switch (path) {
    case '/v1/messages/count_tokens':
      return json(res, 200, { input_tokens: inputTokens });
    case '/v1/models':
      return anthropic
        ? json(res, 200, {
            data: [{ type: 'model', id: 'claude-sonnet-4-5', display_name: 'Stand-in Sonnet', created_at: '2025-09-29T00:00:00Z' }],
            has_more: false,
            first_id: 'claude-sonnet-4-5',
            last_id: 'claude-sonnet-4-5',
          })
        : json(res, 200, { object: 'list', data: [{ id: 'gpt-5.1', object: 'model', created: 1_700_000_000, owned_by: 'stand-in' }] });
    case '/v1/messages': {
      const usage = { input_tokens: inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: deltas.length };
      const message = {
        id: `msg_${id}`,
        type: 'message',
        role: 'assistant',
        model,
        content: [{ type: 'text', text: STANDIN_REPLY }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage,
      };
      if (body.stream !== true) return json(res, 200, message, requestId);
      stream.start(requestId);
      await stream.event('message_start', {
        type: 'message_start',
        message: { ...message, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } },
      });
      await stream.event('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
      await stream.event('ping', { type: 'ping' });
      for (const text of deltas) await stream.event('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } });
      await stream.event('content_block_stop', { type: 'content_block_stop', index: 0 });
      await stream.event('message_delta', {
        type: 'message_delta',
        delta: { stop_reason: 'end_turn', stop_sequence: null },
        usage: { output_tokens: deltas.length },
      });
      await stream.event('message_stop', { type: 'message_stop' });
      return stream.end();
    }
    case '/v1/chat/completions': {
      const usage = {
        prompt_tokens: inputTokens,
        completion_tokens: deltas.length,
        total_tokens: inputTokens + deltas.length,
        prompt_tokens_details: { cached_tokens: 0 },
      };
      const base = { id: `chatcmpl-${id}`, created: Math.floor(Date.now() / 1000), model };
      if (body.stream !== true) {
        return json(
          res,
          200,
          { ...base, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: STANDIN_REPLY }, finish_reason: 'stop' }], usage },
          requestId,
        );
      }
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ ...base, object: 'chat.completion.chunk', choices, ...extra });
      stream.start(requestId);
      await stream.data(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]));
      for (const text of deltas) await stream.data(chunk([{ index: 0, delta: { content: text }, finish_reason: null }]));
      await stream.data(chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]));
      const streamOptions = body.stream_options as { include_usage?: boolean } | undefined;
      if (streamOptions?.include_usage) await stream.data(chunk([], { usage }));
      await stream.raw('data: [DONE]\n\n');
      return stream.end();
    }
    case '/v1/responses': {
      const usage = {
        input_tokens: inputTokens,
        input_tokens_details: { cached_tokens: 0 },
        output_tokens: deltas.length,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: inputTokens + deltas.length,
      };
      const item = {
        id: `msg_${id}`,
        type: 'message',
        status: 'completed',
        role: 'assistant',
        content: [{ type: 'output_text', text: STANDIN_REPLY, annotations: [] }],
      };
      const response = { id: `resp_${id}`, object: 'response', created_at: Math.floor(Date.now() / 1000), status: 'completed', model, output: [item], usage };
      if (body.stream !== true) return json(res, 200, response, requestId);
      let sequence = 0;
      const event = (type: string, data: Record<string, unknown>) => stream.event(type, { type, sequence_number: sequence++, ...data });
      const pending = { ...response, status: 'in_progress', output: [], usage: null };
      stream.start(requestId);
      await event('response.created', { response: pending });
      await event('response.in_progress', { response: pending });
      await event('response.output_item.added', { output_index: 0, item: { ...item, status: 'in_progress', content: [] } });
      await event('response.content_part.added', {
        item_id: item.id,
        output_index: 0,
        content_index: 0,
        part: { type: 'output_text', text: '', annotations: [] },
      });
      for (const text of deltas) await event('response.output_text.delta', { item_id: item.id, output_index: 0, content_index: 0, delta: text });
      await event('response.output_text.done', { item_id: item.id, output_index: 0, content_index: 0, text: STANDIN_REPLY });
      await event('response.content_part.done', { item_id: item.id, output_index: 0, content_index: 0, part: item.content[0] });
      await event('response.output_item.done', { output_index: 0, item });
      await event('response.completed', { response });
      return stream.end();
    }
    default:
      return json(res, 404, { error: { message: `stand-in provider: no ${path}` } });
  }
}

/** Splits words into `count` roughly equal text deltas (at least one word each). */
function spread(words: string[], count: number): string[] {
  const n = Math.max(1, Math.min(count, words.length));
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(words.slice(Math.floor((i * words.length) / n), Math.floor(((i + 1) * words.length) / n)).join(''));
  return out;
}

class EventWriter {
  private readonly res: ServerResponse;
  private readonly delayMs: number;
  private readonly pace: (() => Promise<void>) | undefined;
  constructor(res: ServerResponse, delayMs: number, pace: (() => Promise<void>) | undefined) {
    this.res = res;
    this.delayMs = delayMs;
    this.pace = pace;
  }
  start(headers: Record<string, string>): void {
    this.res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers });
    this.res.flushHeaders();
  }
  async raw(text: string): Promise<void> {
    if (this.pace) {
      this.res.write(text);
      return this.pace();
    }
    if (this.delayMs > 0) await sleep(this.delayMs);
    this.res.write(text);
  }
  event(name: string, data: unknown): Promise<void> {
    return this.raw(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
  }
  data(data: unknown): Promise<void> {
    return this.raw(`data: ${JSON.stringify(data)}\n\n`);
  }
  end(): void {
    this.res.end();
  }
}
