// A real MCP server for the services tests: the official SDK's McpServer behind its streamable HTTP
// transport (stateful, one transport and one McpServer per session), served by plain node:http on
// loopback. Like a hosted MCP server it wants `Authorization: Bearer <token>` on every request, so a
// test can tell whether the gateway injected the real credential; it records every request, counts
// refusals and tool calls, and has a tool that reflects the authorization header it received (the
// gateway must keep that out of what the client sees).
import { randomUUID } from 'node:crypto';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod';
import { readBodyUpTo } from './http.ts';

/** Every `lookup_ticket` answer carries it, so a test can find the tool's output wherever it lands. */
export const MCP_TICKET_MARKER = 'gateway-mcp-marker-7f3a';

/** Bodies larger than this are refused with 413 before parsing (the gateway's tests stay bounded). */
const MAX_BODY_BYTES = 1 << 20;

export interface McpSeenRequest {
  method: string;
  /** Path with the query, as received. */
  path: string;
  headers: IncomingHttpHeaders;
  /** A POST's JSON-RPC method (`initialize`, `tools/call`, ...; `a,b` for a batch), once its body parsed. */
  rpc?: string;
}

export interface McpTestServer {
  /** e.g. `http://127.0.0.1:PORT/mcp` */
  url: string;
  port: number;
  /** Every request, refused ones included, in arrival order. */
  requests: McpSeenRequest[];
  /** Requests refused with 401 (no or wrong bearer token). */
  unauthorized: number;
  toolCalls: { name: string; args: unknown }[];
  /** Ids of the sessions open now (initialized and neither deleted nor closed). */
  sessions(): string[];
  /** Sends `notifications/tools/list_changed` to every open session; it travels on the GET stream. */
  notifyToolsChanged(): Promise<void>;
  close(): Promise<void>;
}

export interface McpServerOptions {
  token: string;
  /** Default `/mcp`. */
  path?: string;
  /** Answer POSTs with one JSON body instead of an SSE stream (the SDK's `enableJsonResponse`). */
  jsonResponse?: boolean;
}

interface Session {
  transport: StreamableHTTPServerTransport;
  server: McpServer;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

const rpcError = (code: number, message: string) => ({ jsonrpc: '2.0', error: { code, message }, id: null });

export async function startMcpServer(options: McpServerOptions): Promise<McpTestServer> {
  const mcpPath = options.path ?? '/mcp';
  const expected = `Bearer ${options.token}`;
  const sessions = new Map<string, Session>();

  const newSession = (): Session => {
    const server = new McpServer({ name: 'gateway-test-mcp', version: '1.0.0' });
    server.registerTool(
      'lookup_ticket',
      { description: 'Looks up a ticket by id and returns its status.', inputSchema: { id: z.string() } },
      async ({ id }) => {
        state.toolCalls.push({ name: 'lookup_ticket', args: { id } });
        return { content: [{ type: 'text', text: `TICKET ${id}: ${MCP_TICKET_MARKER} status=open` }] };
      },
    );
    server.registerTool('echo_headers', { description: 'Returns the authorization header this server received (a reflection test).' }, async (extra) => {
      state.toolCalls.push({ name: 'echo_headers', args: {} });
      const value = extra.requestInfo?.headers.authorization;
      return { content: [{ type: 'text', text: `authorization=${Array.isArray(value) ? value.join(',') : (value ?? '')}` }] };
    });
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: options.jsonResponse ?? false,
      onsessioninitialized: (id) => {
        sessions.set(id, session);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId !== undefined) sessions.delete(transport.sessionId);
    };
    const session = { transport, server };
    return session;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const seen: McpSeenRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers };
    state.requests.push(seen);
    if (req.headers.authorization !== expected) {
      state.unauthorized++;
      req.resume();
      sendJson(res, 401, { error: 'unauthorized' }, { 'www-authenticate': 'Bearer realm="mcp"' });
      return;
    }
    if (new URL(req.url ?? '/', 'http://x').pathname !== mcpPath) {
      req.resume();
      sendJson(res, 404, { error: 'not found' });
      return;
    }

    let parsed: unknown;
    if (req.method === 'POST') {
      const body = await readBodyUpTo(req, MAX_BODY_BYTES);
      if (body === undefined) return sendJson(res, 413, rpcError(-32000, 'Request body too large'), { connection: 'close' });
      try {
        parsed = JSON.parse(body.toString('utf8'));
        seen.rpc = [parsed]
          .flat()
          .map((message) => String((message as { method?: unknown } | null)?.method ?? 'response'))
          .join(',');
      } catch {
        return sendJson(res, 400, rpcError(-32700, 'Parse error'));
      }
    }

    const sessionId = req.headers['mcp-session-id'];
    let session: Session | undefined;
    if (typeof sessionId === 'string') {
      session = sessions.get(sessionId);
      // The spec's answer to a session the server does not know (ended, or never existed).
      if (session === undefined) return sendJson(res, 404, rpcError(-32001, 'Session not found'));
    } else if (req.method === 'POST' && isInitializeRequest(parsed)) {
      session = newSession();
      await session.server.connect(session.transport);
    } else {
      return sendJson(res, 400, rpcError(-32000, 'Bad Request: No valid session ID provided'));
    }
    await session.transport.handleRequest(req, res, parsed);
  };

  const httpServer = http.createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, 500, rpcError(-32603, String(error)));
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const { port } = httpServer.address() as AddressInfo;

  const state: McpTestServer = {
    url: `http://127.0.0.1:${port}${mcpPath}`,
    port,
    requests: [],
    unauthorized: 0,
    toolCalls: [],
    sessions: () => [...sessions.keys()],
    async notifyToolsChanged() {
      await Promise.all([...sessions.values()].map((s) => s.server.server.sendToolListChanged()));
    },
    async close() {
      // Closing a transport ends its open SSE streams; then drop whatever sockets remain.
      await Promise.all([...sessions.values()].map((s) => s.server.close()));
      sessions.clear();
      httpServer.closeAllConnections();
      await new Promise((resolve) => httpServer.close(resolve));
    },
  };
  return state;
}
