// `gateway serve`: the gateway as a host daemon. Loads the config and credentials, restores the
// keys that were live before a restart, serves the control socket, follows credential changes,
// reloads on SIGHUP and drains on SIGTERM/SIGINT.
import { unlink } from 'node:fs/promises';
import type { Server } from 'node:http';
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';
import { loadConfig, type GatewayConfig } from '../config/load.ts';
import { controlSocketPath, startControlServer } from './socket.ts';
import { CredentialWatcher, resolveCredentials } from '../config/credentials.ts';
import { createGateway, type Gateway } from '../gateway.ts';
import { settingsFrom, tokenSettings, tokenSources } from '../config/settings.ts';
import type { TelemetrySink } from '../telemetry/sink.ts';
import { closeTelemetry, startTelemetry } from './telemetry.ts';
import { parseListenAddress } from '../util/listen.ts';

export interface ServeOptions {
  configFile?: string;
  stateDir?: string;
  logger?: Logger;
  /** `--metrics HOST:PORT`: over `[telemetry] metrics_listen`. */
  metrics?: string;
  /** `--ui HOST:PORT`: over `[telemetry] ui_listen`. */
  ui?: string;
}

export interface Daemon {
  gateway: Gateway;
  config: GatewayConfig;
  reload(): Promise<void>;
  shutdown(): Promise<void>;
}

/** Human-readable logs on a terminal, JSON lines otherwise. */
function daemonLogger(): Logger {
  const level = process.env.GATEWAY_LOG_LEVEL ?? 'info';
  return process.stderr.isTTY ? pino({ level }, pretty({ colorize: true, destination: 2, ignore: 'pid,hostname' })) : pino({ level }, pino.destination(2));
}

export async function startDaemon(options: ServeOptions): Promise<Daemon> {
  const logger = options.logger ?? daemonLogger();
  let config = await loadConfig(options.configFile, options.stateDir);
  const credentials = await resolveCredentials(config.providers);
  const startedAt = Date.now();
  let summary = credentials.summary;
  // The GitHub and service tokens are read like a provider's key, and followed the same way (file changes).
  const tokens = await resolveCredentials(tokenSources(config));
  if (options.metrics) config.telemetry.metricsListen = parseListenAddress(options.metrics, '--metrics');
  if (options.ui) config.telemetry.uiListen = parseListenAddress(options.ui, '--ui');

  // Filled once the gateway exists (they read its inspect()); every call record goes to each.
  let sinks: TelemetrySink[] = [];
  const gateway = await createGateway({
    ...(await settingsFrom(config, credentials.providers, tokens.providers)),
    stateDir: config.stateDir,
    logger,
    socketOwner: config.socketOwner,
    audit: config.audit,
    persistKeys: true,
    store: config.store,
    onCall: (record) => {
      for (const sink of sinks) sink.onCall(record);
    },
  });
  try {
    sinks = await startTelemetry(config.telemetry, gateway, logger);
  } catch (error) {
    await gateway.close({ drainMs: 0 });
    throw error;
  }
  const watcher = new CredentialWatcher(
    config.providers,
    credentials,
    (state) => {
      summary = state.summary;
      gateway.reconfigure({ providers: state.providers });
    },
    logger,
  );
  const tokenWatcher = new CredentialWatcher(tokenSources(config), tokens, (state) => gateway.reconfigure(tokenSettings(config, state.providers)), logger);
  let control: Server;
  try {
    control = await startControlServer(gateway, {
      defaultTtlMs: config.defaultTtlMs,
      githubHost: config.github?.host,
      logger,
      info: () => ({
        pid: process.pid,
        startedAt,
        config: config.file ?? null,
        stateDir: config.stateDir,
        credentials: summary,
        store: gateway.inspect().store,
      }),
    });
  } catch (error) {
    watcher.close();
    tokenWatcher.close();
    await closeTelemetry(sinks);
    await gateway.close({ drainMs: 0 });
    throw error;
  }
  logger.info(
    { stateDir: config.stateDir, config: config.file ?? '(defaults)', credentials: summary, liveKeys: gateway.keys().length, store: gateway.inspect().store },
    'gateway serving',
  );

  let stopping: Promise<void> | undefined;
  return {
    gateway,
    get config() {
      return config;
    },
    async reload() {
      const next = await loadConfig(options.configFile, options.stateDir);
      if (next.stateDir !== config.stateDir) {
        logger.warn({ stateDir: next.stateDir }, 'state_dir changed: it takes effect at the next start');
        next.stateDir = config.stateDir;
      }
      if (JSON.stringify(next.store) !== JSON.stringify(config.store)) logger.warn('[store] changed: it takes effect at the next start');
      const state = await resolveCredentials(next.providers);
      const nextTokens = await resolveCredentials(tokenSources(next));
      gateway.reconfigure(await settingsFrom(next, state.providers, nextTokens.providers));
      watcher.replace(next.providers, state);
      tokenWatcher.replace(tokenSources(next), nextTokens);
      config = next;
      summary = state.summary;
      logger.info({ credentials: summary, liveKeys: gateway.keys().length }, 'configuration reloaded');
    },
    shutdown() {
      stopping ??= (async () => {
        logger.info({ inFlight: gateway.inspect().totals.inFlight }, 'shutting down: draining calls in flight');
        watcher.close();
        tokenWatcher.close();
        await new Promise((resolve) => control.close(resolve));
        await unlink(controlSocketPath(config.stateDir)).catch(() => undefined);
        await gateway.close({ drainMs: config.drainMs });
        await closeTelemetry(sinks);
        logger.info('gateway stopped');
        logger.flush();
      })();
      return stopping;
    },
  };
}

/** Runs the daemon until SIGTERM/SIGINT; SIGHUP reloads. */
export async function serve(options: ServeOptions): Promise<void> {
  const logger = options.logger ?? daemonLogger();
  const daemon = await startDaemon({ ...options, logger });
  process.on('SIGHUP', () => {
    daemon.reload().catch((error: unknown) => logger.error({ err: error }, 'reload failed; the previous configuration stays'));
  });
  await new Promise<void>((resolve) => {
    let signals = 0;
    const stop = (signal: string) => {
      if (++signals > 1) {
        logger.warn(`${signal} again: exiting without draining`);
        process.exit(1);
      }
      daemon.shutdown().then(resolve, resolve);
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}
