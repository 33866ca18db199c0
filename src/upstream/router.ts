// Model routing: which upstream serves a model, under which name, and where to fall back. Routes
// come from configuration; without any, each client's requests go to its own provider by name
// (`anthropic`, `openai`), so every model Claude Code asks for (main, small/fast) just works.
import { GatewayError } from '../wire/errors.ts';
import { globToRegExp } from '../util/glob.ts';
import { ValidationError } from '../util/validation.ts';
import type { Upstream } from './providers.ts';
import type { Dialect } from '../wire/dialect.ts';

export interface RouteConfig {
  /** Model names or globs this route serves (`claude-*`, `fast`). */
  models: string[];
  /** The provider that serves them. */
  provider: string;
  /** Send this model name upstream instead (an alias: `fast` -> `claude-haiku-4-5`). */
  rename?: string;
  /** Tried in order when the provider fails before answering: `name` or `name:model`. */
  fallbacks?: string[];
}

/** One place a call may go: the upstream, and the model name to send if it differs. */
export interface Candidate {
  upstream: Upstream;
  model?: string;
}

interface CompiledRoute {
  patterns: RegExp[];
  candidates: { provider: string; model?: string }[];
}

export class Router {
  private readonly upstreams: Map<string, Upstream>;
  private readonly routes: CompiledRoute[];

  constructor(upstreams: Map<string, Upstream>, routes: RouteConfig[] = []) {
    this.upstreams = upstreams;
    this.routes = routes.map((route, index) => {
      const candidates = [
        { provider: route.provider, model: route.rename },
        ...(route.fallbacks ?? []).map((fallback) => {
          const at = fallback.indexOf(':');
          return at === -1 ? { provider: fallback, model: route.rename } : { provider: fallback.slice(0, at), model: fallback.slice(at + 1) };
        }),
      ];
      for (const candidate of candidates) {
        if (!upstreams.has(candidate.provider)) throw new ValidationError(`routes[${index}]`, `no provider named ${candidate.provider}`);
      }
      return { patterns: route.models.map(globToRegExp), candidates };
    });
  }

  /** Where a request of `dialect` for `model` may go, first choice first. */
  candidates(dialect: Dialect, model: string | undefined): Candidate[] {
    if (model !== undefined) {
      for (const route of this.routes) {
        if (!route.patterns.some((pattern) => pattern.test(model))) continue;
        const usable = route.candidates
          .map(({ provider, model: renamed }) => ({ upstream: this.upstreams.get(provider)!, model: renamed }))
          .filter(({ upstream }) => upstream.dialect === dialect);
        if (usable.length > 0) return usable;
      }
    }
    const fallback = this.upstreams.get(dialect) ?? [...this.upstreams.values()].find((upstream) => upstream.dialect === dialect);
    if (!fallback) {
      throw new GatewayError('provider_not_configured', `the gateway has no ${dialect === 'anthropic' ? 'Anthropic' : 'OpenAI'} provider configured`);
    }
    return [{ upstream: fallback }];
  }
}
