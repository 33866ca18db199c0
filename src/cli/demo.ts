// `gateway demo`: the whole path in one process. A gateway on a temporary state dir mints a key, and
// a client, holding nothing but a placeholder credential, sends one streaming Anthropic and one
// streaming OpenAI request through the key's socket. Offline it talks to the stand-in provider;
// with real keys in the environment and no --standin, to the real providers.
import { randomBytes } from 'node:crypto';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import type { CallRecord } from '../metering/call-record.ts';
import { createGateway } from '../gateway.ts';
import { SseSplitter } from '../wire/sse.ts';
import { providersFromEnv, type ProvidersConfig } from '../upstream/providers.ts';
import { startStandin, type Standin } from '../dev/standin.ts';

export interface DemoOptions {
  /** Use the local stand-in provider even when real keys are in the environment. */
  standin: boolean;
  out: NodeJS.WritableStream;
}

const PLACEHOLDER = 'placeholder-not-a-credential';

export async function runDemo({ standin: forceStandin, out }: DemoOptions): Promise<boolean> {
  const say = (line = '') => out.write(`${line}\n`);
  const env = providersFromEnv();
  const useStandin = forceStandin || (!env.anthropic?.apiKey && !env.anthropic?.oauthToken && !env.openai?.apiKey);

  let standin: Standin | undefined;
  let providers: ProvidersConfig;
  const secrets: string[] = [];
  if (useStandin) {
    // Stand-in "real" keys: random, so the checks below prove where each one went.
    const anthropicApiKey = `standin-anthropic-${randomBytes(12).toString('hex')}`;
    const openaiApiKey = `standin-openai-${randomBytes(12).toString('hex')}`;
    secrets.push(anthropicApiKey, openaiApiKey);
    standin = await startStandin({ anthropicApiKey, openaiApiKey, eventDelayMs: 60 });
    providers = { anthropic: { baseUrl: standin.url, apiKey: anthropicApiKey }, openai: { baseUrl: standin.url, apiKey: openaiApiKey } };
  } else {
    providers = env;
    for (const secret of [env.anthropic?.apiKey, env.anthropic?.oauthToken, env.openai?.apiKey]) if (secret) secrets.push(secret);
  }

  const stateDir = await mkdtemp(path.join(tmpdir(), 'gw-demo-'));
  const calls: CallRecord[] = [];
  const gateway = await createGateway({ stateDir, providers, logger: pino({ level: 'silent' }), onCall: (c) => calls.push(c) });
  const received: string[] = [];
  let ok = true;
  try {
    say('llm-socket-gateway demo');
    say(
      standin
        ? `  upstream   STAND-IN PROVIDER at ${standin.url}: a local imitation of the Anthropic and OpenAI APIs, no real model`
        : '  upstream   the real providers (keys from the environment)',
    );
    say(`  state dir  ${stateDir}`);
    const key = await gateway.mint({ group: 'demo', label: 'demo', ttlMs: 5 * 60_000 });
    say(`  key        ${key.id} (group demo), socket ${key.socketPath}`);
    say(`  client     holds no credential; it sends "${PLACEHOLDER}" like an agent in a container would`);

    interface DemoRequest {
      name: string;
      enabled: boolean;
      path: string;
      headers: Record<string, string>;
      body: object;
      text(event: StreamEvent): string;
    }
    const requests: DemoRequest[] = [
      {
        name: 'Anthropic',
        enabled: Boolean(providers.anthropic?.apiKey || providers.anthropic?.oauthToken),
        path: '/v1/messages',
        headers: { 'anthropic-version': '2023-06-01', 'x-api-key': PLACEHOLDER },
        body: { model: 'claude-haiku-4-5', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'Say hello in five words.' }] },
        text: (event) => (event.type === 'content_block_delta' ? (event.delta?.text ?? '') : ''),
      },
      {
        name: 'OpenAI',
        enabled: Boolean(providers.openai?.apiKey),
        path: '/v1/chat/completions',
        headers: { authorization: `Bearer ${PLACEHOLDER}` },
        body: { model: 'gpt-5-mini', stream: true, messages: [{ role: 'user', content: 'Say hello in five words.' }] },
        text: (event) => event.choices?.[0]?.delta?.content ?? '',
      },
    ];
    for (const spec of requests) {
      say();
      if (!spec.enabled) {
        say(`- ${spec.name}: skipped, no ${spec.name} key in the environment`);
        continue;
      }
      say(`- ${spec.name}: POST ${spec.path} (streaming) through the socket`);
      out.write('  > ');
      const result = await streamThroughSocket(key.socketPath, spec.path, spec.headers, JSON.stringify(spec.body), (event) => out.write(spec.text(event)));
      received.push(result.raw);
      say();
      const call = calls.at(-1);
      if (result.status !== 200 || !call) {
        ok = false;
        say(`  failed: HTTP ${result.status} ${result.raw.slice(0, 300)}`);
        continue;
      }
      say(
        `  ${result.events} events, first after ${call.ttfbMs?.toFixed(1)} ms, all in ${call.latencyMs.toFixed(1)} ms; ` +
          `tokens in ${call.inputTokens} out ${call.outputTokens} cache-write ${(call.cacheWriteTokens ?? 0) + (call.cacheWrite1hTokens ?? 0)} cache-read ${call.cacheReadTokens}; cost $${call.costUsd.toFixed(6)}`,
      );
    }

    // Checked while the gateway still runs, so it is the revocation, not close(), that did it.
    const revoked = (await gateway.revoke(key.id)) && (await gone(key.dir)) && (await refused(key.socketPath));
    await gateway.close();
    say();
    say('Where the real keys were:');
    if (standin) {
      const upstreamHeaders = standin.requests.map((r) => JSON.stringify(r.headers)).join('\n');
      const reachedUpstream = secrets.every((secret) => upstreamHeaders.includes(secret));
      const placeholderUpstream = upstreamHeaders.includes(PLACEHOLDER);
      say(`  ${mark(reachedUpstream)} the upstream received the real keys, injected by the gateway`);
      say(`  ${mark(!placeholderUpstream)} the client's placeholder never reached the upstream`);
      ok &&= reachedUpstream && !placeholderUpstream;
    }
    const audit = await readFile(path.join(stateDir, 'audit.jsonl'), 'utf8');
    const inResponses = secrets.some((secret) => received.join('').includes(secret));
    const inAudit = secrets.some((secret) => audit.includes(secret));
    say(`  ${mark(!inResponses)} no real key in the ${received.join('').length} response bytes the client received`);
    say(`  ${mark(!inAudit)} no real key in the audit log (${audit.trim().split('\n').length} records)`);
    say(`  ${mark(revoked)} key ${key.id} revoked: directory removed, socket refuses connections`);
    ok &&= !inResponses && !inAudit && revoked;
  } finally {
    await gateway.close();
    await standin?.close();
    await rm(stateDir, { recursive: true, force: true });
  }
  return ok;
}

const mark = (good: boolean) => (good ? 'ok  ' : 'FAIL');

const gone = (file: string) =>
  access(file).then(
    () => false,
    () => true,
  );

/** True when nothing answers on the socket path any more. */
function refused(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

/** The fields the demo reads from an Anthropic or OpenAI streaming event. */
interface StreamEvent {
  type?: string;
  delta?: { text?: string };
  choices?: { delta?: { content?: string } }[];
}

interface StreamResult {
  status: number;
  events: number;
  raw: string;
}

function streamThroughSocket(
  socketPath: string,
  urlPath: string,
  headers: Record<string, string>,
  body: string,
  onEvent: (event: StreamEvent) => void,
): Promise<StreamResult> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: urlPath, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const splitter = new SseSplitter();
      let raw = '';
      let events = 0;
      res.on('data', (chunk: Buffer) => {
        raw += chunk.toString();
        for (const event of splitter.push(chunk)) {
          events++;
          if (event.data && event.data !== '[DONE]') {
            try {
              onEvent(JSON.parse(event.data) as StreamEvent);
            } catch {
              // not JSON: nothing to show
            }
          }
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, events, raw }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
