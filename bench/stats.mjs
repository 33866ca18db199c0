// Latency summaries shared by the load generator's HTTP and egress loops.

/**
 * Quantiles of the first `n` values (sorted in place: pass a copy or a scratch array).
 * @param {Float64Array | number[]} values
 * @param {number} [n]
 */
export function quantiles(values, n = values.length) {
  if (n === 0) return null;
  const a = values.slice(0, n).sort();
  const q = (/** @type {number} */ p) => a[Math.min(n - 1, Math.floor(p * n))];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += a[i];
  return { n, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: a[n - 1], mean: sum / n };
}
