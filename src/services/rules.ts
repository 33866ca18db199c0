// What a service lets through: its methods and its path globs, checked on the path as the upstream
// will read it. The client's path is forwarded as sent, so the check decodes it first and refuses
// what an upstream could resolve outside the globs: dot segments (`..`, `%2e%2e`), backslashes, and
// dot or slash encoded twice (`%252e`).
import { ValidationError } from '../util/validation.ts';

export const DEFAULT_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/** A path glob: `*` within one segment, `**` across segments, `?` one character; anchored. */
export interface PathRule {
  glob: string;
  pattern: RegExp;
}

export function compilePathRule(glob: string, field: string): PathRule {
  if (typeof glob !== 'string' || !glob.startsWith('/') || glob.length > 512) {
    throw new ValidationError(field, `must be path globs starting with "/" (e.g. "/api/**"), got ${JSON.stringify(glob)}`);
  }
  const source = glob.replace(/\*\*|[*?]|[.+^${}()|[\]\\]/g, (token) => {
    if (token === '**') return '.*';
    if (token === '*') return '[^/]*';
    if (token === '?') return '[^/]';
    return `\\${token}`;
  });
  return { glob, pattern: new RegExp(`^${source}$`) };
}

export function checkMethods(methods: unknown, field: string): string[] {
  if (!Array.isArray(methods) || methods.length === 0 || !methods.every((m) => typeof m === 'string' && /^[A-Za-z]{1,16}$/.test(m))) {
    throw new ValidationError(field, 'must be a non-empty array of HTTP methods, e.g. ["GET", "POST"]');
  }
  const upper = methods.map((m: string) => m.toUpperCase());
  const tunnel = upper.find((m) => m === 'CONNECT' || m === 'TRACE');
  if (tunnel) throw new ValidationError(field, `${tunnel} cannot be allowed through a service`);
  return upper;
}

/**
 * Why a path cannot be checked (answered 400), or its two readings for the globs: `path` with `%2F`
 * decoded to a separator, `literal` with it kept inside its segment (as an upstream that routes
 * before decoding reads it). A path is allowed only when both readings are.
 */
export type DecodedPath = { path: string; literal: string } | { problem: string };

/**
 * The path below the service's prefix, decoded (`%2F` read both ways, so a glob cannot be stepped
 * around with it). Empty means the service's base itself (`/`).
 */
export function decodeServicePath(rest: string): DecodedPath {
  if (rest === '') return { path: '/', literal: '/' };
  if (!rest.startsWith('/')) return { problem: 'the path must continue with "/" after the service name' };
  if (rest.includes('\\')) return { problem: 'a backslash in the path is refused' };
  let decoded: string;
  try {
    decoded = decodeURIComponent(rest);
  } catch {
    return { problem: 'the path has a malformed percent-escape' };
  }
  if (/[\u0000-\u001f\u007f\\]/.test(decoded)) return { problem: 'the path decodes to a control character or a backslash' };
  if (/%(2e|2f|5c)/i.test(decoded)) return { problem: 'the path encodes a dot or a slash twice' };
  // `..;x` too: servlet containers drop a segment's `;` parameters before resolving dots.
  if (decoded.split('/').some((segment) => /^\.\.?(;|$)/.test(segment))) return { problem: 'dot segments ("." and "..") are refused' };
  return { path: decoded, literal: decodeURIComponent(rest.replace(/%2f/gi, '%252F')) };
}

export function pathAllowed(rules: readonly PathRule[] | undefined, path: string): boolean {
  return rules === undefined || rules.some((rule) => rule.pattern.test(path));
}
