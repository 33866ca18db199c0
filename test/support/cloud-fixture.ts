// The three Claude upstreams a cloud test needs, on loopback (the Bedrock runtime stand-in checking
// SigV4, the Vertex stand-in checking Google tokens minted by the token stand-in for a generated
// service account, the dev stand-in for the Anthropic API), and gateways wired to any of them, with
// a byte-exact client over a key's Unix socket (event streams are binary).
import { mkdtemp, rm } from 'node:fs/promises';
import http, { type IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { startStandin, type Standin } from '../../src/dev/standin.ts';
import { type CallRecord, createGateway, type Gateway, type GatewayOptions, type ProvidersConfig } from '../../src/index.ts';
import { type BedrockStandin, startBedrockStandin } from './bedrock-standin.ts';
import { REAL_ANTHROPIC_KEY } from './fixture.ts';
import { createServiceAccount, type GoogleTokenStandin, type ServiceAccount, serviceAccountKey, startGoogleTokenStandin } from './google-token.ts';
import { startVertexStandin, type VertexStandin } from './vertex-standin.ts';

// Recognisable secrets: every test can look for them in what a client or a record got.
export const AWS_ACCESS_KEY_ID = 'AKIACLOUDFIXTURE0001';
export const AWS_SECRET = 'aws-secret-cloudfixture-9d8c7b6a5f4e3d2c';
export const AWS_SESSION_TOKEN = 'aws-session-token-cloudfixture-1a2b3c4d5e';
export const BEDROCK_REGION = 'us-east-1';
export const VERTEX_PROJECT = 'cloud-fixture-project';
export const VERTEX_REGION = 'us-east5';

export interface CloudUpstreams {
  bedrock: BedrockStandin;
  vertex: VertexStandin;
  anthropic: Standin;
  google: GoogleTokenStandin;
  serviceAccount: ServiceAccount;
  /** The providers `bedrock`, `vertex` and `anthropic`, on the stand-ins, with their real credentials. */
  providers(): ProvidersConfig;
  /** Every secret the host holds for these upstreams (the private key, tokens minted so far included). */
  secrets(): string[];
  close(): Promise<void>;
}

export async function startCloudUpstreams(): Promise<CloudUpstreams> {
  const bedrock = await startBedrockStandin({ accessKeyId: AWS_ACCESS_KEY_ID, secretAccessKey: AWS_SECRET, region: BEDROCK_REGION });
  const key = serviceAccountKey();
  const google = await startGoogleTokenStandin({ publicKeyPem: key.publicKeyPem, clientEmail: key.clientEmail });
  const serviceAccount = createServiceAccount(google.url, key);
  const vertex = await startVertexStandin({
    validToken: (token) => google.issued.includes(token),
    project: VERTEX_PROJECT,
    region: VERTEX_REGION,
    thinking: true,
  });
  const anthropic = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY });
  return {
    bedrock,
    vertex,
    anthropic,
    google,
    serviceAccount,
    providers: () => ({
      bedrock: {
        kind: 'bedrock',
        region: BEDROCK_REGION,
        inferenceProfile: 'us',
        baseUrl: bedrock.url,
        awsCredentials: async () => ({ accessKeyId: AWS_ACCESS_KEY_ID, secretAccessKey: AWS_SECRET, sessionToken: AWS_SESSION_TOKEN }),
      },
      vertex: { kind: 'vertex', region: VERTEX_REGION, projectId: VERTEX_PROJECT, baseUrl: vertex.url, googleCredentialsFile: serviceAccount.file },
      anthropic: { baseUrl: anthropic.url, apiKey: REAL_ANTHROPIC_KEY },
    }),
    secrets: () => [
      AWS_SECRET,
      AWS_SESSION_TOKEN,
      REAL_ANTHROPIC_KEY,
      ...google.issued,
      // The PEM's base64 body, a line of it at a time, as any leak would carry it.
      ...key.privateKeyPem.split('\n').filter((line) => line.length > 40),
    ],
    async close() {
      await Promise.all([bedrock.close(), vertex.close(), anthropic.close(), google.close()]);
      serviceAccount.remove();
    },
  };
}

export interface CloudGateway {
  gateway: Gateway;
  calls: CallRecord[];
  close(): Promise<void>;
}

export async function startCloudGateway(options: Partial<GatewayOptions>): Promise<CloudGateway> {
  const stateDir = await mkdtemp(path.join(tmpdir(), 'gw-'));
  const calls: CallRecord[] = [];
  const gateway = await createGateway({ stateDir, logger: pino({ level: 'silent' }), onCall: (record) => calls.push(record), ...options });
  return {
    gateway,
    calls,
    async close() {
      await gateway.close({ drainMs: 1000 });
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request over a key's socket; the body as received, byte for byte. */
export function call(socketPath: string, method: string, target: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath, method, path: target, agent: false, headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Raw bytes written to the socket (fetch and http.request normalise paths) and all that came back. */
export function rawCall(socketPath: string, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.on('error', reject);
    socket.write(bytes);
  });
}

/** The status of a raw HTTP response. */
export const rawStatus = (response: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0);
