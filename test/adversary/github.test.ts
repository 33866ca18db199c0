// Class 8 of the containment issue: a key scoped to one repository tries to reach another through
// the GitHub relay by spelling paths differently (case, percent-encoding, `;`, dot segments, double
// slashes) or by using API paths that name no repository (search, GraphQL, ids, the token's own
// lists). Each must be refused before anything reaches the upstream; in-scope spellings still work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyApi, classifyGit, GitHubRefusal } from '../../src/github/scope.ts';
import { request } from '../support/http.ts';
import { REAL_GITHUB_TOKEN, startGitHubFixture } from '../support/git-upstream.ts';

const SCOPE = { read: ['acme/widgets'], push: ['acme/widgets'], api: true };

// [method, path on the socket, expected status]
const BYPASSES: [string, string, number][] = [
  // Case: GitHub's routes are case-insensitive, the old checks were not.
  ['GET', '/github-api/Repos/other/secret', 403],
  ['DELETE', '/github-api/REPOS/other/secret', 403],
  ['POST', '/github-api/GraphQL', 403],
  ['GET', '/github-api/Repositories/123', 403],
  ['GET', '/git/github.com/OTHER/Secret.git/info/refs?service=git-upload-pack', 403],
  // Percent-encoding, parameters, dot segments, empty segments, fragments.
  ['GET', '/github-api/%72epos/other/secret', 403],
  ['GET', '/github-api/repos/%6fther/secret', 403],
  ['GET', '/github-api/repos/other/secret/', 403],
  ['GET', '/github-api/repos;x=1/other/secret', 404],
  ['GET', '/github-api/repos/acme/widgets/..%2f..%2fother/secret', 404],
  ['GET', '/github-api/repos/acme/widgets/%2e%2e/%2e%2e/other/secret', 404],
  ['GET', '/github-api/repos/acme/widgets/%252e%252e/%252e%252e/other/secret', 404],
  ['GET', '/github-api/repos/acme/widgets/../../other/secret', 404],
  ['GET', '/github-api//repos/other/secret', 404],
  ['GET', '/github-api/repos/acme/widgets%00/x', 404],
  ['GET', '/github-api/repos/acme/widgets/%zz', 404],
  ['GET', '/github-api/repos/acme/widgets#/../../other/secret', 404],
  ['GET', '/github-api/repos/acme/widgets?x=#y', 404],
  ['POST', '/git/github.com/acme/widgets.git/%2e%2e/%2e%2e/other/secret.git/git-receive-pack', 404],
  ['POST', '/git/github.com/acme/widgets.git/..%2f..%2fother%2fsecret.git/git-receive-pack', 404],
  // Paths naming no repository, so not checkable against the scope: refused, not "allowed as far as
  // the token allows".
  ['GET', '/github-api/search/code?q=repo:other/secret+password', 403],
  ['GET', '/github-api/search/issues?q=repo:other/secret', 403],
  ['GET', '/github-api/repositories/1/contents/README', 403],
  ['GET', '/github-api/user/repos', 403],
  ['POST', '/github-api/user/repos', 403],
  ['GET', '/github-api/orgs/other/repos', 403],
  ['GET', '/github-api/gists', 403],
  ['GET', '/github-api/notifications', 403],
  ['GET', '/github-api/installation/repositories', 403],
  ['GET', '/github-api/networks/other/secret/events', 403],
  ['POST', '/github-api/api/graphql', 403],
  ['PATCH', '/github-api/user', 403],
  // Push is not administration: nothing that deletes, moves or outlives the key.
  ['DELETE', '/github-api/repos/acme/widgets', 403],
  ['PATCH', '/github-api/repos/ACME/Widgets', 403],
  ['POST', '/github-api/repos/acme/widgets/keys', 403],
  ['POST', '/github-api/repos/acme/widgets/hooks', 403],
  ['PUT', '/github-api/repos/acme/widgets/collaborators/mallory', 403],
  ['POST', '/github-api/repos/acme/widgets/transfer', 403],
  ['POST', '/github-api/repos/acme/widgets/forks', 403],
  ['PUT', '/github-api/repos/acme/widgets/actions/secrets/NPM_TOKEN', 403],
  ['DELETE', '/github-api/repos/acme/widgets/branches/main/protection', 403],
];

test('classification: every bypass spelling is refused by the pure checks', () => {
  for (const [method, target, status] of BYPASSES) {
    const queryAt = target.indexOf('?');
    const path = queryAt === -1 ? target : target.slice(0, queryAt);
    const query = queryAt === -1 ? '' : target.slice(queryAt + 1);
    let got: number | undefined;
    try {
      if (path.startsWith('/git/github.com')) classifyGit(method, path.slice('/git/github.com'.length), query);
      else classifyApi(method, path.slice('/github-api'.length), query);
    } catch (error) {
      if (!(error instanceof GitHubRefusal)) throw error;
      got = error.status;
    }
    // The ones whose repository parses are refused by authorize() instead: covered below end to end.
    if (got === undefined) assert.ok(decodeURIComponent(target).toLowerCase().includes('other/secret'), `${method} ${target} classified`);
    else assert.equal(got, status, `${method} ${target}`);
  }
});

test('over the socket: each bypass is refused and never reaches the upstream; in-scope spellings still do', async () => {
  const s = await startGitHubFixture();
  try {
    const key = await s.gateway.mint({ group: 'g', github: SCOPE });
    const send = (method: string, path: string) =>
      request({
        socketPath: key.socketPath,
        method,
        path,
        headers: { authorization: 'token from-the-container', ...(method === 'GET' || method === 'HEAD' ? {} : { 'content-type': 'application/json' }) },
        body: method === 'GET' || method === 'HEAD' ? undefined : '{}',
      });
    const before = s.upstream.seen.length;
    for (const [method, path, status] of BYPASSES) {
      const r = await send(method, path);
      assert.equal(r.status, status, `${method} ${path}: ${r.body}`);
      assert.match(r.body, /gateway: /, `${method} ${path}`);
      if (status === 403) assert.equal(r.headers['x-gateway-error'], 'github_not_allowed', `${method} ${path}`);
    }
    assert.deepEqual(
      s.upstream.seen.slice(before).map((q) => `${q.method} ${q.url}`),
      [],
      'a refused request reached the upstream',
    );

    // What clients need still goes through, with the host token, the path as the client sent it.
    for (const [method, path] of [
      ['GET', '/github-api/repos/acme/widgets/pulls?state=open'],
      ['GET', '/github-api/repos/ACME/Widgets'],
      ['GET', '/github-api/repos/acme/widgets/contents/docs/my%20file.md'],
      ['POST', '/github-api/repos/acme/widgets/pulls'],
      ['PATCH', '/github-api/repos/acme/widgets/pulls/1'],
      ['POST', '/github-api/repos/acme/widgets/issues/1/comments'],
      ['GET', '/github-api'],
      ['GET', '/github-api/user'],
      ['GET', '/github-api/rate_limit'],
      ['GET', '/github-api/meta'],
      ['GET', '/github-api/users/octocat'],
      ['GET', '/github-api/licenses/mit'],
      ['GET', '/github-api/gitignore/templates/C++'],
    ] as const) {
      const r = await send(method, path);
      assert.equal(r.status, 200, `${method} ${path}: ${r.body}`);
      const seen = s.upstream.seen.at(-1)!;
      assert.equal(seen.url, `/api/v3${path.slice('/github-api'.length) || '/'}`);
      assert.equal(seen.headers.authorization, `Bearer ${REAL_GITHUB_TOKEN}`);
    }
    const refs = await send('GET', '/git/github.com/acme/widgets.git/info/refs?service=git-upload-pack');
    assert.equal(refs.status, 200);
    // GitHub's names are case-insensitive: another spelling of an allowed repository is allowed too
    // (the stand-in's file system is not, hence its 404).
    const upper = await send('GET', '/git/github.com/ACME/Widgets.git/info/refs?service=git-upload-pack');
    assert.notEqual(upper.status, 403);
    assert.equal(s.upstream.seen.at(-1)!.url, '/ACME/Widgets.git/info/refs?service=git-upload-pack');

    // The audit trail says what was refused, bounded and without the token.
    const refused = s.calls.filter((c) => c.dialect === 'github' && c.outcome === 'rejected');
    assert.equal(refused.length, BYPASSES.length);
    assert.ok(refused.some((c) => c.repo === 'other/secret' && c.status === 403));
    assert.ok(!JSON.stringify(s.calls).includes(REAL_GITHUB_TOKEN));
  } finally {
    await s.close();
  }
});

test('messages say why: GraphQL, search, ids and unlisted paths each get their reason', async () => {
  const s = await startGitHubFixture();
  try {
    const key = await s.gateway.mint({ group: 'g', github: SCOPE });
    const message = async (method: string, path: string) =>
      (JSON.parse((await request({ socketPath: key.socketPath, method, path, body: method === 'GET' ? undefined : '{}' })).body) as { message: string })
        .message;
    assert.match(await message('POST', '/github-api/graphql'), /^gateway: GraphQL is not relayed/);
    assert.match(await message('GET', '/github-api/search/code?q=x'), /^gateway: search is not relayed/);
    assert.match(await message('GET', '/github-api/repositories/1'), /^gateway: repositories by id cannot be checked/);
    assert.match(await message('GET', '/github-api/gists'), /^gateway: GET \/gists is not relayed: only \/repos\/OWNER\/REPO/);
    assert.match(await message('DELETE', '/github-api/repos/acme/widgets'), /^gateway: this key may not administer acme\/widgets/);
    assert.match(await message('GET', `/github-api/${'x'.repeat(5000)}`), /^gateway: GET \/x{119}\.\.\. is not relayed/);
  } finally {
    await s.close();
  }
});
