// The child side of child-gateway.ts: one gateway and its stand-in provider in a process of its
// own, so an attack that exhausts its heap kills this process and not the test runner. It prints
// one JSON line on stdout when ready, then answers JSON-line commands on stdin, one line each.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { pino } from 'pino';
import { createGateway, type GatewayOptions, type MintRequest } from '../../src/index.ts';
import { startStandin } from '../../src/dev/standin.ts';

export interface ChildConfig {
  /** Gateway options that survive JSON (providers and stateDir are filled in here). */
  gateway?: Partial<GatewayOptions>;
  keys: MintRequest[];
  /** A state dir the test owns (kept at close, so it can be read after a SIGKILL). Default: a fresh one, removed at close. */
  stateDir?: string;
}

export type ChildCommand =
  | { id: number; cmd: 'inspect'; key: string }
  | { id: number; cmd: 'snapshot' }
  | { id: number; cmd: 'memory' }
  | { id: number; cmd: 'close' };

const config = JSON.parse(process.argv[2] ?? '{"keys":[]}') as ChildConfig;
const standin = await startStandin({ anthropicApiKey: 'real-anthropic-key-7f3a9c1e5b', openaiApiKey: 'real-openai-key-2d8e4f6a0c' });
const stateDir = config.stateDir ?? (await mkdtemp(path.join(tmpdir(), 'gwc-')));
const gateway = await createGateway({
  stateDir,
  logger: pino({ level: 'silent' }),
  providers: {
    anthropic: { baseUrl: standin.url, apiKey: 'real-anthropic-key-7f3a9c1e5b' },
    openai: { baseUrl: standin.url, apiKey: 'real-openai-key-2d8e4f6a0c' },
  },
  ...config.gateway,
});
const keys = [];
for (const request of config.keys) keys.push(await gateway.mint(request));
process.stdout.write(`${JSON.stringify({ ready: true, stateDir, keys })}\n`);

for await (const line of readline.createInterface({ input: process.stdin })) {
  const command = JSON.parse(line) as ChildCommand;
  let result: unknown;
  if (command.cmd === 'inspect') result = gateway.inspect().keys.find((key) => key.id === command.key);
  else if (command.cmd === 'snapshot') result = gateway.inspect();
  else if (command.cmd === 'memory') result = process.memoryUsage();
  else {
    await gateway.close({ drainMs: 1000 });
    await standin.close();
    if (config.stateDir === undefined) await rm(stateDir, { recursive: true, force: true });
    result = 'closed';
  }
  process.stdout.write(`${JSON.stringify({ id: command.id, result })}\n`);
  if (command.cmd === 'close') break;
}
// Closed, or the test process is gone (its end of stdin closed): nothing may outlive it.
process.exit(0);
