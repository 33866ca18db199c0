// Google credentials on the host, for Vertex AI upstreams: an OAuth access token from a service-account or
// authorized-user file, or from Application Default Credentials, fetched and refreshed before expiry by
// google-auth-library. Only the token leaves this module, into the gateway's own upstream requests; no
// private key, assertion, refresh token or access token ever reaches an error message or a log line.
import { readFile } from 'node:fs/promises';
import type { AuthClient, JWT } from 'google-auth-library';

/** The library is loaded on the first token only: a gateway without Vertex never pays for it (~250 ms). */
const library = () => import('google-auth-library');

export interface GoogleAuthOptions {
  /** A service-account or authorized-user JSON file. Default: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's user credentials, workload identity, the metadata server). */
  credentialsFile?: string;
  /** OAuth scopes. Default cloud-platform. */
  scopes?: string[];
  /** The Google Cloud project: saves Application Default Credentials from looking it up (gcloud, the metadata server). */
  projectId?: string;
}

export interface GoogleTokenSource {
  /** A valid access token, fetched or refreshed (before expiry) as needed. */
  token(): Promise<string>;
}

const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';
/** google-auth-library v11 posts every service-account grant here, whatever the key file's `token_uri` says. */
const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';
/** A key file is a few KiB; anything much larger is not one. */
const MAX_CREDENTIALS_FILE = 256 * 1024;
/** Per token request. The library retries a grant that timed out or met a 5xx up to three times, with backoff. */
const TOKEN_REQUEST_TIMEOUT_MS = 10_000;

interface Credential {
  client: AuthClient;
  /** Where tokens come from, for error messages (no secret in it). */
  endpoint: string;
}

/**
 * A token source over one credential. The client is made once, on the first call (concurrent first calls
 * share it; a failure is not cached, so a later call tries again); the library then caches the token and
 * refreshes it once it is within `eagerRefreshThresholdMillis` (5 minutes) of expiry.
 */
export function createGoogleTokenSource(options: GoogleAuthOptions = {}): GoogleTokenSource {
  const scopes = options.scopes && options.scopes.length > 0 ? [...options.scopes] : [CLOUD_PLATFORM];
  let pending: Promise<Credential> | undefined;
  const credential = (): Promise<Credential> => {
    pending ??= (options.credentialsFile === undefined ? fromApplicationDefault(scopes, options.projectId) : fromFile(options.credentialsFile, scopes)).catch(
      (err: unknown) => {
        pending = undefined;
        throw err;
      },
    );
    return pending;
  };
  return {
    async token() {
      const { client, endpoint } = await credential();
      let token: string | null | undefined;
      try {
        ({ token } = await client.getAccessToken());
      } catch (err) {
        throw new Error(`Google access token request to ${endpoint} failed: ${safeReason(err)}`);
      }
      if (!token) throw new Error(`Google access token request to ${endpoint} returned no token`);
      return token;
    },
  };
}

/**
 * A client from an explicit key file, read and checked here rather than by the library: the file is bounded,
 * only the two types Vertex needs are accepted, and a malformed file's error cannot quote its content (V8's
 * JSON.parse message quotes the text it failed on, which would be private key bytes).
 */
async function fromFile(file: string, scopes: string[]): Promise<Credential> {
  const what = `Google credentials file ${file}`;
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new Error(`${what} cannot be read: ${safeReason(err)}`);
  }
  if (bytes.length > MAX_CREDENTIALS_FILE) throw new Error(`${what} is larger than ${MAX_CREDENTIALS_FILE} bytes`);
  let json: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(bytes.toString('utf8'));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error();
    json = parsed as Record<string, unknown>;
  } catch {
    throw new Error(`${what} is not a JSON object`);
  }
  const field = (name: string): string => {
    const value = json[name];
    if (typeof value !== 'string' || value === '') throw new Error(`${what} has no ${name}`);
    return value;
  };
  const transporterOptions = { timeout: TOKEN_REQUEST_TIMEOUT_MS };
  const tokenUri = json.token_uri === undefined ? undefined : checkedTokenUri(json.token_uri, what);
  const { JWT, UserRefreshClient } = await library();
  if (json.type === 'service_account') {
    const client = new JWT({
      email: field('client_email'),
      key: field('private_key'),
      keyId: typeof json.private_key_id === 'string' ? json.private_key_id : undefined,
      scopes,
      transporterOptions,
    });
    if (tokenUri) sendGrantsTo(client, tokenUri);
    return { client, endpoint: tokenUri ?? GOOGLE_TOKEN_URL };
  }
  if (json.type === 'authorized_user') {
    const client = new UserRefreshClient({
      clientId: field('client_id'),
      clientSecret: field('client_secret'),
      refreshToken: field('refresh_token'),
      transporterOptions,
      ...(tokenUri ? { endpoints: { oauth2TokenUrl: tokenUri } } : {}),
    });
    return { client, endpoint: String(client.endpoints.oauth2TokenUrl) };
  }
  throw new Error(`${what} has type ${JSON.stringify(String(json.type).slice(0, 40))}; expected service_account or authorized_user`);
}

/** Application Default Credentials, found by the library (every credential type it knows). */
async function fromApplicationDefault(scopes: string[], projectId: string | undefined): Promise<Credential> {
  const { GoogleAuth, JWT, UserRefreshClient } = await library();
  const auth = new GoogleAuth({ scopes, projectId, clientOptions: { transporterOptions: { timeout: TOKEN_REQUEST_TIMEOUT_MS } } });
  let client: AuthClient;
  try {
    client = await auth.getClient();
  } catch (err) {
    const envFile = process.env.GOOGLE_APPLICATION_CREDENTIALS;
    if (err instanceof Error && err.message.startsWith('Could not load the default credentials')) {
      throw new Error(
        'no Google Application Default Credentials found (set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, or run on Google Cloud)',
      );
    }
    // The library's own message may quote a malformed file's content: only its error code is passed on.
    if (envFile) throw new Error(`the Google credentials file named by GOOGLE_APPLICATION_CREDENTIALS (${envFile}) cannot be used: ${safeReason(err)}`);
    throw new Error(`Google Application Default Credentials cannot be loaded: ${safeReason(err)}`);
  }
  const json = auth.jsonContent as { type?: unknown; token_uri?: unknown } | null;
  if (client instanceof JWT && json?.token_uri !== undefined) {
    const tokenUri = checkedTokenUri(json.token_uri, 'the Application Default Credentials file');
    sendGrantsTo(client, tokenUri);
    return { client, endpoint: tokenUri };
  }
  if (client instanceof JWT) return { client, endpoint: GOOGLE_TOKEN_URL };
  if (client instanceof UserRefreshClient) return { client, endpoint: String(client.endpoints.oauth2TokenUrl) };
  return { client, endpoint: `Google (${client.constructor.name})` };
}

/**
 * The token endpoint a key file names. It receives a signed assertion that is worth an access token, so it
 * must be https, or plain http on loopback only (a local stand-in).
 */
function checkedTokenUri(value: unknown, what: string): string {
  let url: URL | undefined;
  try {
    url = typeof value === 'string' ? new URL(value) : undefined;
  } catch {}
  const loopback = url !== undefined && ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname);
  if (!url || !(url.protocol === 'https:' || (url.protocol === 'http:' && loopback))) {
    throw new Error(`${what} has a token_uri that is not an https URL (or http on loopback)`);
  }
  return url.href;
}

/**
 * google-auth-library v11 ignores a service-account file's `token_uri`: its gtoken module posts the grant to a
 * hard-coded https://oauth2.googleapis.com/token (and signs aud with that same URL). The supported hook is
 * the client's Gaxios transporter, whose request interceptors see each request before it is sent: this one
 * moves the grant to the file's endpoint and touches nothing else.
 */
function sendGrantsTo(client: JWT, tokenUri: string): void {
  if (tokenUri === GOOGLE_TOKEN_URL) return;
  client.transporter.interceptors.request.add({
    resolved: async (config) => {
      if (config.url.href === GOOGLE_TOKEN_URL) config.url = new URL(tokenUri);
      return config;
    },
  });
}

/**
 * What went wrong, without the library's text (a Gaxios error carries the request, assertion included, and a
 * parse error quotes the file): an HTTP status with the OAuth error code, or a system error code.
 */
function safeReason(err: unknown): string {
  const e = err as { code?: unknown; status?: unknown; response?: { status?: unknown; data?: unknown }; cause?: { code?: unknown } } | null;
  const status = e?.response?.status ?? e?.status;
  if (typeof status === 'number') {
    const data = e?.response?.data as { error?: unknown } | undefined;
    const oauthError = typeof data?.error === 'string' && /^[a-z_]{1,64}$/.test(data.error) ? ` ${data.error}` : '';
    return `HTTP ${status}${oauthError}`;
  }
  for (const code of [e?.code, e?.cause?.code]) {
    if (typeof code === 'string' && /^[A-Za-z][A-Za-z0-9_]{1,63}$/.test(code)) return code; // ENOENT, ECONNREFUSED, TimeoutError
  }
  return 'an error whose message is withheld (it may quote a secret)';
}
