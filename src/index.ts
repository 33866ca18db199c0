// Public library interface. Hosts embed the gateway with createGateway(); see README.md.
export {
  createGateway,
  type Gateway,
  type GatewayOptions,
  type GatewaySnapshot,
  type GroupSnapshot,
  type KeySnapshot,
  type MintRequest,
} from './gateway.ts';
export type { KeyInfo, MintOptions, Owner, ServiceGrant } from './keys/store.ts';
export type { TcpEndpoint, TcpListen } from './keys/tcp-listen.ts';
export type { EgressEntry, EgressRule, KeyLimits } from './keys/limits.ts';
export type { EgressOptions } from './egress/proxy.ts';
export type { EgressRecord } from './egress/record.ts';
export type { EgressTotals } from './egress/books.ts';
export { SHIPPED_PRESETS as EGRESS_PRESETS } from './egress/presets.ts';
export type { CredentialInjection, ServiceOptions } from './services/service.ts';
export type { Price, PriceTable } from './metering/pricing.ts';
export { DEFAULT_PRICES } from './metering/pricing.ts';
export type { AuditOptions } from './metering/audit.ts';
export type { NetworkOptions, ProviderConfig, ProvidersConfig, UpstreamKind, UpstreamTimeouts } from './upstream/providers.ts';
export type { RouteConfig } from './upstream/router.ts';
export type { RetryPolicy } from './upstream/retry.ts';
export { providersFromEnv } from './upstream/providers.ts';
export type { CallRecord } from './metering/call-record.ts';
export type { Dialect } from './wire/dialect.ts';
export type { Endpoint } from './wire/endpoints.ts';
export { contribute, MOUNT_TARGET, type Contribution, type ContributeRequest, type KeyMinter, type Mount, type TcpContribution } from './runner/contribute.ts';
export { renderPod, AGENT_LABEL, type PodManifest, type PodOptions } from './runner/kubernetes.ts';
export { createKeyNetwork, type KeyNetwork } from './runner/network.ts';
export { render, type LaunchSpec, type RenderHost, type Runtime } from './runner/render.ts';
export { runContainer, daemonMinter, type RunOptions } from './runner/run.ts';
export { clientEnv, egressEnv, shimAddress, tcpAddress, SHIM_PORT, PLACEHOLDER_CREDENTIAL, type ContainerAddress } from './keys/client-env.ts';
export { loadConfig, ConfigError, type GatewayConfig } from './config/load.ts';
export { ValidationError } from './util/validation.ts';
export { startDaemon, type Daemon } from './control/daemon.ts';
// Telemetry for hosts that embed the gateway: feed each one the gateway's `onCall` records.
export { startMetricsServer, type MetricsOptions } from './telemetry/metrics.ts';
export { createTraceExporter, type TraceOptions } from './telemetry/traces.ts';
export { startUiServer, type UiOptions } from './telemetry/ui.ts';
export type { TelemetrySink } from './telemetry/sink.ts';
export type { ListenAddress } from './util/listen.ts';
