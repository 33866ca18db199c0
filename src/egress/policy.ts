// The egress policy of a gateway: the presets (shipped and configured), each group's list, and how a
// key's own list combines with its group's. Default deny: a key whose limits and group name no egress
// gets none. A group's list is the ceiling of its keys and the default of those that name none; a key's
// list can only narrow it (a request must be allowed by both). Refusals say what would allow the
// request, because the model reads them.
import { isIP } from 'node:net';
import { ValidationError } from '../util/validation.ts';
import { SHIPPED_PRESETS } from './presets.ts';
import { type CompiledRule, compileEntries, type EgressEntry, type EgressTarget, matchRule } from './rules.ts';

export interface EgressPolicyOptions {
  /** Presets added to the shipped ones (npm, pypi, crates, go, debian, github-releases), or replacing one by name. */
  presets?: Record<string, EgressEntry[]>;
  /** Each group's egress: the default of its keys and the most any of them may have. */
  groups?: Record<string, EgressEntry[]>;
}

/** One layer of a request's policy: the key's own list, or its group's. */
interface Layer {
  /** `this key`, `group NAME`: how a refusal names it. */
  name: string;
  rules: readonly CompiledRule[];
}

export type EgressDecision =
  /** `rules`: the rule that allowed the request in each layer (each must also allow the address). */
  { allowed: true; rules: CompiledRule[] } | { allowed: false; reason: 'no_policy' | 'not_allowed'; message: string };

/** Rule texts a refusal lists, at most. */
const LISTED_RULES = 8;

export class EgressPolicy {
  private readonly presets: Readonly<Record<string, readonly EgressEntry[]>>;
  private readonly presetRules: ReadonlyMap<string, CompiledRule[]>;
  private readonly groups: ReadonlyMap<string, CompiledRule[]>;
  /** Each key's compiled list, by its limits' `egress` array (stable for the key's life). */
  private readonly keyRules = new WeakMap<readonly EgressEntry[], CompiledRule[]>();

  /** Compiles and checks everything; throws a ValidationError naming the first bad field. */
  constructor(options: EgressPolicyOptions = {}) {
    const configured = options.presets ?? {};
    for (const name of Object.keys(configured)) {
      if (!/^[a-z][a-z0-9_-]{0,63}$/.test(name)) throw new ValidationError(`egress.presets.${name}`, 'a preset name is lower-case letters, digits, - and _');
    }
    this.presets = { ...SHIPPED_PRESETS, ...configured };
    this.presetRules = new Map(Object.keys(this.presets).map((name) => [name, compileEntries([name], this.presets, `egress.presets.${name}`, name)]));
    this.groups = new Map(
      Object.entries(options.groups ?? {}).map(([group, entries]) => [
        group,
        compileEntries(entries, this.presets, `egress.groups.${group}`, `group ${group}`),
      ]),
    );
  }

  /** The preset names a key or group may name. */
  presetNames(): string[] {
    return [...this.presetRules.keys()].sort();
  }

  /** Checks a key's `egress` list (at mint); throws a ValidationError. */
  check(entries: readonly EgressEntry[], field = 'limit `egress`'): void {
    compileEntries(entries, this.presets, field, 'key');
  }

  /** Whether a key with this list, in this group, has any egress (the runner sets the proxy env then). */
  grants(group: string, entries: readonly EgressEntry[] | undefined): boolean {
    return this.layers(group, entries).length > 0;
  }

  /** What the key's and group's lists say of `target`. */
  decide(group: string, entries: readonly EgressEntry[] | undefined, target: EgressTarget): EgressDecision {
    const layers = this.layers(group, entries);
    const where = targetText(target);
    if (layers.length === 0) {
      return {
        allowed: false,
        reason: 'no_policy',
        message: `egress to ${where} refused: this key has no egress allowed (network access goes only through rules the operator grants). ${this.hint(target)}`,
      };
    }
    const rules: CompiledRule[] = [];
    for (const layer of layers) {
      const near: string[] = [];
      const allowing = layer.rules.find((rule) => {
        const match = matchRule(rule, target);
        if (match.kind === 'near') near.push(match.why);
        return match.kind === 'allows';
      });
      if (!allowing) {
        const listed = layer.rules.slice(0, LISTED_RULES).map((rule) => rule.text);
        const more = layer.rules.length > LISTED_RULES ? `, and ${layer.rules.length - LISTED_RULES} more` : '';
        const why = near.length > 0 ? ` (${near.slice(0, 3).join('; ')})` : '';
        return {
          allowed: false,
          reason: 'not_allowed',
          message: `egress to ${where} refused: no rule of ${layer.name} allows it${why}. ${layer.name} allows: ${listed.join(', ') || 'nothing'}${more}. ${this.hint(target)}`,
        };
      }
      rules.push(allowing);
    }
    return { allowed: true, rules };
  }

  /** The key's own layer (if it names a list) and its group's (if the group has one). */
  private layers(group: string, entries: readonly EgressEntry[] | undefined): Layer[] {
    const layers: Layer[] = [];
    if (entries !== undefined) layers.push({ name: 'this key', rules: this.compiledKey(entries) });
    const groupRules = this.groups.get(group);
    if (groupRules) layers.push({ name: `group ${group}`, rules: groupRules });
    return layers;
  }

  /** A key's list, compiled once. One that names a preset a reload removed allows nothing. */
  private compiledKey(entries: readonly EgressEntry[]): CompiledRule[] {
    let rules = this.keyRules.get(entries);
    if (!rules) {
      try {
        rules = compileEntries(entries, this.presets, 'limit `egress`', 'key');
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        rules = [];
      }
      this.keyRules.set(entries, rules);
    }
    return rules;
  }

  /** What the operator could grant: a preset that allows the target, else the host itself. */
  private hint(target: EgressTarget): string {
    const preset = [...this.presetRules].find(([, rules]) => rules.some((rule) => matchRule(rule, target).kind === 'allows'))?.[0];
    const host = isIP(target.host) === 6 ? `[${target.host}]` : target.host;
    const grant = preset ? `the preset "${preset}" (--egress ${preset}) or ${host}:${target.port}` : `${host}:${target.port} (--egress ${host}:${target.port})`;
    return `To allow it, ask the operator to grant ${grant}.`;
  }
}

/** Whether each layer's rule allows connecting to `address` (a non-public address must be named by a rule). */
export function addressNamed(rules: readonly CompiledRule[], address: string): boolean {
  const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
  return rules.every((rule) => rule.addresses?.check(address, type) === true);
}

function targetText(target: EgressTarget): string {
  const host = isIP(target.host) === 6 ? `[${target.host}]` : target.host;
  const request = target.method ? `${target.method} http://${host}:${target.port}${target.path ?? ''}` : `${host}:${target.port}`;
  return request.length > 300 ? `${request.slice(0, 300)}…` : request;
}
