// What a config file sets on a running gateway, with its credentials resolved: built whole from one
// loaded config, for createGateway at start (daemon and `gateway run`) and for reconfigure() on SIGHUP.
import { readFile } from 'node:fs/promises';
import type { CompleteSettings } from '../gateway.ts';
import type { NetworkOptions, ProvidersConfig } from '../upstream/providers.ts';
import type { ProviderSources } from './credentials.ts';
import { githubCredentialSources, githubOptions } from './github.ts';
import { ConfigError, type GatewayConfig } from './load.ts';
import { serviceCredentialSources, servicesOptions } from './services.ts';

/**
 * The host's tokens besides the providers' keys: GitHub's and each service's, read and followed
 * (file changes, commands) the way the providers' keys are.
 */
export function tokenSources(config: GatewayConfig): ProviderSources {
  return { ...(config.github ? githubCredentialSources(config.github) : {}), ...serviceCredentialSources(config.services) };
}

/**
 * What a config file sets on a gateway, with its credentials resolved: for createGateway, and
 * again for reconfigure() on SIGHUP. Every setting is named, so a reload replaces all of them: what
 * the file no longer sets goes back to its default (a removed [budgets] entry, a removed [github]).
 */
export async function settingsFrom(config: GatewayConfig, providers: ProvidersConfig, tokens: ProvidersConfig): Promise<CompleteSettings> {
  return {
    providers,
    routes: config.routes,
    retry: config.retry,
    network: await networkOptions(config),
    defaultLimits: config.defaultLimits,
    groupBudgets: config.groupBudgets,
    groupModels: config.groupModels,
    groupServerTools: config.groupServerTools,
    serverToolPrices: config.serverToolPrices,
    prices: config.prices,
    unknownModelPrice: config.unknownModelPrice,
    budgetWaitMs: config.budgetWaitMs,
    groupRates: config.groupRates,
    ...tokenSettings(config, tokens),
    egress: config.egress,
  };
}

/** The settings the host's tokens go into (what a token change reconfigures). */
export function tokenSettings(config: GatewayConfig, tokens: ProvidersConfig): Pick<CompleteSettings, 'github' | 'services'> {
  return {
    github: config.github ? githubOptions(config.github, tokens.github?.apiKey) : undefined,
    services: servicesOptions(config.services, tokens),
  };
}

/** The outbound proxy and the extra CA file's certificates. */
async function networkOptions(config: GatewayConfig): Promise<NetworkOptions> {
  const { proxyUrl, caFile } = config.network;
  if (!caFile) return { proxyUrl };
  try {
    return { proxyUrl, extraCaPem: await readFile(caFile, 'utf8') };
  } catch (error) {
    throw new ConfigError(config.file ?? '(defaults)', 'network.ca_file', `cannot read ${caFile} (${(error as NodeJS.ErrnoException).code})`);
  }
}
