// Public library interface. Hosts embed the gateway with createGateway(); see README.md.
export { createGateway, type Gateway, type GatewayOptions } from './gateway.ts';
export type { KeyInfo, MintOptions, Owner } from './keys.ts';
export type { AnthropicConfig, OpenAIConfig, ProvidersConfig } from './providers.ts';
export { providersFromEnv } from './providers.ts';
export type { CallRecord } from './calls.ts';
export type { ProviderKind, Endpoint } from './routes.ts';
