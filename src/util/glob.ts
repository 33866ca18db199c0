/** `*` any run of characters, `?` one character; everything else literal; anchored. */
export function globToRegExp(glob: string): RegExp {
  const escaped = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

/** Whether `pattern` is a glob (has `*` or `?`), not a name that matches only itself. */
export function isGlob(pattern: string): boolean {
  return pattern.includes('*') || pattern.includes('?');
}
