// A small HTTP client over a Unix socket (or TCP), recording when each chunk arrived.
import http, { type IncomingHttpHeaders } from 'node:http';

export interface HttpExchange {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** Each chunk of the response body with the time (ms, performance.now) it arrived. */
  chunks: { at: number; text: string }[];
}

export interface RequestSpec {
  socketPath?: string;
  port?: number;
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  agent?: http.Agent;
}

export function request(spec: RequestSpec): Promise<HttpExchange> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: spec.socketPath,
        host: spec.socketPath ? undefined : '127.0.0.1',
        port: spec.port,
        method: spec.method ?? (spec.body === undefined ? 'GET' : 'POST'),
        path: spec.path,
        headers: spec.headers,
        agent: spec.agent ?? false,
      },
      (res) => {
        const chunks: HttpExchange['chunks'] = [];
        res.on('data', (chunk: Buffer) => chunks.push({ at: performance.now(), text: chunk.toString() }));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: chunks.map((c) => c.text).join(''), chunks }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(spec.body);
  });
}

export const anthropicHeaders = (extra: Record<string, string> = {}): Record<string, string> => ({
  'content-type': 'application/json',
  'anthropic-version': '2023-06-01',
  'x-api-key': 'placeholder-from-container',
  ...extra,
});

export const openaiHeaders = (extra: Record<string, string> = {}): Record<string, string> => ({
  'content-type': 'application/json',
  authorization: 'Bearer placeholder-from-container',
  ...extra,
});

/** Parses an SSE body into its events' data payloads (JSON where it parses). */
export function sseData(body: string): unknown[] {
  return body
    .split('\n\n')
    .map((block) =>
      block
        .split('\n')
        .find((line) => line.startsWith('data: '))
        ?.slice(6),
    )
    .filter((data): data is string => data !== undefined && data !== '[DONE]')
    .map((data) => JSON.parse(data));
}

/** A request's whole body, up to `limit` bytes; undefined when it is larger (for the test servers). */
export async function readBodyUpTo(req: http.IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
