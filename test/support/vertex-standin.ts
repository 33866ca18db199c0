// A loopback stand-in for Vertex AI's Anthropic publisher endpoints (`:rawPredict`, `:streamRawPredict`,
// `count-tokens:rawPredict`), checking what Vertex checks: a Google bearer token, the project and region in
// the path, `anthropic_version: "vertex-2023-10-16"` and no `model` in the body. It records every request and
// keeps the exact bytes of its last answers, so tests can assert that a gateway relays them byte for byte.
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readBodyUpTo } from './http.ts';
import type { Block } from './scripted-model.ts';

export const VERTEX_ANTHROPIC_VERSION = 'vertex-2023-10-16';
export const VERTEX_USAGE = { input_tokens: 321, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 17 };

/**
 * The thinking block's signature as it appears on the wire: a raw U+2028 (which many JSON encoders escape) and
 * an escaped `\/` (which JSON.stringify writes as a bare `/`) among base64's `+/=`. Parsing and re-serialising
 * the answer changes these bytes, so a byte-identity assertion catches a relay that does.
 */
export const THINKING_SIGNATURE_JSON = '"EqQBCkgIARABGAIiQL+m\\/Zx9\u2028Qw==+/AbC\\/dE="';
/** The signature's value once parsed. */
export const THINKING_SIGNATURE: string = JSON.parse(THINKING_SIGNATURE_JSON);
export const THINKING_TEXT = 'The user wants a greeting; answer briefly.';

export interface VertexSeen {
  method: string;
  /** The request target as received (raw path and query). */
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Whether the bearer token was accepted. */
  authOk: boolean;
}

export type VertexScript = (body: Record<string, unknown>, model: string) => { content: Block[]; stopReason: string };

export interface VertexStandinOptions {
  /** Whether a bearer token is good (in tests: one the Google token stand-in issued). */
  validToken: (token: string) => boolean;
  project: string;
  region: string;
  /** The answer's content. Default: one text block. */
  script?: VertexScript;
  /** Put a thinking block (with THINKING_SIGNATURE) before the scripted content. */
  thinking?: boolean;
  /** `input_tokens` of a count-tokens answer. Default 42. */
  countTokens?: number;
}

export interface VertexError {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export interface VertexStandin {
  /** `http://127.0.0.1:PORT` (the routes start with /v1). */
  url: string;
  /** `url` + `/v1`: what Claude Code's ANTHROPIC_VERTEX_BASE_URL would be. */
  base: string;
  port: number;
  seen: VertexSeen[];
  /** The exact bytes of the last SSE answer. */
  readonly lastStream: Buffer | undefined;
  /** The exact bytes of the last JSON message answer. */
  readonly lastJson: Buffer | undefined;
  /** Answers the next authenticated request (queued, one per call) with this error. */
  failNext(error: VertexError): void;
  /** The path of a model call, e.g. `/v1/projects/P/locations/R/publishers/anthropic/models/M:rawPredict`. */
  modelPath(model: string, method: 'rawPredict' | 'streamRawPredict'): string;
  close(): Promise<void>;
}

const MAX_BODY = 8 * 1024 * 1024;
const SIGNATURE_PLACEHOLDER = 'vertex-standin-signature-placeholder';
const ROUTE = /^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/publishers\/anthropic\/models\/([^/:]+):(rawPredict|streamRawPredict)$/;

const googleError = (code: number, status: string, message: string) => ({ error: { code, message, status } });
const defaultScript: VertexScript = () => ({ content: [{ type: 'text', text: 'Hello from the Vertex stand-in.' }], stopReason: 'end_turn' });

/** JSON with the thinking signature written as THINKING_SIGNATURE_JSON (JSON.stringify cannot produce it). */
const wireJson = (value: unknown): string => JSON.stringify(value).replaceAll(JSON.stringify(SIGNATURE_PLACEHOLDER), THINKING_SIGNATURE_JSON);

export async function startVertexStandin(options: VertexStandinOptions): Promise<VertexStandin> {
  const seen: VertexSeen[] = [];
  const failures: VertexError[] = [];
  let lastStream: Buffer | undefined;
  let lastJson: Buffer | undefined;
  const script = options.script ?? defaultScript;

  const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): Buffer => {
    const bytes = Buffer.from(typeof body === 'string' ? body : wireJson(body));
    res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': bytes.length, ...headers });
    res.end(bytes);
    return bytes;
  };

  const contentOf = (body: Record<string, unknown>, model: string) => {
    const { content, stopReason } = script(body, model);
    const thinking: Block[] = options.thinking ? [{ type: 'thinking', thinking: THINKING_TEXT, signature: SIGNATURE_PLACEHOLDER }] : [];
    return { content: [...thinking, ...content], stopReason };
  };

  const answerJson = (res: http.ServerResponse, body: Record<string, unknown>, model: string) => {
    const { content, stopReason } = contentOf(body, model);
    const message = {
      id: `msg_vrtx_${Date.now().toString(36)}`,
      type: 'message',
      role: 'assistant',
      model,
      content,
      stop_reason: stopReason,
      stop_sequence: null,
      usage: VERTEX_USAGE,
    };
    lastJson = send(res, 200, message);
  };

  const answerStream = (res: http.ServerResponse, body: Record<string, unknown>, model: string) => {
    const { content, stopReason } = contentOf(body, model);
    const id = `msg_vrtx_${Date.now().toString(36)}`;
    const start = {
      id,
      type: 'message',
      role: 'assistant',
      model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { ...VERTEX_USAGE, output_tokens: 1 },
    };
    const events: [string, unknown][] = [['message_start', { type: 'message_start', message: start }]];
    content.forEach((block, index) => {
      const delta = (d: unknown) => events.push(['content_block_delta', { type: 'content_block_delta', index, delta: d }]);
      if (block.type === 'thinking') {
        events.push(['content_block_start', { type: 'content_block_start', index, content_block: { type: 'thinking', thinking: '', signature: '' } }]);
        delta({ type: 'thinking_delta', thinking: block.thinking });
        delta({ type: 'signature_delta', signature: block.signature });
      } else if (block.type === 'tool_use') {
        events.push(['content_block_start', { type: 'content_block_start', index, content_block: { ...block, input: {} } }]);
        delta({ type: 'input_json_delta', partial_json: JSON.stringify(block.input) });
      } else {
        events.push(['content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '' } }]);
        delta({ type: 'text_delta', text: block.text });
      }
      events.push(['content_block_stop', { type: 'content_block_stop', index }]);
    });
    events.push([
      'message_delta',
      { type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: VERTEX_USAGE.output_tokens } },
    ]);
    events.push(['message_stop', { type: 'message_stop' }]);
    const chunks = events.map(([name, data]) => Buffer.from(`event: ${name}\ndata: ${wireJson(data)}\n\n`));
    lastStream = Buffer.concat(chunks);
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    for (const chunk of chunks) res.write(chunk);
    res.end();
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const body = await readBodyUpTo(req, MAX_BODY);
    const auth = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    const authOk = auth !== null && options.validToken(auth[1]!);
    seen.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: body ?? Buffer.alloc(0), authOk });
    if (!authOk) {
      return send(
        res,
        401,
        googleError(
          401,
          'UNAUTHENTICATED',
          'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
        ),
        { 'www-authenticate': 'Bearer realm="https://accounts.google.com/"' },
      );
    }
    const failure = failures.shift();
    if (failure) return send(res, failure.status, failure.body, failure.headers);
    if (body === undefined) return send(res, 413, googleError(413, 'INVALID_ARGUMENT', 'Request payload size exceeds the limit.'));
    const route = ROUTE.exec(req.url ?? '');
    if (req.method !== 'POST' || !route) return send(res, 404, googleError(404, 'NOT_FOUND', `The requested URL ${req.url} was not found.`));
    const [, project, region, model, method] = route as unknown as [string, string, string, string, string];
    if (project !== options.project || region !== options.region) {
      return send(
        res,
        404,
        googleError(404, 'NOT_FOUND', `Publisher model \`projects/${project}/locations/${region}/publishers/anthropic/models/${model}\` not found.`),
      );
    }
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(body.toString('utf8'));
      if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new Error();
    } catch {
      return send(res, 400, googleError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.'));
    }
    if (model === 'count-tokens') {
      if (method !== 'rawPredict' || typeof json.model !== 'string')
        return send(res, 400, googleError(400, 'INVALID_ARGUMENT', 'count-tokens needs a model in the body.'));
      return send(res, 200, { input_tokens: options.countTokens ?? 42 });
    }
    if (json.anthropic_version !== VERTEX_ANTHROPIC_VERSION) {
      return send(res, 400, googleError(400, 'INVALID_ARGUMENT', `anthropic_version must be "${VERTEX_ANTHROPIC_VERSION}".`));
    }
    if ('model' in json) return send(res, 400, googleError(400, 'INVALID_ARGUMENT', 'model: Extra inputs are not permitted (the model is in the URL).'));
    if (method === 'streamRawPredict') answerStream(res, json, model);
    else answerJson(res, json, model);
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    base: `${url}/v1`,
    port,
    seen,
    get lastStream() {
      return lastStream;
    },
    get lastJson() {
      return lastJson;
    },
    failNext: (error) => {
      failures.push(error);
    },
    modelPath: (model, method) => `/v1/projects/${options.project}/locations/${options.region}/publishers/anthropic/models/${model}:${method}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
