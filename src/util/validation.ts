// The one validation layer's bottom: the error every settings check throws, and the rules more than
// one layer applies (an upstream's base URL, a host name, a non-negative number). A ValidationError
// is the caller's mistake: the control API answers it 400, while any other error is a bug (500).

/** A setting, limit or request field that is wrong: `field` names it, `problem` says what is wrong. */
export class ValidationError extends TypeError {
  override readonly name: string = 'ValidationError';
  /** The setting at fault, in the caller's own spelling (`providers.azure.baseUrl`, `limit \`rpm\``). */
  readonly field: string;
  /** What is wrong with it, without the field's name (the config reader re-words it with the file's field). */
  readonly problem: string;
  constructor(field: string, problem: string) {
    super(`${field}: ${problem}`);
    this.field = field;
    this.problem = problem;
  }
}

/** `raw` as an http(s) URL without credentials or a query (an upstream's base URL); `field` names it in the error. */
export function httpUrl(raw: string, field: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new ValidationError(field, `must be an http(s) URL, got "${raw}"`);
  if (url.username || url.password || url.search) throw new ValidationError(field, 'must not carry credentials or a query');
  return url;
}

/** A host name with an optional port, as clients write it in their URLs (`github.com`, `ghe.local:8443`). */
export function checkHostName(host: string, field: string): string {
  if (!/^[A-Za-z0-9.-]+(?::\d+)?$/.test(host)) throw new ValidationError(field, `must be a host name such as github.com, got "${host}"`);
  return host;
}

/** A finite number >= 0 (a budget, a price, a limit). */
export function checkNonNegative(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new ValidationError(field, 'must be a non-negative number');
  return value;
}

/** Runs a shared check, handing its ValidationError to `fail` (the config reader's, naming the file and field). */
export function checked<T>(check: () => T, fail: (field: string, problem: string) => never): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof ValidationError) fail(error.field, error.problem);
    throw error;
  }
}

/** The object without its undefined fields (so spreading it over defaults keeps them). */
export function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
