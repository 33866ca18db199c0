// What a container's clients need to reach the services its key was granted: a base URL per
// service on the shim, and for MCP servers a ready `mcp.json` (Claude Code's `--mcp-config`, in the
// key's directory). No credential: the gateway adds it on the host. In TCP mode there is no
// directory in the container: the config travels in the env as JSON (which `--mcp-config` takes
// as well as a path), with the key's token as a header.
import { chown, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { addressOf, type ContainerAddress, MOUNT_TARGET, shimAddress } from '../keys/client-env.ts';
import type { Owner, ServiceGrant } from '../keys/store.ts';
import { SERVICE_PREFIX } from './relay.ts';

/** The MCP client configuration the gateway writes into a key's directory when it has MCP services. */
const MCP_CONFIG_NAME = 'mcp.json';

interface McpServer {
  type: 'http';
  url: string;
  headers?: Record<string, string>;
}

function serviceUrl(address: ContainerAddress, name: string): string {
  return `${address.base}${SERVICE_PREFIX}${name}`;
}

/**
 * `GATEWAY_SERVICE_<NAME>_URL` for each service (`-` becomes `_`), and with an MCP server among them
 * `GATEWAY_MCP_CONFIG` (`claude --mcp-config "$GATEWAY_MCP_CONFIG"`): the path of the key's
 * `mcp.json` in the container, or in TCP mode the config itself.
 */
export function serviceEnv(at: number | ContainerAddress, grants: readonly ServiceGrant[]): Record<string, string> {
  const address = addressOf(at);
  const env = Object.fromEntries(
    grants.map((grant) => [`GATEWAY_SERVICE_${grant.name.toUpperCase().replace(/-/g, '_')}_URL`, serviceUrl(address, grant.name)]),
  );
  if (!grants.some((grant) => grant.kind === 'mcp')) return env;
  return { ...env, GATEWAY_MCP_CONFIG: address.token ? JSON.stringify(mcpConfig(address, grants)) : `${MOUNT_TARGET}/${MCP_CONFIG_NAME}` };
}

/** Claude Code's (and most MCP clients') `{ mcpServers }` for the key's MCP services, over streamable HTTP. */
function mcpConfig(address: ContainerAddress, grants: readonly ServiceGrant[]): { mcpServers: Record<string, McpServer> } {
  // x-api-key, not Authorization: a service that passes the client's own Authorization on keeps it.
  const headers = address.token ? { headers: { 'x-api-key': address.credential } } : {};
  const servers = grants
    .filter((grant) => grant.kind === 'mcp')
    .map((grant) => [grant.name, { type: 'http' as const, url: serviceUrl(address, grant.name), ...headers }]);
  return { mcpServers: Object.fromEntries(servers) };
}

/** Writes `mcp.json` into the key's directory (readable by the container's user); false when the key has no MCP service. */
export async function writeMcpConfig(dir: string, port: number, grants: readonly ServiceGrant[], owner: Owner | undefined): Promise<boolean> {
  if (!grants.some((grant) => grant.kind === 'mcp')) return false;
  const file = path.join(dir, MCP_CONFIG_NAME);
  await writeFile(file, `${JSON.stringify(mcpConfig(shimAddress(port), grants), null, 2)}\n`, { mode: 0o644 });
  if (owner) await chown(file, owner.uid, owner.gid);
  return true;
}
