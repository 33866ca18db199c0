// Model discovery for Claude clients: `GET /v1/models` answered with the models this key may
// actually use, so an agent's model picker never offers one it would be refused. Claude Code asks
// once per start (with CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1) and reads `data[].id`.

/** One entry of Anthropic's model list: `type`, `id`, `display_name`, `created_at` (an upstream's may have more). */
type ModelEntry = Record<string, unknown> & { id: string };

/** A model list Anthropic's API would give: `data`, `has_more`, `first_id`, `last_id`. */
function listBody(entries: readonly ModelEntry[]): Buffer {
  const ids = entries.map((entry) => entry.id);
  return Buffer.from(JSON.stringify({ data: entries, has_more: false, first_id: ids[0] ?? null, last_id: ids.at(-1) ?? null }));
}

function aliasEntry(id: string): ModelEntry {
  return { type: 'model', id, display_name: id, created_at: new Date(0).toISOString() };
}

/**
 * The upstream's list with only the models `allowed` passes, followed by the route `names` (aliases)
 * it allows that the upstream did not list. Undefined when `body` is no model list.
 */
function filterModelList(body: Buffer, allowed: (id: string) => boolean, names: readonly string[]): Buffer | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  const data = (parsed as { data?: unknown } | null)?.data;
  if (!Array.isArray(data)) return undefined;
  const kept = data.filter((entry): entry is ModelEntry => typeof entry?.id === 'string' && allowed(entry.id));
  const listed = new Set(kept.map((entry) => entry.id));
  const aliases = names.filter((name) => !listed.has(name) && allowed(name)).map(aliasEntry);
  return listBody([...kept, ...aliases]);
}

/** A list made by the gateway, for upstreams with none of their own (Bedrock, Vertex). */
export function localModelList(ids: readonly string[], allowed: (id: string) => boolean): Buffer {
  return listBody([...new Set(ids)].filter(allowed).map(aliasEntry));
}

/** One model's entry made by the gateway (`GET /v1/models/{id}` for upstreams without a list). */
export function localModel(id: string): Buffer {
  return Buffer.from(JSON.stringify(aliasEntry(id)));
}

// Model lists are a few kilobytes; past this the answer is no list the gateway filters.
const MAX_LIST_BYTES = 1024 * 1024;

/** Collects an upstream's model list as it passes, and gives the filtered list at its end. */
export class ModelListFilter {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private readonly allowed: (id: string) => boolean;
  private readonly names: readonly string[];

  constructor(allowed: (id: string) => boolean, names: readonly string[]) {
    this.allowed = allowed;
    this.names = names;
  }

  /** Holds the chunk back (nothing goes to the client until the list is whole). */
  push(chunk: Buffer): Buffer {
    this.size += chunk.length;
    if (this.size <= MAX_LIST_BYTES) this.chunks.push(chunk);
    return Buffer.alloc(0);
  }

  /** The filtered list; an empty one when what came was too large or no list (fail closed). */
  flush(): Buffer {
    const body = this.size <= MAX_LIST_BYTES ? filterModelList(Buffer.concat(this.chunks), this.allowed, this.names) : undefined;
    return body ?? listBody([]);
  }
}
