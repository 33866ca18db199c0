// An independent SigV4 verifier for tests, written from AWS's description of the algorithm with
// node:crypto only (no smithy), so a test of src/cloud/aws.ts does not check the signer against itself.
// It verifies a request as a service would: from the bytes it received (method, raw path and query,
// headers, body) and the secret key it knows.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export interface ReceivedRequest {
  method: string;
  /** path and query exactly as received (`req.url`) */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface Verification {
  ok: boolean;
  /** Why it failed, when it did. */
  reason?: string;
  accessKeyId?: string;
  date?: string;
  region?: string;
  service?: string;
  signedHeaders?: string[];
  canonicalRequest?: string;
  stringToSign?: string;
}

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;

/** Verifies `request`'s Authorization header against `secretAccessKey` (a malformed percent-escape fails it). */
export function verifySigV4(request: ReceivedRequest, secretAccessKey: string): Verification {
  try {
    return verify(request, secretAccessKey);
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  }
}

function verify(request: ReceivedRequest, secretAccessKey: string): Verification {
  const authorization = header(request.headers, 'authorization');
  const match = authorization === undefined ? null : AUTHORIZATION.exec(authorization);
  if (!match) return { ok: false, reason: 'no AWS4-HMAC-SHA256 authorization' };
  const [, accessKeyId, date, region, service, signedList, signature] = match as unknown as string[];
  const parsed = { accessKeyId, date, region, service, signedHeaders: signedList!.split(';') };
  const amzDate = header(request.headers, 'x-amz-date');
  if (amzDate === undefined || !amzDate.startsWith(date!)) return { ok: false, reason: 'x-amz-date missing or not of the credential date', ...parsed };
  if (!parsed.signedHeaders.includes('host')) return { ok: false, reason: 'host is not signed', ...parsed };
  const sentHash = header(request.headers, 'x-amz-content-sha256');
  const bodyHash = createHash('sha256').update(request.body).digest('hex');
  if (sentHash !== undefined && sentHash !== bodyHash) return { ok: false, reason: 'x-amz-content-sha256 is not the body hash', ...parsed };

  const queryAt = request.path.indexOf('?');
  const canonicalHeaders: string[] = [];
  for (const name of parsed.signedHeaders) {
    const value = header(request.headers, name);
    if (value === undefined) return { ok: false, reason: `signed header ${name} is missing`, ...parsed };
    canonicalHeaders.push(`${name}:${value.trim().replace(/\s+/g, ' ')}\n`);
  }
  const canonicalRequest = [
    request.method,
    canonicalUri(queryAt < 0 ? request.path : request.path.slice(0, queryAt)),
    canonicalQuery(queryAt < 0 ? '' : request.path.slice(queryAt + 1)),
    canonicalHeaders.join(''),
    signedList,
    bodyHash,
  ].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  let key: Buffer = hmac(`AWS4${secretAccessKey}`, date!);
  for (const part of [region!, service!, 'aws4_request']) key = hmac(key, part);
  const expected = createHmac('sha256', key).update(stringToSign).digest();
  const ok = timingSafeEqual(expected, Buffer.from(signature!, 'hex'));
  return { ok, ...(ok ? {} : { reason: 'signature does not match' }), ...parsed, canonicalRequest, stringToSign };
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** A header's value: repeated values joined by commas, as AWS canonicalises them. */
function header(headers: ReceivedRequest['headers'], name: string): string | undefined {
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== name || value === undefined) continue;
    return Array.isArray(value) ? value.map((v) => v.trim()).join(',') : value;
  }
  return undefined;
}

/** RFC 3986 encoding of each UTF-8 byte but the unreserved ones (A-Z a-z 0-9 - _ . ~), hex upper-case. */
function uriEncode(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-_.~]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * The canonical URI: dot and empty segments resolved, then each segment of the path as received
 * URI-encoded (once more, as for every service but S3, which this does not verify: a received %2F
 * becomes %252F).
 */
function canonicalUri(path: string): string {
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const trailing = segments.length > 0 && path.endsWith('/') ? '/' : '';
  return `/${segments.map(uriEncode).join('/')}${trailing}`;
}

/** The canonical query: each name and value decoded then encoded AWS's way, sorted by name then value. */
function canonicalQuery(query: string): string {
  const pairs: [string, string][] = [];
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? '' : pair.slice(eq + 1);
    pairs.push([uriEncode(decodeURIComponent(name)), uriEncode(decodeURIComponent(value))]);
  }
  pairs.sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
  return pairs.map(([name, value]) => `${name}=${value}`).join('&');
}
