// Credential discovery: env, files (plain or Claude Code's credentials JSON), commands, and refresh.
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { loadConfig, type GatewayConfig } from '../src/config/load.ts';
import { CredentialWatcher, resolveCredentials, type CredentialState } from '../src/config/credentials.ts';
import { eventually } from './support/fixture.ts';

const claudeCredentials = (token: string, expiresAt: number) =>
  JSON.stringify({ claudeAiOauth: { accessToken: token, refreshToken: 'refresh-not-used', expiresAt, scopes: ['user:inference'], subscriptionType: 'max' } });

test('sources are tried in order: env, then Claude Code credentials file', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gw-cred-'));
  try {
    const file = path.join(dir, '.credentials.json');
    const expiresAt = Date.now() + 3_600_000;
    await writeFile(file, claudeCredentials('oauth-token-1', expiresAt));
    const sources: GatewayConfig['providers'] = {
      anthropic: { apiKey: [{ env: 'GW_TEST_UNSET_VAR' }], apiKeys: [], oauthToken: [{ env: 'GW_TEST_UNSET_VAR' }, { file }] },
      openai: { apiKey: [{ command: 'printf "  from-command\\n"' }], apiKeys: [], oauthToken: [] },
    };
    const state = await resolveCredentials(sources);
    assert.equal(state.providers.anthropic?.oauthToken, 'oauth-token-1');
    assert.equal(state.providers.anthropic?.apiKey, undefined);
    assert.equal(state.expiresAt, expiresAt);
    assert.equal(state.providers.openai?.apiKey, 'from-command');
    assert.equal(state.summary.anthropic, `OAuth token from file ${file}`);
    assert.equal(state.summary.openai, 'api key from command `printf "  from-command\\n"`');
    assert.ok(!JSON.stringify(state.summary).includes('oauth-token-1'));

    process.env.GW_TEST_SET_VAR = 'from-env';
    const fromEnv = await resolveCredentials({ ...sources, anthropic: { apiKey: [{ env: 'GW_TEST_SET_VAR' }], apiKeys: [], oauthToken: [{ file }] } });
    assert.equal(fromEnv.providers.anthropic?.apiKey, 'from-env');
    assert.equal(fromEnv.providers.anthropic?.oauthToken, undefined, 'an API key wins over an OAuth token');
    delete process.env.GW_TEST_SET_VAR;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failing credential command is reported without its output', async () => {
  await assert.rejects(
    resolveCredentials({
      anthropic: { apiKey: [{ command: 'echo $((40+2))-output; exit 3' }], apiKeys: [], oauthToken: [] },
      openai: { apiKey: [], apiKeys: [], oauthToken: [] },
    }),
    (error: Error) => /exit 3/.test(error.message) && !error.message.includes('42-output'),
  );
});

test("the watcher follows the host's token refresh of the credentials file", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gw-cred-'));
  try {
    const file = path.join(dir, '.credentials.json');
    await writeFile(file, claudeCredentials('oauth-token-old', Date.now() + 3_600_000));
    const sources: GatewayConfig['providers'] = {
      anthropic: { apiKey: [], apiKeys: [], oauthToken: [{ file }] },
      openai: { apiKey: [], apiKeys: [], oauthToken: [] },
    };
    const seen: CredentialState[] = [];
    const watcher = new CredentialWatcher(sources, await resolveCredentials(sources), (state) => seen.push(state), pino({ level: 'silent' }));
    try {
      // Claude Code writes a new file and renames it over the old one.
      await writeFile(`${file}.tmp`, claudeCredentials('oauth-token-new', Date.now() + 7_200_000));
      await rename(`${file}.tmp`, file);
      await eventually(() => seen.length === 1, 3000);
      assert.equal(seen[0]!.providers.anthropic?.oauthToken, 'oauth-token-new');
    } finally {
      watcher.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an OAuth token is re-read 5 minutes before it expires, then every minute until it changes (injected clock)', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gw-cred-'));
  const T0 = 1_700_000_000_000;
  const MINUTE = 60_000;
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  try {
    const file = path.join(dir, '.credentials.json');
    await writeFile(file, claudeCredentials('oauth-token-1', T0 + 60 * MINUTE));
    const sources: GatewayConfig['providers'] = {
      anthropic: { apiKey: [], apiKeys: [], oauthToken: [{ file }] },
      openai: { apiKey: [], apiKeys: [], oauthToken: [] },
    };
    const initial = await resolveCredentials(sources);
    // The host refreshed its token while nothing watched (the watcher starts below): only the
    // expiry timer can notice.
    await writeFile(file, claudeCredentials('oauth-token-2', T0 + 120 * MINUTE));
    const seen: CredentialState[] = [];
    const watcher = new CredentialWatcher(sources, initial, (state) => seen.push(state), pino({ level: 'silent' }));
    // Count the re-reads the timer starts, and keep each one to await it.
    const reads: Promise<void>[] = [];
    const reload = watcher.reload.bind(watcher);
    watcher.reload = () => {
      const read = reload();
      reads.push(read);
      return read;
    };
    try {
      t.mock.timers.tick(55 * MINUTE - 1);
      assert.equal(reads.length, 0, 'not re-read before 5 minutes ahead of expiry');
      t.mock.timers.tick(1);
      assert.equal(reads.length, 1, 're-read exactly 5 minutes ahead of expiry');
      await reads[0];
      assert.deepEqual(
        seen.map((state) => [state.providers.anthropic?.oauthToken, state.expiresAt]),
        [['oauth-token-2', T0 + 120 * MINUTE]],
      );

      // The new token is re-read 5 minutes ahead of its own expiry (T0 + 115 min).
      t.mock.timers.tick(60 * MINUTE - 1);
      assert.equal(reads.length, 1);
      t.mock.timers.tick(1);
      assert.equal(reads.length, 2);
      await reads[1];
      assert.equal(seen.length, 1, 'an unchanged token is not reported again');
      // Unchanged and this close to expiry: once a minute until the host refreshes it.
      t.mock.timers.tick(MINUTE - 1);
      assert.equal(reads.length, 2);
      t.mock.timers.tick(1);
      assert.equal(reads.length, 3);
      await reads[2];
    } finally {
      watcher.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a credential file under $CREDENTIALS_DIRECTORY is read from where systemd put it (LoadCredential=)', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gw-cred-'));
  const saved = process.env.CREDENTIALS_DIRECTORY;
  try {
    await writeFile(path.join(dir, 'secrets_anthropic'), 'sk-from-systemd\n');
    const configFile = path.join(dir, 'gateway.toml');
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the config's spelling, expanded by the gateway
    await writeFile(configFile, '[providers.anthropic]\napi_key_file = "${CREDENTIALS_DIRECTORY}/secrets_anthropic"\n');
    process.env.CREDENTIALS_DIRECTORY = dir;
    const config = await loadConfig(configFile);
    const state = await resolveCredentials({ anthropic: config.providers.anthropic! });
    assert.equal(state.providers.anthropic?.apiKey, 'sk-from-systemd');
    assert.equal(state.summary.anthropic, `api key from file ${path.join(dir, 'secrets_anthropic')}`);
    // Outside such a unit the name means nothing: a clear error, not a file under the working directory.
    delete process.env.CREDENTIALS_DIRECTORY;
    await assert.rejects(loadConfig(configFile), /\$\{CREDENTIALS_DIRECTORY\}\/secrets_anthropic: CREDENTIALS_DIRECTORY is not set/);
  } finally {
    if (saved === undefined) delete process.env.CREDENTIALS_DIRECTORY;
    else process.env.CREDENTIALS_DIRECTORY = saved;
    await rm(dir, { recursive: true, force: true });
  }
});
