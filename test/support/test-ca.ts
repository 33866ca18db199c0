// A throwaway certificate authority for tests of HTTPS through the egress proxy: a CA the clients are
// told to trust (NODE_EXTRA_CA_CERTS, npm's cafile, pip's --cert) and server certificates it signs for
// made-up names (registry.test), issued with the openssl command line.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface TestCa {
  /** The CA certificate, PEM. */
  certPem: string;
  /** Its file, for clients that take a path. */
  certFile: string;
  /** A key and certificate for these DNS names (and 127.0.0.1), signed by the CA. */
  issue(names: string[]): { key: string; cert: string };
  close(): void;
}

export function createTestCa(): TestCa {
  const dir = mkdtempSync(path.join(tmpdir(), 'gw-ca-'));
  const file = (name: string) => path.join(dir, name);
  const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=llm-socket-gateway test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout',
    file('ca.key'),
    '-out',
    file('ca.pem'),
  ]);
  let serial = 0;
  return {
    certPem: readFileSync(file('ca.pem'), 'utf8'),
    certFile: file('ca.pem'),
    issue(names) {
      serial++;
      const base = file(`leaf${serial}`);
      const san = [...names.map((name) => `DNS:${name}`), 'IP:127.0.0.1'].join(',');
      writeFileSync(`${base}.ext`, `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
      openssl([
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-subj',
        `/CN=${names[0]}`,
        '-keyout',
        `${base}.key`,
        '-out',
        `${base}.csr`,
      ]);
      openssl([
        'x509',
        '-req',
        '-in',
        `${base}.csr`,
        '-CA',
        file('ca.pem'),
        '-CAkey',
        file('ca.key'),
        '-set_serial',
        String(serial),
        '-days',
        '2',
        '-extfile',
        `${base}.ext`,
        '-out',
        `${base}.pem`,
      ]);
      return { key: readFileSync(`${base}.key`, 'utf8'), cert: readFileSync(`${base}.pem`, 'utf8') };
    },
    close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
