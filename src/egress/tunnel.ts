// CONNECT on a key's socket: a tunnel to a host the key's policy allows. The tunnel opens only after
// the policy, the limits and every resolved address were checked, to an address that was checked;
// then, for TLS (always on port 443), the ClientHello's server name must be the host the tunnel was
// opened for, so a tunnel allowed for one name cannot carry a connection to another name on the same
// address (a CDN, a shared host). Bytes are counted each way against the key's byte budget; the
// tunnel closes when idle, when the budget is spent, or when the key is revoked.
import type { IncomingMessage } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { KeyRecord } from '../keys/store.ts';
import { admitEgress, type Admitted, type EgressContext, EgressRefusal, reasonPhrase, refusalHeaders, ruleText } from './admission.ts';
import { ClientHelloReader } from './client-hello.ts';
import { DialError, dial } from './dial.ts';
import type { EgressReason, EgressRecord } from './record.ts';
import type { EgressTarget } from './rules.ts';

export function createTunnelHandler(context: EgressContext) {
  return (req: IncomingMessage, client: Socket, head: Buffer): void => {
    const started = Date.now();
    const key = context.keyOf(client);
    const limits = key && !key.revoked ? context.limitsOf(key.id) : undefined;
    if (!key || !limits) {
      refuse(client, new EgressRefusal(403, 'key_revoked', 'this key has been revoked or has expired'));
      return;
    }
    const tunnel = new Tunnel(context, key, client, started);
    tunnel.open(req.url ?? '', head, limits).catch((error: unknown) => tunnel.fail(error));
  };
}

/** Writes a refusal as the CONNECT's answer and closes the connection. */
function refuse(client: Socket, refusal: EgressRefusal): void {
  const body = `${refusal.message}\n`;
  const headers = { ...refusalHeaders(refusal), 'content-length': String(Buffer.byteLength(body)), connection: 'close' };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  client.end(`HTTP/1.1 ${refusal.status} ${reasonPhrase(refusal)}\r\n${lines.join('')}\r\n${body}`);
}

/** `host:port` as a CONNECT names it (`[v6]:port` for IPv6), or undefined. */
function parseAuthority(authority: string): EgressTarget | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]/@]+)):(\d{1,5})$/.exec(authority);
  if (!match) return undefined;
  const host = (match[1] ?? match[2]!).toLowerCase().replace(/\.$/, '');
  const port = Number(match[3]);
  if (port < 1 || port > 65535 || (match[1] !== undefined && isIP(host) !== 6)) return undefined;
  return { host, port };
}

/** How long a tunnel whose one side closed waits for the other to finish writing and close. */
const LINGER_MS = 30_000;

class Tunnel {
  private readonly context: EgressContext;
  private readonly key: KeyRecord;
  private readonly client: Socket;
  private readonly started: number;
  private server: Socket | undefined;
  private target: EgressTarget | undefined;
  private admitted: Admitted | undefined;
  private sni: string | undefined;
  private address: string | undefined;
  private status = 0;
  private reason: EgressReason | undefined;
  private bytesUp = 0;
  private bytesDown = 0;
  private closeAccount: (() => void) | undefined;
  private reported = false;
  private lingering: NodeJS.Timeout | undefined;
  /** The client hung up before the tunnel opened. */
  private readonly closeEarly = () => this.close();

  constructor(context: EgressContext, key: KeyRecord, client: Socket, started: number) {
    this.context = context;
    this.key = key;
    this.client = client;
    this.started = started;
  }

  async open(authority: string, head: Buffer, limits: NonNullable<ReturnType<EgressContext['limitsOf']>>): Promise<void> {
    this.target = parseAuthority(authority);
    if (!this.target) throw new EgressRefusal(400, 'bad_target', `egress refused: CONNECT needs host:port, got "${authority.slice(0, 100)}"`);
    const target = this.target;
    this.client.once('close', this.closeEarly);
    this.admitted = await admitEgress(this.context, this.key, limits, target);
    if (this.client.destroyed) return this.report('allowed');
    // Counted open from here, so the key's tunnel limit holds while it connects.
    this.closeAccount = this.admitted.account.opened('tunnel', () => this.cut('key_revoked'));
    let server: Socket;
    try {
      const { connectTimeoutMs, parent } = this.context.settings();
      server = await dial({ ...target, addresses: this.admitted.addresses }, connectTimeoutMs, parent);
    } catch (error) {
      if (!(error instanceof DialError)) throw error;
      throw new EgressRefusal(error.proxyStatus === 403 ? 403 : 502, 'connect_failed', `egress to ${target.host}:${target.port} failed: ${error.message}`);
    }
    this.server = server;
    this.address = server.remoteAddress;
    if (this.client.destroyed) return this.close();
    this.status = 200;
    this.client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    this.relay(head, limits.egressBudgetBytes);
  }

  /** Server to client at once; client to server once its first bytes pass the TLS check. */
  private relay(head: Buffer, budgetBytes: number | undefined): void {
    const { client, server } = this;
    const account = this.admitted!.account;
    const { idleTimeoutMs, helloTimeoutMs } = this.context.settings();
    this.bytesUp += head.length;
    if (!account.add(head.length, 0, budgetBytes)) {
      this.cut('byte_budget');
      return;
    }
    server!.on('data', (chunk: Buffer) => {
      this.bytesDown += chunk.length;
      if (!account.add(0, chunk.length, budgetBytes)) this.cut('byte_budget');
    });
    client.on('data', (chunk: Buffer) => {
      this.bytesUp += chunk.length;
      if (!account.add(chunk.length, 0, budgetBytes)) this.cut('byte_budget');
    });
    client.off('close', this.closeEarly);
    for (const socket of [client, server!]) {
      socket.setTimeout(idleTimeoutMs, () => this.close());
      socket.once('error', () => this.close());
      socket.once('close', () => this.sideClosed());
    }
    server!.pipe(client);
    const gate = new HelloGate(this.target!, helloTimeoutMs, (verdict) => {
      this.sni = verdict.sni;
      if (!verdict.ok) return this.cut(verdict.reason);
      if (verdict.buffered.length > 0) server!.write(verdict.buffered);
      client.pipe(server!);
    });
    gate.start(client, head);
  }

  /**
   * One side closed: the pipe has ended the other, which still writes what it was given (the tail
   * of a download); the tunnel ends when both are closed, or after LINGER_MS of waiting for the other.
   */
  private sideClosed(): void {
    const { client, server } = this;
    if (client.destroyed && server?.destroyed) {
      this.close();
      return;
    }
    // The closed side's pipe paused the open one: read it on (to nowhere) so its end is seen.
    (client.destroyed ? server : client)?.resume();
    this.lingering ??= setTimeout(() => this.close(), LINGER_MS).unref();
  }

  /** Ends the tunnel for a reason the audit records. */
  private cut(reason: EgressReason): void {
    this.reason ??= reason;
    this.close();
  }

  private close(): void {
    clearTimeout(this.lingering);
    this.client.destroy();
    this.server?.destroy();
    this.closeAccount?.();
    if (this.admitted) this.report(this.reason ? 'denied' : 'allowed');
  }

  /** A refusal (an EgressRefusal) is answered and recorded; anything else is a bug, answered 502. */
  fail(error: unknown): void {
    const refusal = error instanceof EgressRefusal ? error : new EgressRefusal(502, 'connect_failed', 'egress failed: internal gateway error');
    if (!(error instanceof EgressRefusal)) this.context.onInternalError(error);
    this.server?.destroy();
    this.closeAccount?.();
    this.status = refusal.status;
    this.reason = refusal.reason;
    if (!this.client.destroyed) refuse(this.client, refusal);
    this.report('denied');
  }

  private report(decision: EgressRecord['decision']): void {
    if (this.reported) return;
    this.reported = true;
    const target = this.target ?? { host: '', port: 0 };
    const record: EgressRecord = {
      time: this.started,
      keyId: this.key.id,
      group: this.key.group,
      label: this.key.label,
      kind: 'tunnel',
      host: target.host,
      port: target.port,
      sni: this.sni,
      address: this.address,
      decision,
      rule: this.admitted ? ruleText(this.admitted.rules) : undefined,
      reason: this.reason,
      status: this.status,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      durationMs: Date.now() - this.started,
    };
    this.context.onRecord(record);
  }
}

type HelloVerdict = { ok: true; buffered: Buffer; sni?: string } | { ok: false; reason: EgressReason; sni?: string };

/**
 * Holds the client's first bytes until they show whether the tunnel carries TLS, and to which name.
 * Port 443 must carry TLS; any port that does must name the tunnel's host. A host given as an IP
 * literal has no name to send (TLS clients send none for addresses), so it must send none.
 */
class HelloGate {
  private readonly target: EgressTarget;
  private readonly timeoutMs: number;
  private readonly done: (verdict: HelloVerdict) => void;
  private readonly reader = new ClientHelloReader();
  private decided = false;

  constructor(target: EgressTarget, timeoutMs: number, done: (verdict: HelloVerdict) => void) {
    this.target = target;
    this.timeoutMs = timeoutMs;
    this.done = done;
  }

  start(client: Socket, head: Buffer): void {
    const timer = setTimeout(() => this.decide({ ok: false, reason: 'not_tls' }), this.timeoutMs);
    timer.unref();
    const onData = (chunk: Buffer) => {
      const verdict = this.push(chunk);
      if (!verdict) return;
      client.off('data', onData);
      client.pause();
      clearTimeout(timer);
      this.decide(verdict);
    };
    client.on('data', onData);
    client.once('close', () => clearTimeout(timer));
    if (head.length > 0) onData(head);
  }

  private decide(verdict: HelloVerdict): void {
    if (this.decided) return;
    this.decided = true;
    this.done(verdict);
  }

  private push(chunk: Buffer): HelloVerdict | undefined {
    const { host, port } = this.target;
    const result = this.reader.push(chunk);
    switch (result.kind) {
      case 'more':
        return undefined;
      case 'not-tls':
        return port === 443 ? { ok: false, reason: 'not_tls' } : { ok: true, buffered: this.reader.buffered() };
      case 'invalid':
        return { ok: false, reason: 'not_tls' };
      case 'hello': {
        const sni = result.serverName;
        const expected = isIP(host) ? undefined : host;
        return sni === expected ? { ok: true, buffered: this.reader.buffered(), sni } : { ok: false, reason: 'sni_mismatch', sni };
      }
    }
  }
}
