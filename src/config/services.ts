// The `[services.NAME]` sections of the config file as the library takes them: each service's
// options, with its token read from where the section says (env var, file or command; never a
// literal), re-read like the providers' keys when it changes.
import type { ServiceOptions } from '../services/service.ts';
import type { ProvidersConfig } from '../upstream/providers.ts';
import type { CredentialSource, ProviderSources } from './credentials.ts';

/** One service as configured: its options, and where its token comes from instead of the token. */
export interface ServiceSource extends Omit<ServiceOptions, 'credential'> {
  /** Tried in order: token_env, token_file, token_command. */
  token: CredentialSource[];
}

/** The name a service's token has among the host's tokens (beside `github`). */
function tokenName(service: string): string {
  return `service:${service}`;
}

/** The services' tokens as the credential reader sees providers: each token is an `apiKey`. */
export function serviceCredentialSources(services: Record<string, ServiceSource>): ProviderSources {
  return Object.fromEntries(Object.entries(services).map(([name, source]) => [tokenName(name), { apiKey: source.token, apiKeys: [], oauthToken: [] }]));
}

/** `createGateway({ services })` from the sections and the tokens read for them. */
export function servicesOptions(services: Record<string, ServiceSource>, tokens: ProvidersConfig): Record<string, ServiceOptions> {
  return Object.fromEntries(
    Object.entries(services).map(([name, { token: _sources, ...options }]) => [name, { ...options, credential: tokens[tokenName(name)]?.apiKey }]),
  );
}
