// Model routing: which upstream serves a model, under which name, and where to fall back. Routes
// come from configuration; without any, each client's requests go to its own provider by name
// (`anthropic`, `openai`), so every model Claude Code asks for (main, small/fast) just works.
import { GatewayError } from '../wire/errors.ts';
import { globToRegExp, isGlob } from '../util/glob.ts';
import { ValidationError } from '../util/validation.ts';
import type { Upstream } from './providers.ts';
import type { Dialect } from '../wire/dialect.ts';
import { canonicalClaudeModel } from '../wire/claude-models.ts';
import { type ClaudeCall, canServe, formatOfKind } from './claude-request.ts';

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
  /** The route's models that are names, not globs: aliases a client may ask for. */
  names: string[];
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
      return { names: route.models.filter((model) => !isGlob(model)), patterns: route.models.map(globToRegExp), candidates };
    });
  }

  /** Model names (not globs) routes give `dialect`'s clients: aliases like `fast`, in order. */
  names(dialect: Dialect): string[] {
    const names = this.routes
      .filter((route) => route.candidates.some(({ provider }) => this.upstreams.get(provider)!.dialect === dialect))
      .flatMap((route) => route.names);
    return [...new Set(names)];
  }

  /**
   * Where a request of `dialect` for `model` may go, first choice first. A Claude call (`claude`)
   * matches routes by its model as the client spelled it or by its Anthropic name
   * (`us.anthropic.claude-sonnet-4-5-v1:0` is `claude-sonnet-4-5`); without a route it goes to an
   * upstream of its own format when there is one (a Bedrock client to Bedrock).
   */
  candidates(dialect: Dialect, model: string | undefined, claude?: ClaudeCall): Candidate[] {
    const usable = (upstream: Upstream) => upstream.dialect === dialect && (!claude || canServe(upstream, claude));
    if (model !== undefined) {
      const canonical = claude ? canonicalClaudeModel(model) : model;
      for (const route of this.routes) {
        if (!route.patterns.some((pattern) => pattern.test(model) || pattern.test(canonical))) continue;
        const candidates = route.candidates
          .map(({ provider, model: renamed }) => ({ upstream: this.upstreams.get(provider)!, model: renamed }))
          .filter(({ upstream }) => usable(upstream));
        if (candidates.length > 0) return candidates;
      }
    }
    const all = [...this.upstreams.values()];
    const fallback =
      (claude && claude.format !== 'anthropic' ? all.find((upstream) => formatOfKind(upstream.kind) === claude.format && usable(upstream)) : undefined) ??
      [this.upstreams.get(dialect)].find((upstream) => upstream !== undefined && usable(upstream)) ??
      all.find(usable);
    if (!fallback) {
      if (claude?.endpoint === 'count_tokens') {
        throw new GatewayError('not_found', `counting tokens in the ${claude.format} format needs a provider of that kind here`);
      }
      throw new GatewayError('provider_not_configured', `the gateway has no ${dialect === 'anthropic' ? 'Anthropic' : 'OpenAI'} provider configured`);
    }
    return [{ upstream: fallback }];
  }
}
