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
export type { KeyInfo, MintOptions, Owner } from './keys.ts';
export type { KeyLimits } from './metering/accounting.ts';
export type { Price, PriceTable } from './metering/pricing.ts';
export { DEFAULT_PRICES } from './metering/pricing.ts';
export type { AuditOptions } from './audit.ts';
export type { NetworkOptions, ProviderConfig, ProvidersConfig, UpstreamKind, UpstreamTimeouts } from './providers.ts';
export type { RouteConfig } from './model-routes.ts';
export type { RetryPolicy } from './attempts.ts';
export { providersFromEnv } from './providers.ts';
export type { CallRecord } from './calls.ts';
export type { ProviderKind, Endpoint } from './routes.ts';
export { contribute, MOUNT_TARGET, type Contribution, type ContributeRequest, type KeyMinter, type Mount } from './runner/contribute.ts';
export { render, type LaunchSpec, type Runtime } from './runner/render.ts';
export { runContainer, daemonMinter, type RunOptions } from './runner/run.ts';
export { clientEnv, SHIM_PORT, PLACEHOLDER_CREDENTIAL } from './runner/env.ts';
export { loadConfig, ConfigError, type GatewayConfig } from './config.ts';
export { startDaemon, type Daemon } from './daemon.ts';
