// The shipped egress presets: the hosts the common package managers fetch from, so an operator can
// grant `--egress npm,pypi` instead of learning each registry's CDN. Each entry is a rule as a key
// could write it (egress/rules.ts). HTTPS only unless the tool fetches plain HTTP by default (apt).
// The config's `[egress.presets]` adds to these or replaces one by name.
import type { EgressEntry } from './rules.ts';

export const SHIPPED_PRESETS: Readonly<Record<string, readonly EgressEntry[]>> = Object.freeze({
  // npm, yarn and pnpm: packuments and tarballs both come from the registry host.
  npm: ['registry.npmjs.org:443', 'registry.yarnpkg.com:443'],
  // pip: the index on pypi.org, the files on a CDN host of their own.
  pypi: ['pypi.org:443', 'files.pythonhosted.org:443'],
  // cargo: the sparse index, the API (downloads redirect) and the crate files.
  crates: ['index.crates.io:443', 'crates.io:443', 'static.crates.io:443'],
  // go: the module proxy and the checksum database.
  go: ['proxy.golang.org:443', 'sum.golang.org:443', 'storage.googleapis.com:443'],
  // apt: plain HTTP by default (the archives are signed), where only GETs and HEADs of the archive
  // paths pass; HTTPS sources tunnel to the same hosts.
  debian: [
    { host: 'deb.debian.org', ports: [80], methods: ['GET', 'HEAD'], paths: ['/debian/', '/debian-security/'] },
    { host: 'security.debian.org', ports: [80], methods: ['GET', 'HEAD'], paths: ['/debian-security/'] },
    'deb.debian.org:443',
    'security.debian.org:443',
  ],
  // Release assets: github.com answers the download URL with a redirect to the asset CDN.
  'github-releases': ['github.com:443', 'objects.githubusercontent.com:443', 'release-assets.githubusercontent.com:443', 'codeload.github.com:443'],
});
