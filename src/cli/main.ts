#!/usr/bin/env node
// The `gateway` command line. Exit codes: 0 success, 1 failure (daemon unreachable, unknown key,
// demo check failed), 2 usage or configuration error. The program is built by `createProgram(io)`,
// so tests run commands in-process; the module runs it only when it is the process's main script.
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option, type OptionValues } from 'commander';
import { loadConfig, type GatewayConfig } from '../config/load.ts';
import { callControl, ControlError } from '../control/socket.ts';
import { serve } from '../control/daemon.ts';
import { runDemo } from './demo.ts';
import { parseDuration } from '../util/duration.ts';
import type { GatewaySnapshot, KeySnapshot } from '../gateway.ts';
import { printableJson, renderKey, renderKeys, type KeyRow } from './inspect-view.ts';
import { scopeFromFlags } from '../config/github.ts';
import { embeddedGateway } from '../runner/embedded.ts';
import { daemonMinter, runContainer } from '../runner/run.ts';
import { contribute } from '../runner/contribute.ts';
import { renderPod } from '../runner/kubernetes.ts';
import type { Runtime } from '../runner/render.ts';
import type { ContributeRequest, Mount } from '../runner/contribute.ts';
import type { ServerToolClass } from '../keys/limits.ts';
import type { Owner } from '../keys/store.ts';
import { CLAUDE_VIAS, type ClaudeVia } from '../keys/client-env.ts';
import { ValidationError } from '../util/validation.ts';

class UsageError extends Error {}

interface GlobalOptions {
  config?: string;
  stateDir?: string;
}

/** Where a command writes: the process's streams, or a test's. */
export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Set by commands that end with a status of their own (`run`: the container's; `demo`: 1 on a failed check). */
  exitCode?: number;
}

function positive(name: string, integer = false) {
  return (value: string): number => {
    const number = Number(value);
    if (!Number.isFinite(number) || number < 0 || (integer && !Number.isInteger(number))) {
      throw new UsageError(`${name} must be a non-negative ${integer ? 'integer' : 'number'}, got "${value}"`);
    }
    return number;
  };
}

function parseMount(value: string): Mount {
  const [source, target, mode, ...extra] = value.split(':');
  if (!source || !target || extra.length > 0 || (mode !== undefined && mode !== 'ro' && mode !== 'rw')) {
    throw new UsageError(`--mount must be SRC:DST or SRC:DST:ro, got "${value}"`);
  }
  return { source: path.resolve(source), target, readOnly: mode === 'ro' };
}

function duration(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new UsageError(`--ttl must be a duration such as 30m, 2h or 1d, got "${value}"`);
  return ms;
}

/** A list flag: repeatable, and each value may be a comma-separated list (`--model a --model b,c`). */
function list(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((item) => item.trim())
      .filter(Boolean),
  ];
}

/** The list flags of `keys mint` and `run`, one spelling for both (plus the old `keys mint` plurals, hidden). */
/** The key a launch mints: its group, label, budget and lifetime (`gateway run`, `gateway render k8s`). */
function addKeyFlags(command: Command, ttlHelp: string): Command {
  return command
    .option('-g, --group <group>', 'the group the key belongs to', 'default')
    .option('-l, --label <label>', 'a label for inspect and the audit trail')
    .option('--budget-usd <usd>', 'USD this key may spend', positive('--budget-usd'))
    .option('--ttl <duration>', ttlHelp, duration);
}

function addListFlags(command: Command): Command {
  return command
    .option('--model <globs>', 'models the key may use (repeatable or comma-separated), e.g. --model "claude-*"', list)
    .option(
      '--server-tool <classes>',
      'server tools the provider may run for the key (repeatable or comma-separated; default web_search; "" for none), e.g. --server-tool web_search,web_fetch',
      list,
    )
    .option('--github-read <globs>', 'GitHub repositories (owner/name globs, repeatable or comma-separated) the key may clone and fetch', list)
    .option('--github-push <globs>', 'GitHub repositories the key may push to (implies read)', list)
    .option('--github-api', 'the key may call the GitHub REST API (repository paths still checked against the globs)')
    .option(
      '--egress <entries>',
      'hosts the key may reach through its proxy: presets (npm, pypi, crates, go, debian, github-releases) or host[:port] (repeatable or comma-separated), e.g. --egress npm,docs.python.org:443',
      list,
    )
    .option('--egress-budget-bytes <n>', 'bytes (both ways) the key may move through its proxy', positive('--egress-budget-bytes', true))
    .option(
      '--service <names>',
      "configured services ([services.NAME]) the key may use at /svc/NAME/ (repeatable or comma-separated); MCP servers go in the key's mcp.json",
      list,
    )
    .addOption(new Option('--models <globs>').argParser(list).hideHelp())
    .addOption(new Option('--server-tools <classes>').argParser(list).hideHelp());
}

/** The list flags' values, the hidden plurals merged in (the gateway checks the class names). */
function lists(options: {
  model?: string[];
  models?: string[];
  serverTool?: string[];
  serverTools?: string[];
  egress?: string[];
  egressBudgetBytes?: number;
  service?: string[];
}): {
  models?: string[];
  serverTools?: ServerToolClass[];
  egress?: string[];
  egressBudgetBytes?: number;
  services?: string[];
} {
  const merge = (a?: string[], b?: string[]) => (a || b ? [...(a ?? []), ...(b ?? [])] : undefined);
  return {
    models: merge(options.model, options.models),
    serverTools: merge(options.serverTool, options.serverTools) as ServerToolClass[] | undefined,
    egress: options.egress,
    egressBudgetBytes: options.egressBudgetBytes,
    services: options.service,
  };
}

/** `--user uid[:gid]`: the container's user, who is given the key's directory and socket. */
function ownerOf(user: string | undefined): Owner | undefined {
  if (user === undefined) return undefined;
  if (!/^\d+(:\d+)?$/.test(user)) throw new UsageError(`--user must be a numeric uid[:gid], got "${user}"`);
  const [uid, gid] = user.split(':').map(Number) as [number, number?];
  return { uid, gid: gid ?? uid };
}

/** The key a launch asks for (`gateway run`, `gateway render k8s`): addKeyFlags', addListFlags' and the GitHub flags' values. */
function launchRequest(options: OptionValues, loaded: GatewayConfig): ContributeRequest {
  const github = scopeFromFlags(options);
  return {
    group: options.group,
    label: options.label,
    budgetUsd: options.budgetUsd,
    ttlMs: options.ttl,
    ...lists(options),
    owner: ownerOf(options.user),
    port: options.port,
    github,
    githubHost: github ? loaded.github?.host : undefined,
  };
}

/** The `gateway` program, writing to `io`; `parseAsync` it, or use `runCli`. */
export function createProgram(io: CliIo): Command {
  const program = new Command()
    .name('gateway')
    .description('LLM access for network-isolated agents: one Unix socket per ephemeral key; real keys stay on the host.')
    .addOption(new Option('-c, --config <path>', 'TOML config file').env('GATEWAY_CONFIG'))
    .addOption(new Option('-s, --state-dir <dir>', 'state directory (sockets, control socket, ledger, audit)').env('GATEWAY_STATE_DIR'))
    .configureOutput({ writeOut: (text) => io.stdout.write(text), writeErr: (text) => io.stderr.write(text) })
    .showHelpAfterError()
    .exitOverride();

  const globals = () => program.opts<GlobalOptions>();
  /** The config every command agrees on (flag or env, else defaults), loaded once per command. */
  const config = (): Promise<GatewayConfig> => loadConfig(globals().config, globals().stateDir);
  /** The state dir: flag or env, else the config file's, else the default. */
  const stateDirOf = async (): Promise<string> => (await config()).stateDir;
  const print = (text: string): void => void io.stdout.write(`${text}\n`);

  program
    .command('serve')
    .description('Run the gateway as a host daemon with a control socket in the state dir.')
    .addHelpText(
      'after',
      `
Signals: SIGTERM/SIGINT drain calls in flight, then stop (live keys are kept for the next start);
SIGHUP reloads the config and credentials without dropping live keys.

Examples:
  gateway serve
  gateway serve --config /etc/llm-gateway.toml
  gateway serve --metrics 127.0.0.1:9464 --ui 127.0.0.1:9470
  GATEWAY_STATE_DIR=/run/llm-gateway gateway serve`,
    )
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (over [telemetry] metrics_listen)')
    .option('--ui <host:port>', 'serve the live page at http://HOST:PORT/ (over [telemetry] ui_listen; a token is needed off loopback)')
    .action(async (options: { metrics?: string; ui?: string }) => {
      const { config: configFile, stateDir } = globals();
      await serve({ configFile, stateDir, metrics: options.metrics, ui: options.ui });
    });

  const keys = program.command('keys').description('Mint, list and revoke keys on the running daemon.');

  const mint = keys
    .command('mint')
    .description('Mint a key: prints its id, socket directory and the env a container needs.')
    .requiredOption('-g, --group <group>', 'the group the key belongs to (shares its budget)')
    .option('-l, --label <label>', 'a label for inspect and the audit trail')
    .option('--budget-usd <usd>', 'USD this key may spend', positive('--budget-usd'))
    .option('--ttl <duration>', 'revoke by itself after this long (e.g. 2h)', duration)
    .option('--rpm <n>', 'requests per minute', positive('--rpm', true))
    .option('--tpm <n>', 'tokens per minute', positive('--tpm', true))
    .option('--max-concurrent <n>', 'requests in flight at once', positive('--max-concurrent', true));
  addListFlags(mint)
    .option('--uid <uid>', "give the key's directory and socket to this user (the container's)", positive('--uid', true))
    .option('--gid <gid>', 'and this group (default: the uid)', positive('--gid', true))
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      '\nExamples:\n  gateway keys mint --group family --label chat-42 --budget-usd 2 --ttl 2h\n  gateway keys mint --group ci --model "claude-*" --model "gpt-5*" --json',
    )
    .action(async (options) => {
      const stateDir = await stateDirOf();
      const body = {
        group: options.group,
        label: options.label,
        budgetUsd: options.budgetUsd,
        ttlMs: options.ttl,
        rpm: options.rpm,
        tpm: options.tpm,
        maxConcurrent: options.maxConcurrent,
        ...lists(options),
        github: scopeFromFlags(options),
        owner: options.uid === undefined ? undefined : { uid: options.uid, gid: options.gid ?? options.uid },
      };
      const key = await callControl<KeySnapshot & { env: Record<string, string> }>(stateDir, 'POST', '/v1/keys', body);
      if (options.json) return print(JSON.stringify(key, null, 2));
      print(`key     ${key.id}\ngroup   ${key.group}\ndir     ${key.dir}   (bind-mount at /run/gateway)\nsocket  ${key.socketPath}\nenv:`);
      for (const [name, value] of Object.entries(key.env)) print(`  ${name}=${value}`);
    });

  keys
    .command('revoke <id>')
    .description('Revoke a key: closes its socket and connections and removes its directory.')
    .action(async (id: string) => {
      await callControl(await stateDirOf(), 'DELETE', `/v1/keys/${encodeURIComponent(id)}`);
      print(`revoked ${id}`);
    });

  keys
    .command('list')
    .description('List live keys (same as `gateway inspect`).')
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => inspect(undefined, { json: options.json }));

  program
    .command('inspect [key]')
    .description('Live keys with spend, limits and last call; with KEY, that key and its recent calls.')
    .option('--json', 'print JSON')
    .option('-w, --watch', 'refresh every second, like top (Ctrl-C to stop)')
    .addHelpText('after', '\nExamples:\n  gateway inspect\n  gateway inspect --watch\n  gateway inspect 3k9x0f2m7q1c8v4b --json')
    .action(inspect);

  async function inspect(key: string | undefined, options: { json?: boolean; watch?: boolean }): Promise<void> {
    const stateDir = await stateDirOf();
    const render = async (): Promise<string> => {
      if (key) {
        const snapshot = await callControl<KeySnapshot>(stateDir, 'GET', `/v1/keys/${encodeURIComponent(key)}`);
        return options.json ? printableJson(JSON.stringify(snapshot, null, 2)) : renderKey(snapshot);
      }
      const [rows, status] = await Promise.all([
        callControl<KeyRow[]>(stateDir, 'GET', '/v1/keys'),
        callControl<Omit<GatewaySnapshot, 'keys'>>(stateDir, 'GET', '/v1/status'),
      ]);
      return options.json ? printableJson(JSON.stringify({ keys: rows, ...status }, null, 2)) : renderKeys(rows, status.groups, status.store);
    };
    if (!options.watch) return print(await render());
    for (;;) {
      const screen = await render();
      io.stdout.write(`\x1b[H\x1b[2J${new Date().toISOString()}  gateway inspect --watch (Ctrl-C to stop)\n\n${screen}\n`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  const run = program
    .command('run')
    .description('Mint a key, run one container with it and no network, revoke the key when the container exits.')
    .argument('<image-or-command...>', 'IMAGE [CMD...] for podman/docker/container; CMD... for bwrap')
    .addOption(
      new Option('-r, --runtime <runtime>', "container runtime (container: Apple's, TCP mode only)")
        .choices(['podman', 'docker', 'bwrap', 'container'])
        .default('podman'),
    );
  addListFlags(addKeyFlags(run, 'revoke the key after this long even if the container still runs'))
    .option('-u, --user <uid[:gid]>', 'run the container as this user; the key socket is given to it')
    .option('-w, --workdir <dir>', 'host directory mounted read-write at /workspace')
    .option('--mount <src:dst[:ro]>', 'also mount a host path (repeatable)', (value: string, previous: Mount[] = []) => [...previous, parseMount(value)])
    .option('--port <port>', 'the shim port inside the container', positive('--port', true), 9460)
    .option('--no-shim', "don't wrap CMD with the shim (the image's entrypoint starts it)")
    .addOption(
      new Option('--claude-via <format>', "Claude Code's gateway format in the container (any provider serves any of them)")
        .choices([...CLAUDE_VIAS])
        .default('anthropic'),
    )
    .addOption(
      new Option('--transport <transport>', 'socket: mount the key directory, no network; tcp: an internal network of its own and a token (docs/deploy.md)')
        .choices(['socket', 'tcp'])
        .default('socket'),
    )
    .option('--network <name>', 'TCP mode on a network you manage (Docker Desktop, Apple container): the container joins it, no network or firewall is made')
    .option('--tcp-listen <ip>', "with --network: the address the key listens on (that network's host side)")
    .option('--reach-as <host>', 'with --network: the listener as the container reaches it (e.g. host.docker.internal)')
    .addHelpText(
      'after',
      `
Uses the running daemon (gateway serve) for the key when there is one, else an embedded gateway in
this process. The container gets the key's directory read-only at /run/gateway, --network=none, and
the env its clients need; CMD runs under the shim (node /run/gateway/shim.mjs -- CMD), so the image
needs Node. Exits with the container's status.

With --transport tcp (podman or docker, as root) the container instead joins an internal network of
its own with no route out, the key listens on its host side, a firewall table lets the container
reach that port and nothing else, and the clients' API key is the key's token. No shim, no mount.
With --network NAME --tcp-listen IP, the container joins a network you manage instead and nothing
guards it but the token: see docs/deploy.md for Docker Desktop and Apple's container.

Examples:
  gateway run --group family --budget-usd 2 --model "claude-*" -- localhost/agent claude -p "fix the failing test"
  gateway run --runtime bwrap --workdir . -- claude -p "summarize README.md"`,
    )
    .action(async (args: string[], options) => {
      const runtime = options.runtime as Runtime;
      const image = runtime === 'bwrap' ? undefined : args[0];
      const rest = runtime === 'bwrap' ? args : args.slice(1);
      if (rest.length === 0 && options.shim && options.transport !== 'tcp') throw new UsageError('give a command to run under the shim, or --no-shim');
      if ((options.network || options.tcpListen || options.reachAs) && !(options.transport === 'tcp' && options.network && options.tcpListen)) {
        throw new UsageError('--network, --tcp-listen and --reach-as go together, with --transport tcp (--network and --tcp-listen both given)');
      }
      const tcp = options.network
        ? { network: options.network as string, host: options.tcpListen as string, reachAs: options.reachAs as string | undefined }
        : undefined;
      const loaded = await config();
      const request = { ...launchRequest(options, loaded), claudeVia: options.claudeVia as ClaudeVia, tcp };
      const launch = {
        image,
        command: rest,
        shim: options.shim as boolean,
        user: options.user as string | undefined,
        workdir: options.workdir as string | undefined,
        mounts: options.mount as Mount[] | undefined,
      };
      const stateDir = loaded.stateDir;
      const daemonUp = await callControl(stateDir, 'GET', '/v1/status').then(
        () => true,
        () => false,
      );
      const embedded = daemonUp ? undefined : await embeddedGateway(loaded);
      try {
        io.exitCode = await runContainer({
          runtime,
          request,
          launch,
          minter: embedded ?? daemonMinter(stateDir),
          transport: options.transport as 'socket' | 'tcp',
          onLaunch: (key) => io.stderr.write(`gateway: key ${key.id} (${daemonUp ? 'daemon' : 'embedded gateway'}), ${runtime} starting\n`),
        });
      } finally {
        await embedded?.close();
      }
    });

  const k8s = program
    .command('render')
    .description('Print a launch for another system to run.')
    .command('k8s')
    .description('Mint a key on the running daemon and print an agent Pod that uses it, as JSON (kubectl apply -f - reads it).')
    .argument('<image>', 'the agent image')
    .argument('[command...]', 'CMD (the image entrypoint stays); wrapped with the shim unless --no-shim');
  addListFlags(addKeyFlags(k8s, 'revoke the key after this long (recommended: nothing else ends it)'))
    .option('-u, --user <uid[:gid]>', 'run the pod as this user; the key socket is given to it')
    .option('--port <port>', 'the shim port inside the container', positive('--port', true), 9460)
    .option('--no-shim', "don't wrap CMD with the shim (the image's entrypoint starts it)")
    .option('-n, --namespace <namespace>', "the pod's namespace")
    .addOption(new Option('--node <name>', 'the node this daemon runs on: the pod must run there').env('GATEWAY_NODE_NAME'))
    .option('--name <name>', 'the pod name (default llm-agent-KEYID)')
    .addHelpText(
      'after',
      `
Run it where the node's gateway daemon runs (in the DaemonSet pod: kubectl exec); an embedded
gateway would end with this command, so without a daemon it refuses. The key lives until its --ttl
or \`gateway keys revoke KEYID\`, not until the pod ends: give it a --ttl. The pod mounts the key's
directory from the node (hostPath) read-only, runs on --node (default $GATEWAY_NODE_NAME, which the
DaemonSet sets) and carries the label llm-gateway.key the NetworkPolicy selects. See docs/kubernetes.md.

Example:
  kubectl exec -n llm-gateway POD -- gateway render k8s --user 1000 --ttl 2h --budget-usd 2 \\
    REGISTRY/agent claude -p "fix the failing test" | kubectl apply -f -`,
    )
    .action(async (image: string, rest: string[], options) => {
      const loaded = await config();
      const request = launchRequest(options, loaded);
      const daemonUp = await callControl(loaded.stateDir, 'GET', '/v1/status').then(
        () => true,
        () => false,
      );
      if (!daemonUp) throw new UsageError(`no gateway daemon at ${loaded.stateDir}: start \`gateway serve\` (a key minted here would die with this command)`);
      const contribution = await contribute(daemonMinter(loaded.stateDir), request);
      try {
        const launch = { image, command: rest, shim: options.shim as boolean, user: options.user as string | undefined };
        print(JSON.stringify(renderPod(contribution, launch, { name: options.name, namespace: options.namespace, nodeName: options.node }), null, 2));
      } catch (error) {
        // No pod, no use for the key.
        await contribution.close();
        throw error instanceof TypeError ? new UsageError(error.message) : error;
      }
    });

  program
    .command('demo')
    .description('Run the whole path once in this process: mint a key, stream one Anthropic and one OpenAI call through its socket.')
    .option('--standin', 'use the local stand-in provider even if real keys are in the environment')
    .addHelpText(
      'after',
      '\nExamples:\n  gateway demo --standin               offline, against the built-in stand-in provider\n  ANTHROPIC_API_KEY=... gateway demo   against the real provider',
    )
    .action(async (options: { standin?: boolean }) => {
      const ok = await runDemo({ standin: Boolean(options.standin), out: io.stdout });
      if (!ok) io.exitCode = 1;
    });

  return program;
}

/** Runs one command line (`args` without node and the script) and returns its exit code. */
export async function runCli(args: string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  try {
    await createProgram(io).parseAsync(args, { from: 'user' });
    return io.exitCode ?? 0;
  } catch (error) {
    // Help and version exit 0; every other parse error is a usage error.
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
    if (!(error instanceof Error)) throw error;
    io.stderr.write(`gateway: ${error.message}\n`);
    // A bad flag, config or limit is a usage error; anything else (no daemon, unknown key) a failure.
    const usage = error instanceof UsageError || error instanceof ValidationError || (error instanceof ControlError && error.status === 400);
    return usage ? 2 : 1;
  }
}

// Run as the `gateway` binary (or `node src/cli/main.ts`), not when imported by a test.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await runCli(process.argv.slice(2));
}
