// Runs inside the end-to-end test's container after the client (see run.sh); prints one JSON line.
//
// The filesystem scan looks for the real keys WITHOUT being given them: the container must never
// hold a real key, not even to search for it. The needles file ($E2E_NEEDLES) carries, per needle, a short prefix,
// the length and the SHA-256 of the whole string; every occurrence of the prefix in a file is
// hashed over that length and compared.
import { createHash } from 'node:crypto';
import { lstatSync, openSync, readSync, closeSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

const needles = JSON.parse(readFileSync(process.env.E2E_NEEDLES, 'utf8'));
// Not scanned: kernel views, and the read-only host mounts (system libraries, the clients' packages).
const SKIP = new Set(['/proc', '/sys', '/lib', '/lib64', '/usr/lib', '/opt/clients/node_modules']);
const CHUNK = 1 << 20;

const scan = { files: 0, bytes: 0, unreadable: [], hits: [], dirs: [], paths: [] };
const seen = new Set();
function scanFile(path, size) {
  let fd;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    scan.unreadable.push(`${path}: ${e.code}`);
    return;
  }
  try {
    scan.files++;
    scan.paths.push(path);
    const overlap = Math.max(...needles.map((n) => n.length));
    const buf = Buffer.alloc(CHUNK + overlap);
    let carry = 0;
    let pos = 0;
    for (;;) {
      const n = readSync(fd, buf, carry, CHUNK, null);
      const len = carry + n;
      for (const needle of needles) {
        const prefix = Buffer.from(needle.prefix);
        for (let i = buf.indexOf(prefix, 0); i !== -1 && i < len; i = buf.indexOf(prefix, i + 1)) {
          if (i + needle.length > len) break;
          const digest = createHash('sha256')
            .update(buf.subarray(i, i + needle.length))
            .digest('hex');
          const offset = pos - carry + i;
          if (digest === needle.sha256 && !seen.has(`${path}:${needle.name}:${offset}`)) {
            seen.add(`${path}:${needle.name}:${offset}`);
            scan.hits.push({ file: path, needle: needle.name, offset });
          }
        }
      }
      scan.bytes += n;
      pos += n;
      // Stop at the end, or past the size it had (a file still growing is not followed forever).
      if (n === 0 || pos >= size + CHUNK) break;
      // Keep the tail so a needle split across two reads is still found (and not found twice).
      carry = Math.min(overlap - 1, len);
      buf.copy(buf, 0, len - carry, len);
      buf.fill(0, carry);
    }
  } finally {
    closeSync(fd);
  }
}
function walk(dir) {
  scan.dirs.push(dir);
  let entries;
  try {
    entries = readdirSync(dir);
  } catch (e) {
    scan.unreadable.push(`${dir}: ${e.code}`);
    return;
  }
  for (const name of entries) {
    const path = join(dir, name);
    if (SKIP.has(path)) continue;
    let st;
    try {
      st = lstatSync(path);
    } catch {
      continue;
    }
    if (st.isDirectory()) walk(path);
    else if (st.isFile()) scanFile(path, st.size);
  }
}
walk('/');
scan.dirs = scan.dirs.length;

// A direct connection to the stand-in's host port: inside --network=none, 127.0.0.1 is the
// container's own loopback, so this must fail (nothing else is ever tried: traffic stays on loopback).
const direct = await new Promise((resolve) => {
  const socket = net.connect(Number(process.env.E2E_DIRECT_PORT), '127.0.0.1');
  const timer = setTimeout(() => {
    socket.destroy();
    resolve('TIMEOUT');
  }, 5000);
  socket.on('connect', () => {
    clearTimeout(timer);
    socket.destroy();
    resolve('CONNECTED');
  });
  socket.on('error', (e) => {
    clearTimeout(timer);
    resolve(e.code);
  });
});

const out = (name) => readFileSync(`/tmp/e2e-out/${name}`, 'utf8');
console.log(
  JSON.stringify({
    rc: Number(out('rc')),
    seconds: Number(out('seconds')),
    stdout: out('stdout'),
    stderr: out('stderr'),
    env: out('env'),
    uid: process.getuid(),
    scan,
    direct,
  }),
);
