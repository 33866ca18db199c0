// Claude model ids as each platform spells them. Anthropic's API says `claude-sonnet-4-5-20250929`;
// Bedrock says `anthropic.claude-sonnet-4-5-20250929-v1:0`, behind a cross-region inference profile
// `us.anthropic....` or an ARN; Vertex says `claude-sonnet-4-5@20250929`. Prices, model globs and
// routes are written in Anthropic's names, so ids from the other two are brought back to them here,
// and a route crossing platforms spells its model the way the upstream expects.
// Ids come from clients: each function is a few string operations on a bounded input, no regex that
// could backtrack.

/** Longer ids are nobody's model: returned unchanged, never scanned. */
const MAX_ID_CHARS = 256;

/** Bedrock's inference-profile prefixes (a geography, or `global`). An unknown prefix is left alone. */
export const BEDROCK_PROFILE_PREFIXES: ReadonlySet<string> = new Set(['us', 'eu', 'apac', 'jp', 'au', 'us-gov', 'global']);

const BEDROCK_PROVIDER = 'anthropic.';
/** The version Bedrock appends to a dated model (undated release names carry none). */
const BEDROCK_DATED_VERSION = '-v1:0';

/** The Anthropic API name of a Bedrock or Vertex id; any other id unchanged. */
export function canonicalClaudeModel(id: string): string {
  if (id.length > MAX_ID_CHARS) return id;
  if (id.startsWith('arn:')) return fromArn(id) ?? id;
  return fromBedrock(id) ?? fromVertex(id) ?? id;
}

/**
 * The Bedrock id of an Anthropic name, behind the inference profile `profilePrefix` (`us`, `global`,
 * ...; the configuration checks it against BEDROCK_PROFILE_PREFIXES) when given. Dated names get
 * `-v1:0`; undated release names get none (Claude Code sends `us.anthropic.claude-opus-5-5`). A Bedrock
 * id or ARN, or a name that is not Claude's, is returned unchanged.
 */
export function bedrockModelId(name: string, profilePrefix?: string): string {
  if (name.length > MAX_ID_CHARS || name.startsWith('arn:') || name.includes(BEDROCK_PROVIDER)) return name;
  const canonical = canonicalClaudeModel(name);
  if (!canonical.startsWith('claude-')) return name;
  const id = `${BEDROCK_PROVIDER}${canonical}${dateOf(canonical) === undefined ? '' : BEDROCK_DATED_VERSION}`;
  return profilePrefix ? `${profilePrefix}.${id}` : id;
}

/** The Vertex id of an Anthropic name (`claude-sonnet-4-5@20250929`); undated names and Vertex ids unchanged. */
export function vertexModelId(name: string): string {
  if (name.length > MAX_ID_CHARS || name.includes('@')) return name;
  const canonical = canonicalClaudeModel(name);
  const date = dateOf(canonical);
  if (date === undefined || !canonical.startsWith('claude-')) return canonical;
  return `${canonical.slice(0, -date.length - 1)}@${date}`;
}

/** `arn:PARTITION:bedrock:REGION:ACCOUNT:TYPE/ID` (an inference profile or a foundation model) -> ID's name. */
function fromArn(arn: string): string | undefined {
  const fields = arn.split(':', 5);
  if (fields.length < 5 || fields[2] !== 'bedrock') return undefined;
  const resource = arn.slice(fields.join(':').length + 1);
  const slash = resource.indexOf('/');
  if (slash < 0) return undefined;
  // An application inference profile's id (`.../application-inference-profile/abc123`) names no model.
  return fromBedrock(resource.slice(slash + 1));
}

/** `[PREFIX.]anthropic.NAME[-vN[:M]]` -> NAME. */
function fromBedrock(id: string): string | undefined {
  const at = id.indexOf(BEDROCK_PROVIDER);
  if (at < 0) return undefined;
  if (at > 0 && !(id[at - 1] === '.' && BEDROCK_PROFILE_PREFIXES.has(id.slice(0, at - 1)))) return undefined;
  const name = withoutVersion(id.slice(at + BEDROCK_PROVIDER.length));
  return name.startsWith('claude-') && isNameChars(name) ? name : undefined;
}

/** `claude-x-20250929-v1:0` -> `claude-x-20250929`: drops a trailing `-v<digits>` and its `:<digits>`. */
function withoutVersion(name: string): string {
  const dash = name.lastIndexOf('-v');
  if (dash < 0) return name;
  const [major, minor, ...more] = name.slice(dash + 2).split(':');
  if (more.length > 0 || !isDigits(major!) || (minor !== undefined && !isDigits(minor))) return name;
  return name.slice(0, dash);
}

/** `claude-x@20250929` -> `claude-x-20250929`. */
function fromVertex(id: string): string | undefined {
  const at = id.indexOf('@');
  if (at < 0 || !id.startsWith('claude-')) return undefined;
  const date = id.slice(at + 1);
  const name = id.slice(0, at);
  return date.length === 8 && isDigits(date) && isNameChars(name) ? `${name}-${date}` : undefined;
}

/** The trailing `YYYYMMDD` of a dated name. */
function dateOf(name: string): string | undefined {
  const date = name.slice(-8);
  return name.length > 9 && name[name.length - 9] === '-' && isDigits(date) ? date : undefined;
}

function isDigits(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x30 || code > 0x39) return false;
  }
  return true;
}

/** Lower-case letters, digits, `-` and `.`: what model names are made of. */
function isNameChars(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (!((code >= 0x61 && code <= 0x7a) || (code >= 0x30 && code <= 0x39) || code === 0x2d || code === 0x2e)) return false;
  }
  return true;
}
