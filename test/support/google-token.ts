// A loopback stand-in for Google's OAuth token endpoint and a generated service account to use with it, so
// the Vertex tests get real access tokens through google-auth-library's real JWT-bearer grant: the stand-in
// verifies the RS256 assertion with the account's public key and mints random tokens it remembers.
import { generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readBodyUpTo } from './http.ts';

/** The audience google-auth-library v11 signs into every assertion, whatever the key file's token_uri. */
export const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';
const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

export interface ServiceAccountKey {
  clientEmail: string;
  projectId: string;
  privateKeyId: string;
  privateKeyPem: string;
  publicKeyPem: string;
}

export interface ServiceAccount extends ServiceAccountKey {
  /** The service-account JSON file (in its own temp directory). */
  file: string;
  /** Removes the file and its directory. */
  remove(): void;
}

/** A fresh RSA key pair and identity for a service account. */
export function serviceAccountKey(): ServiceAccountKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const id = randomBytes(4).toString('hex');
  return {
    clientEmail: `gateway-test-${id}@standin-project.iam.gserviceaccount.com`,
    projectId: 'standin-project',
    privateKeyId: randomBytes(20).toString('hex'),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** Writes a service-account JSON file whose token_uri is `tokenUri` (a new key unless one is given). */
export function createServiceAccount(tokenUri: string, key: ServiceAccountKey = serviceAccountKey()): ServiceAccount {
  const dir = mkdtempSync(path.join(tmpdir(), 'gateway-google-sa-'));
  const file = path.join(dir, 'service-account.json');
  const json = {
    type: 'service_account',
    project_id: key.projectId,
    private_key_id: key.privateKeyId,
    private_key: key.privateKeyPem,
    client_email: key.clientEmail,
    client_id: '100000000000000000001',
    auth_uri: 'https://accounts.google.com/o/oauth2/auth',
    token_uri: tokenUri,
  };
  writeFileSync(file, JSON.stringify(json, null, 2), { mode: 0o600 });
  return { ...key, file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** gcloud's user credentials: what an authorized_user file holds and the refresh-token grant sends. */
export interface AuthorizedUser {
  clientId: string;
  clientSecret: string;
  refreshToken: string;
}

/** Writes an authorized_user JSON file (as `gcloud auth application-default login` does, plus a token_uri). */
export function createAuthorizedUser(tokenUri: string, user: AuthorizedUser): { file: string; remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'gateway-google-user-'));
  const file = path.join(dir, 'application_default_credentials.json');
  const json = { type: 'authorized_user', client_id: user.clientId, client_secret: user.clientSecret, refresh_token: user.refreshToken, token_uri: tokenUri };
  writeFileSync(file, JSON.stringify(json, null, 2), { mode: 0o600 });
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface GoogleTokenStandinOptions {
  publicKeyPem: string;
  clientEmail: string;
  /** A user whose refresh-token grant is accepted too. */
  user?: AuthorizedUser;
  /** `expires_in` of each token minted. Default 3600. */
  expiresInSeconds?: number;
}

export interface GoogleTokenStandin {
  /** The token endpoint (`http://127.0.0.1:PORT/token`), for a key file's token_uri. */
  url: string;
  /** The access tokens minted, in order. */
  issued: string[];
  /** Every POST to the endpoint, granted or refused. */
  readonly requests: number;
  /** The `aud` of each verified assertion (google-auth-library v11 sends GOOGLE_TOKEN_URL). */
  audiences: string[];
  close(): Promise<void>;
}

type Claims = { iss?: unknown; aud?: unknown; scope?: unknown; exp?: unknown; iat?: unknown };

/**
 * Starts the stand-in on loopback; it grants assertions signed by `publicKeyPem`'s key for `clientEmail`, and
 * `user`'s refresh-token grant when one is given.
 */
export async function startGoogleTokenStandin(options: GoogleTokenStandinOptions): Promise<GoogleTokenStandin> {
  const expiresIn = options.expiresInSeconds ?? 3600;
  const issued: string[] = [];
  const audiences: string[] = [];
  let requests = 0;
  let url = '';

  /** The reason a grant is refused, or undefined when the assertion is good. */
  const refusal = (form: URLSearchParams): string | undefined => {
    if (form.get('grant_type') === 'refresh_token') {
      const { user } = options;
      const good =
        user && form.get('client_id') === user.clientId && form.get('client_secret') === user.clientSecret && form.get('refresh_token') === user.refreshToken;
      return good ? undefined : 'bad client or refresh token';
    }
    if (form.get('grant_type') !== JWT_BEARER) return 'unsupported grant_type';
    const parts = (form.get('assertion') ?? '').split('.');
    if (parts.length !== 3) return 'assertion is not a JWT';
    const [header, payload, signature] = parts as [string, string, string];
    let claims: Claims;
    try {
      if ((JSON.parse(Buffer.from(header, 'base64url').toString()) as { alg?: unknown }).alg !== 'RS256') return 'alg is not RS256';
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Claims;
    } catch {
      return 'assertion is not JSON';
    }
    if (!verify('RSA-SHA256', Buffer.from(`${header}.${payload}`), options.publicKeyPem, Buffer.from(signature, 'base64url'))) return 'invalid signature';
    if (claims.iss !== options.clientEmail) return 'wrong issuer';
    if (claims.aud !== url && claims.aud !== GOOGLE_TOKEN_URL) return 'wrong audience';
    if (typeof claims.scope !== 'string' || !claims.scope.split(' ').includes(CLOUD_PLATFORM)) return 'no cloud-platform scope';
    const now = Date.now() / 1000;
    if (typeof claims.exp !== 'number' || claims.exp <= now) return 'assertion expired';
    if (typeof claims.iat !== 'number' || claims.iat > now + 60) return 'assertion issued in the future';
    audiences.push(claims.aud);
    return undefined;
  };

  const server = http.createServer(async (req, res) => {
    const answer = (status: number, body: unknown) => {
      const json = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(json) });
      res.end(json);
    };
    if (req.method !== 'POST' || req.url !== '/token') return answer(404, { error: 'not_found' });
    requests++;
    const bytes = await readBodyUpTo(req, 64 * 1024);
    if (bytes === undefined) return answer(413, { error: 'invalid_request' });
    const why = refusal(new URLSearchParams(bytes.toString()));
    if (why) return answer(400, { error: 'invalid_grant', error_description: why });
    const token = `ya29.standin-${randomBytes(24).toString('base64url')}`;
    issued.push(token);
    answer(200, { access_token: token, expires_in: expiresIn, token_type: 'Bearer' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
  return {
    url,
    issued,
    audiences,
    get requests() {
      return requests;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
