// Runs the `gateway` CLI in this process, as an operator would type it, capturing what it writes.
import { PassThrough } from 'node:stream';
import { runCli } from '../../src/cli/main.ts';

/** Runs one command line; its exit code and what it wrote. */
export async function gateway(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: string[] = [];
  const err: string[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk.toString()));
  stderr.on('data', (chunk: Buffer) => err.push(chunk.toString()));
  const code = await runCli(args, { stdout, stderr });
  return { code, stdout: out.join(''), stderr: err.join('') };
}
