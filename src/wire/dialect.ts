// Which API a client speaks: its dialect. Errors, usage and headers are read and written in it.
import type { IncomingHttpHeaders } from 'node:http';

export type Dialect = 'anthropic' | 'openai';

/**
 * Which provider's dialect a request speaks, judged from its path and headers.
 * Anthropic clients always send `anthropic-version`; OpenAI clients never do.
 */
export function dialectOf(path: string, headers: IncomingHttpHeaders): Dialect {
  if (path.startsWith('/v1/messages')) return 'anthropic';
  if (headers['anthropic-version'] !== undefined || headers['x-api-key'] !== undefined) return 'anthropic';
  return 'openai';
}
