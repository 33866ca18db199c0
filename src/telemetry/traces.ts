// OpenTelemetry traces of the gateway's calls: one CLIENT span per call record, named and attributed
// after the GenAI semantic conventions (gen_ai.*), exported over OTLP/HTTP (JSON) in the background
// by a batch processor. The tracer provider is private to this sink: nothing is registered globally,
// so the host's own OpenTelemetry setup (if any) is neither used nor disturbed. Spans carry counts,
// names and statuses from the record only: never content, never a credential (the record holds none).
import type { Attributes, HrTime } from '@opentelemetry/api';
import { type CallRecord, cut } from '../metering/call-record.ts';
import { ValidationError } from '../util/validation.ts';
import type { TelemetrySink } from './sink.ts';

export interface TraceOptions {
  /** OTLP/HTTP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces). Default: the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT env vars (the exporter reads them); OTEL_EXPORTER_OTLP_HEADERS honoured. */
  endpoint?: string;
  /** service.name; default OTEL_SERVICE_NAME or 'llm-socket-gateway'. */
  serviceName?: string;
  /**
   * The share of calls exported, 0 to 1 (default 1: every call). A span costs the gateway about as
   * much CPU as a fifth of a call (docs/telemetry.md): busy hosts sample.
   */
  sampleRatio?: number;
}

/** Longest attribute value and span name kept (the record is already bounded; this holds for any field). */
const VALUE_LIMIT = 256;
/** Longest wait for one export, its retries included. */
const EXPORT_TIMEOUT_MS = 3000;
/** Longest `close()` waits for pending spans to leave. */
const CLOSE_TIMEOUT_MS = 5000;

export async function createTraceExporter(options: TraceOptions): Promise<TelemetrySink> {
  const sampleRatio = options.sampleRatio ?? 1;
  if (!(sampleRatio >= 0 && sampleRatio <= 1)) throw new ValidationError('sampleRatio', 'must be a number from 0 to 1');
  // Loaded here, not at the top: a gateway without traces never pays for the SDK (~200 ms at start).
  const [
    { ROOT_CONTEXT, SpanKind, SpanStatusCode },
    { OTLPTraceExporter },
    { defaultResource, resourceFromAttributes },
    { BatchSpanProcessor, TracerProvider },
  ] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace'),
  ]);
  // The exporter reads OTEL_EXPORTER_OTLP_* itself when no url is given; it sends JSON
  // (Content-Type: application/json), the encoding of @opentelemetry/exporter-trace-otlp-http.
  const exporter = new OTLPTraceExporter({ ...(options.endpoint ? { url: options.endpoint } : {}), timeoutMillis: EXPORT_TIMEOUT_MS });
  const serviceName = options.serviceName ?? process.env.OTEL_SERVICE_NAME ?? 'llm-socket-gateway';
  const provider = new TracerProvider({
    resource: defaultResource().merge(resourceFromAttributes({ 'service.name': serviceName })),
    spanLimits: { attributeValueLengthLimit: VALUE_LIMIT, attributeCountLimit: 64, eventCountLimit: 0, linkCountLimit: 0 },
    spanProcessors: [new BatchSpanProcessor({ exporter, exportTimeoutMillis: EXPORT_TIMEOUT_MS })],
  });
  const tracer = provider.getTracer('llm-socket-gateway');
  let closed = false;

  return {
    onCall(record) {
      if (closed || (sampleRatio < 1 && Math.random() >= sampleRatio)) return;
      try {
        // ROOT_CONTEXT: each call is its own trace, whatever span the host has active.
        const span = tracer.startSpan(
          spanName(record),
          { kind: SpanKind.CLIENT, startTime: hrTime(record.time), attributes: spanAttributes(record) },
          ROOT_CONTEXT,
        );
        if (isError(record)) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end(hrTime(record.time + record.latencyMs));
      } catch {
        // Telemetry never fails a call.
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
        timer.unref();
      });
      // shutdown() flushes the batch, then stops the exporter.
      await Promise.race([provider.shutdown().catch(() => undefined), bound]);
      clearTimeout(timer);
    },
  };
}

/** The GenAI operation of an LLM endpoint (`chat` for every generation API); undefined for git, GitHub and service calls. */
function operationOf(record: CallRecord): string | undefined {
  switch (record.endpoint) {
    case 'messages':
    case 'chat_completions':
    case 'responses':
      return 'chat';
    case 'count_tokens':
      return 'count_tokens';
    case 'models':
      return 'list_models';
    default:
      // A refusal before the route was known still names its dialect: an LLM call of unknown kind.
      return record.endpoint === undefined && (record.dialect === 'anthropic' || record.dialect === 'openai') ? 'chat' : undefined;
  }
}

/** `gen_ai.provider.name` from the serving provider's kind, else the client's dialect. */
function providerOf(record: CallRecord): string | undefined {
  switch (record.upstreamKind) {
    case 'bedrock':
      return 'aws.bedrock';
    case 'vertex':
      return 'gcp.vertex_ai';
    case 'azure-openai':
      return 'azure.ai.openai';
    case 'foundry':
      return 'azure.ai.inference';
    case 'anthropic':
    case 'openai':
      return record.upstreamKind;
  }
  return record.dialect === 'anthropic' || record.dialect === 'openai' ? record.dialect : undefined;
}

/** `{gen_ai.operation.name} {gen_ai.request.model}` for LLM calls; `{method} {endpoint}` for the others. */
function spanName(record: CallRecord): string {
  const operation = operationOf(record);
  const name = operation ? [operation, record.model].filter(Boolean).join(' ') : [record.method, record.endpoint].filter(Boolean).join(' ');
  return cut(name, VALUE_LIMIT);
}

/** A server error, an upstream failure, or the gateway's refusal. */
function isError(record: CallRecord): boolean {
  return record.status >= 500 || record.outcome === 'rejected' || record.outcome === 'upstream_failed';
}

function spanAttributes(record: CallRecord): Attributes {
  const operation = operationOf(record);
  const provider = operation ? providerOf(record) : undefined;
  const attributes: Attributes = {
    'gen_ai.operation.name': operation,
    'gen_ai.provider.name': provider,
    // Deprecated in favour of gen_ai.provider.name; still what many backends read.
    'gen_ai.system': provider,
    'gen_ai.request.model': operation ? record.model : undefined,
    'gen_ai.response.model': operation ? (record.upstreamModel ?? record.model) : undefined,
    'gen_ai.request.stream': operation ? record.stream : undefined,
    'gen_ai.usage.input_tokens': inputTokens(record),
    'gen_ai.usage.output_tokens': record.outputTokens,
    'gen_ai.usage.cache_read.input_tokens': record.cacheReadTokens,
    'gen_ai.usage.cache_creation.input_tokens': cacheCreation(record),
    'gen_ai.usage.reasoning.output_tokens': record.reasoningTokens,
    'http.request.method': record.method,
    'http.response.status_code': record.status,
    'error.type': record.errorKind ?? (isError(record) ? String(record.status) : undefined),
    'session.id': record.sessionId,
    'llm_gateway.key.id': record.keyId,
    'llm_gateway.group': record.group,
    'llm_gateway.endpoint': record.endpoint,
    'llm_gateway.upstream': record.upstream,
    'llm_gateway.outcome': record.outcome,
    'llm_gateway.attempts': record.attempts,
    'llm_gateway.cost_usd': record.costUsd,
  };
  for (const key of Object.keys(attributes)) if (attributes[key] === undefined) delete attributes[key];
  return attributes;
}

/**
 * All input tokens, cached ones included, as the convention asks: the record counts uncached input,
 * cache reads and cache writes apart (each is priced apart).
 */
function inputTokens(record: CallRecord): number | undefined {
  const parts = [record.inputTokens, record.cacheReadTokens, cacheCreation(record)];
  return parts.every((part) => part === undefined) ? undefined : parts.reduce<number>((sum, part) => sum + (part ?? 0), 0);
}

/** Cache writes of both lifetimes (5 min and 1 h): the convention has one count. */
function cacheCreation(record: CallRecord): number | undefined {
  if (record.cacheWriteTokens === undefined && record.cacheWrite1hTokens === undefined) return undefined;
  return (record.cacheWriteTokens ?? 0) + (record.cacheWrite1hTokens ?? 0);
}

/** Epoch milliseconds as OpenTelemetry's [seconds, nanoseconds]. */
function hrTime(ms: number): HrTime {
  const seconds = Math.floor(ms / 1000);
  return [seconds, Math.round((ms - seconds * 1000) * 1e6)];
}
