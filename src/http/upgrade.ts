// Protocol upgrades (WebSocket) are refused: a relayed WebSocket would carry tokens outside the
// gateway's metering. Codex tries `GET /v1/responses` with `upgrade: websocket` first; the answer
// below makes it fall back to plain HTTP + SSE.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { errorBody } from '../wire/errors.ts';
import { dialectOf } from '../wire/dialect.ts';

export function refuseUpgrade(req: IncomingMessage, socket: Socket): void {
  const url = req.url ?? '/';
  const body = errorBody(
    dialectOf(url, req.headers),
    'upgrade_refused',
    'this gateway does not accept protocol upgrades; use plain HTTP (POST /v1/responses with stream: true)',
  );
  socket.end(
    'HTTP/1.1 426 Upgrade Required\r\n' +
      'content-type: application/json\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\n` +
      'x-gateway-error: upgrade_refused\r\n' +
      'connection: close\r\n\r\n' +
      body,
  );
}
