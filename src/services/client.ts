// What a container's clients need to reach the services its key was granted: a base URL per
// service on the shim, and for MCP servers a ready `mcp.json` (Claude Code's `--mcp-config`, in the
// key's directory). No credential: the gateway adds it on the host.
import { chown, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { MOUNT_TARGET } from '../keys/client-env.ts';
import type { Owner, ServiceGrant } from '../keys/store.ts';
import { SERVICE_PREFIX } from './relay.ts';

/** The MCP client configuration the gateway writes into a key's directory when it has MCP services. */
const MCP_CONFIG_NAME = 'mcp.json';

function serviceUrl(port: number, name: string): string {
  return `http://127.0.0.1:${port}${SERVICE_PREFIX}${name}`;
}

/**
 * `GATEWAY_SERVICE_<NAME>_URL` for each service (`-` becomes `_`), and with an MCP server among them
 * `GATEWAY_MCP_CONFIG`, the path of the key's `mcp.json` in the container (`claude --mcp-config "$GATEWAY_MCP_CONFIG"`).
 */
export function serviceEnv(port: number, grants: readonly ServiceGrant[]): Record<string, string> {
  const env = Object.fromEntries(grants.map((grant) => [`GATEWAY_SERVICE_${grant.name.toUpperCase().replace(/-/g, '_')}_URL`, serviceUrl(port, grant.name)]));
  return grants.some((grant) => grant.kind === 'mcp') ? { ...env, GATEWAY_MCP_CONFIG: `${MOUNT_TARGET}/${MCP_CONFIG_NAME}` } : env;
}

/** Claude Code's (and most MCP clients') `{ mcpServers }` for the key's MCP services, over streamable HTTP. */
function mcpConfig(port: number, grants: readonly ServiceGrant[]): { mcpServers: Record<string, { type: 'http'; url: string }> } {
  const servers = grants.filter((grant) => grant.kind === 'mcp').map((grant) => [grant.name, { type: 'http' as const, url: serviceUrl(port, grant.name) }]);
  return { mcpServers: Object.fromEntries(servers) };
}

/** Writes `mcp.json` into the key's directory (readable by the container's user); false when the key has no MCP service. */
export async function writeMcpConfig(dir: string, port: number, grants: readonly ServiceGrant[], owner: Owner | undefined): Promise<boolean> {
  if (!grants.some((grant) => grant.kind === 'mcp')) return false;
  const file = path.join(dir, MCP_CONFIG_NAME);
  await writeFile(file, `${JSON.stringify(mcpConfig(port, grants), null, 2)}\n`, { mode: 0o644 });
  if (owner) await chown(file, owner.uid, owner.gid);
  return true;
}
