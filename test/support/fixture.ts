// One gateway plus one stand-in provider, wired together for a test.
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createGateway, type CallRecord, type Gateway, type GatewayOptions } from '../../src/index.ts';
import { startStandin, type Standin, type StandinOptions } from '../../src/dev/standin.ts';

// Recognizable "real" credentials: every test can grep its output for them.
export const REAL_ANTHROPIC_KEY = 'real-anthropic-key-7f3a9c1e5b';
export const REAL_OPENAI_KEY = 'real-openai-key-2d8e4f6a0c';

export interface Fixture {
  gateway: Gateway;
  standin: Standin;
  calls: CallRecord[];
  stateDir: string;
  close(): Promise<void>;
}

export async function startFixture(
  standinOptions: Partial<StandinOptions> = {},
  gatewayOptions: Partial<GatewayOptions> | ((standinUrl: string) => Partial<GatewayOptions>) = {},
): Promise<Fixture> {
  const standin = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY, openaiApiKey: REAL_OPENAI_KEY, ...standinOptions });
  // Short: socket paths are limited to 107 bytes.
  const stateDir = await mkdtemp(path.join(tmpdir(), 'gw-'));
  const calls: CallRecord[] = [];
  const gateway = await createGateway({
    stateDir,
    logger: pino({ level: 'silent' }),
    providers: {
      anthropic: { baseUrl: standin.url, apiKey: REAL_ANTHROPIC_KEY },
      openai: { baseUrl: standin.url, apiKey: REAL_OPENAI_KEY },
    },
    onCall: (record) => calls.push(record),
    ...(typeof gatewayOptions === 'function' ? gatewayOptions(standin.url) : gatewayOptions),
  });
  return {
    gateway,
    standin,
    calls,
    stateDir,
    async close() {
      await gateway.close({ drainMs: 1000 });
      await standin.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Resolves once `predicate` holds, polling; fails after `timeoutMs`. */
/** Both providers pointed at one local upstream on `port`, with the real keys the tests look for. */
export function providersAt(port: number) {
  return {
    anthropic: { baseUrl: `http://127.0.0.1:${port}`, apiKey: REAL_ANTHROPIC_KEY },
    openai: { baseUrl: `http://127.0.0.1:${port}`, apiKey: REAL_OPENAI_KEY },
  };
}

export async function eventually(predicate: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A loopback port nothing listens on (for upstreams that refuse connections). */
export async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
