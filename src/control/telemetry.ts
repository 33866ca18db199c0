// The daemon's telemetry, started from `[telemetry]` and `gateway serve --metrics/--ui`: Prometheus
// metrics, OpenTelemetry traces and the live page, each fed every call record and reading
// `inspect()`. Each listens on its own address (loopback by default), never on a key's socket.
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { CredentialSource } from '../config/credentials.ts';
import type { TelemetryConfig } from '../config/load.ts';
import type { Gateway } from '../gateway.ts';
import { startMetricsServer } from '../telemetry/metrics.ts';
import type { TelemetrySink } from '../telemetry/sink.ts';
import { createTraceExporter } from '../telemetry/traces.ts';
import { startUiServer } from '../telemetry/ui.ts';

/** Starts what `telemetry` asks for; on a failure, what was started is closed again. */
export async function startTelemetry(telemetry: TelemetryConfig, gateway: Gateway, logger: Logger): Promise<TelemetrySink[]> {
  const sinks: TelemetrySink[] = [];
  try {
    if (telemetry.metricsListen) {
      const metrics = await startMetricsServer({ listen: telemetry.metricsListen, gateway, keyLabels: telemetry.metricsKeyLabels });
      logger.info({ url: metrics.url }, 'Prometheus metrics');
      sinks.push(metrics);
    }
    if (telemetry.otlpEndpoint !== undefined || telemetry.otlp) {
      sinks.push(await createTraceExporter({ endpoint: telemetry.otlpEndpoint, sampleRatio: telemetry.otlpSampleRatio }));
      logger.info({ endpoint: telemetry.otlpEndpoint ?? '(OTEL_EXPORTER_OTLP_* env)' }, 'OpenTelemetry traces');
    }
    if (telemetry.uiListen) {
      const token = telemetry.uiToken && (await readToken(telemetry.uiToken));
      const ui = await startUiServer({ listen: telemetry.uiListen, gateway, token });
      logger.info({ url: ui.url }, 'live page');
      sinks.push(ui);
    }
  } catch (error) {
    await closeTelemetry(sinks);
    throw error;
  }
  return sinks;
}

export async function closeTelemetry(sinks: readonly TelemetrySink[]): Promise<void> {
  await Promise.all(sinks.map((sink) => sink.close().catch(() => undefined)));
}

async function readToken(source: CredentialSource): Promise<string | undefined> {
  if ('env' in source) return process.env[source.env]?.trim() || undefined;
  if ('file' in source) return (await readFile(source.file, 'utf8')).trim() || undefined;
  return undefined;
}
