// AWS SigV4 signing for a Bedrock upstream, on the host: the container never holds an AWS credential.
// Credentials come from the SDK's default provider chain (env, shared config/credentials files and SSO,
// ECS/EKS container credentials, instance metadata) or from a provider the host passes in, fetched
// once, shared by concurrent callers and re-fetched before they expire. Only `host`, `content-type`
// and `x-amz-*` are signed, with the body's hash: whatever else the HTTP client adds or reorders
// later (user-agent, anthropic-beta, accept, ...) cannot break the signature.
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider, Checksum, SourceData } from '@smithy/types';

export interface AwsSigningOptions {
  region: string;
  /** A profile of the shared config/credentials files (SSO profiles included). Default: the default provider chain. */
  profile?: string;
  /** A host that already holds AWS credentials passes its own provider instead. */
  credentials?: AwsCredentialIdentityProvider;
  /** The SigV4 service name. Default 'bedrock'. */
  service?: string;
  /** The clock, for tests: the signing date and the credentials' expiry are read from it. */
  now?: () => Date;
}

interface SignableRequest {
  method: string;
  /** `https://bedrock-runtime.us-east-1.amazonaws.com`: the Host signed is this origin's host (port only when not the scheme's default), unless `headers` holds one. */
  origin: string;
  /** path and query exactly as sent */
  path: string;
  headers: Record<string, string | string[]>;
  body: Buffer | null;
}

export interface AwsSigner {
  /**
   * The headers to add so the request is signed: authorization, x-amz-date, x-amz-content-sha256,
   * x-amz-security-token when the credentials have a session token. They replace any header of the
   * same name; a request signed without a session token must not carry an x-amz-security-token.
   */
  sign(request: SignableRequest): Promise<Record<string, string>>;
}

/** Credentials are fetched again this long before they expire (the SDK's own margin). */
const REFRESH_BEFORE_MS = 5 * 60_000;

/** Headers the signer writes itself: a value arriving with the request is never trusted (an x-amz-content-sha256 would be taken as the body's hash). */
const WRITTEN_BY_SIGNER = new Set(['x-amz-date', 'x-amz-content-sha256', 'x-amz-security-token']);

export function createAwsSigner(options: AwsSigningOptions): AwsSigner {
  const now = options.now ?? (() => new Date());
  const source = options.credentials
    ? "the host's AWS credential provider"
    : options.profile === undefined
      ? 'the default AWS credential chain'
      : `AWS profile "${options.profile}"`;
  // The chain's SDK is loaded on the first signature only: a gateway without Bedrock never pays for it.
  let chain: AwsCredentialIdentityProvider | undefined;
  const provider = async (): Promise<AwsCredentialIdentityProvider> => {
    if (options.credentials) return options.credentials;
    const { fromNodeProviderChain } = await import('@aws-sdk/credential-providers');
    chain ??= fromNodeProviderChain(options.profile === undefined ? {} : { profile: options.profile });
    return chain;
  };
  const credentials = memoise(async () => fetchCredentials(await provider(), source), now);
  const signer = new SignatureV4({ credentials, region: options.region, service: options.service ?? 'bedrock', sha256: NodeSha256 });

  return {
    async sign(request) {
      const origin = new URL(request.origin);
      const headers: Record<string, string> = { host: origin.host };
      for (const [name, value] of Object.entries(request.headers)) {
        const lower = name.toLowerCase();
        if (lower === 'host' || lower === 'content-type' || (lower.startsWith('x-amz-') && !WRITTEN_BY_SIGNER.has(lower))) {
          headers[lower] = Array.isArray(value) ? value.join(',') : value;
        }
      }
      const queryAt = request.path.indexOf('?');
      const signed = await signer.sign(
        new HttpRequest({
          method: request.method,
          protocol: origin.protocol,
          hostname: origin.hostname,
          // SignatureV4 URI-encodes each segment of this path again, as AWS does for every service but
          // S3 with the path it receives: `:` signs as %3A, an encoded `/` (%2F) as %252F.
          path: queryAt < 0 ? request.path : request.path.slice(0, queryAt),
          query: queryAt < 0 ? {} : parseQuery(request.path.slice(queryAt + 1)),
          headers,
          body: request.body ?? undefined,
        }),
        { signingDate: now() },
      );
      const out: Record<string, string> = {};
      for (const name of ['authorization', 'x-amz-date', 'x-amz-content-sha256', 'x-amz-security-token']) {
        const value = signed.headers[name];
        if (value !== undefined) out[name] = value;
      }
      return out;
    },
  };
}

/**
 * SHA-256 and HMAC-SHA256 for SignatureV4 from node:crypto (what @smithy/hash-node does, without the
 * dependency): the pure-JS @aws-crypto/sha256-js holds the event loop ~27 ms to hash a 1 MiB body,
 * node:crypto ~2 ms.
 */
class NodeSha256 implements Checksum {
  private readonly secret: SourceData | undefined;
  private hash: Hash | Hmac;

  constructor(secret?: SourceData) {
    this.secret = secret;
    this.hash = NodeSha256.start(secret);
  }

  private static start(secret: SourceData | undefined): Hash | Hmac {
    if (secret === undefined) return createHash('sha256');
    if (typeof secret === 'string') return createHmac('sha256', secret);
    return createHmac('sha256', ArrayBuffer.isView(secret) ? new Uint8Array(secret.buffer, secret.byteOffset, secret.byteLength) : new Uint8Array(secret));
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }

  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.hash.digest()));
  }

  reset(): void {
    this.hash = NodeSha256.start(this.secret);
  }
}

/** The query's pairs decoded (SignatureV4 encodes them again, AWS's way); a repeated name keeps every value. */
function parseQuery(query: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
    const value = eq < 0 ? '' : decodeURIComponent(pair.slice(eq + 1));
    const held = out[name];
    out[name] = held === undefined ? value : [...(Array.isArray(held) ? held : [held]), value];
  }
  return out;
}

async function fetchCredentials(provider: AwsCredentialIdentityProvider, source: string): Promise<AwsCredentialIdentity> {
  let found: AwsCredentialIdentity;
  try {
    found = await provider();
  } catch (error) {
    throw new Error(`no AWS credentials found from ${source}: ${describe(error)}`);
  }
  if (typeof found?.accessKeyId !== 'string' || typeof found.secretAccessKey !== 'string' || found.accessKeyId === '' || found.secretAccessKey === '') {
    throw new Error(`no AWS credentials found from ${source}: the provider returned no access key`);
  }
  return found;
}

/**
 * The first line of a provider's error, bounded, with anything shaped like a secret access key or a
 * session token (a long run of base64 characters) cut out: the SDK's messages name files, profiles
 * and endpoints, but one from a credential process or an HTTP endpoint may quote what it was given.
 */
function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const line = message.split('\n', 1)[0]!.slice(0, 300);
  return line.replace(/[A-Za-z0-9/+=]{24,}/g, '[redacted]');
}

/**
 * One fetch at a time, shared by every caller waiting for it; the credentials are kept until five
 * minutes before their expiration. A refresh that fails while the held credentials are still valid
 * leaves the caller with those; a failed first fetch is not kept, so the next call tries again.
 */
function memoise(fetch: () => Promise<AwsCredentialIdentity>, now: () => Date): AwsCredentialIdentityProvider {
  let held: AwsCredentialIdentity | undefined;
  let pending: Promise<AwsCredentialIdentity> | undefined;
  return async () => {
    const at = now().getTime();
    const expiresAt = held?.expiration?.getTime();
    if (held && (expiresAt === undefined || expiresAt - at >= REFRESH_BEFORE_MS)) return held;
    const stillValid = held && expiresAt !== undefined && expiresAt > at ? held : undefined;
    pending ??= fetch()
      .then((fresh) => {
        held = fresh;
        return fresh;
      })
      .finally(() => {
        pending = undefined;
      });
    try {
      return await pending;
    } catch (error) {
      if (stillValid) return stillValid;
      throw error;
    }
  };
}
