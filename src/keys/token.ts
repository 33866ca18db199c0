// The bearer token of a key in TCP mode (docs/deploy.md): where no socket can be mounted, a TCP
// listener stands for the key, and the token proves a connection comes from the key's container.
// Only its SHA-256 digest is kept: comparing digests takes the same time whatever the candidate, and
// a lease on disk holds nothing that opens the listener.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Marks a gateway token in logs and greps; the 256 random bits after it are the secret. */
const TOKEN_PREFIX = 'gwtok-';

/** Every token's length: `gwtok-` and 32 bytes in base64url (not a secret: the format is public). */
const TOKEN_CHARS = TOKEN_PREFIX.length + 43;

export function newToken(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/**
 * Whether `candidate` is the token of `digest`, in constant time for a candidate of a token's
 * length. Any other length cannot match and is not hashed: a guess costs no more than its header's
 * parse, however long a header its sender makes.
 */
export function tokenMatches(digest: Buffer, candidate: string): boolean {
  return candidate.length === TOKEN_CHARS && timingSafeEqual(tokenDigest(candidate), digest);
}
