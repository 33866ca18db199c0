// The gateway `gateway run` starts in its own process when no daemon is running: the configured
// providers, credentials, limits and prices, on a private temporary state dir that ends with it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import type { GatewayConfig } from '../config/load.ts';
import { resolveCredentials } from '../config/credentials.ts';
import { settingsFrom, tokenSources } from '../config/settings.ts';
import { createGateway, type Gateway } from '../gateway.ts';

/** The gateway for `config` (loaded once by the caller). */
export async function embeddedGateway(config: GatewayConfig): Promise<Gateway> {
  const credentials = await resolveCredentials(config.providers);
  // Private: sharing the daemon's state dir would race with a daemon started later.
  const privateDir = await mkdtemp(path.join(tmpdir(), 'gw-run-'));
  const tokens = await resolveCredentials(tokenSources(config));
  const gateway = await createGateway({
    ...(await settingsFrom(config, credentials.providers, tokens.providers)),
    stateDir: privateDir,
    logger: pino({ level: process.env.GATEWAY_LOG_LEVEL ?? 'warn' }, pino.destination(2)),
    socketOwner: config.socketOwner,
    audit: { ...config.audit, file: config.audit.file ?? path.join(config.stateDir, 'audit.jsonl') },
    store: config.store,
  });
  return {
    ...gateway,
    async close(options) {
      await gateway.close(options);
      await rm(privateDir, { recursive: true, force: true });
    },
  };
}
