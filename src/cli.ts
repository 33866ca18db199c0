#!/usr/bin/env node
// The `gateway` command line.
import { Command } from 'commander';
import { runDemo } from './demo.ts';

const program = new Command()
  .name('gateway')
  .description('LLM access for network-isolated agents: one Unix socket per ephemeral key, real keys stay on the host.')
  .showHelpAfterError();

program
  .command('demo')
  .description('Run the whole path once in this process: mint a key, stream one Anthropic and one OpenAI call through its socket.')
  .option('--standin', 'use the local stand-in provider even if real keys are in the environment')
  .addHelpText('after', '\nExamples:\n  gateway demo --standin     offline, against the built-in stand-in provider\n  ANTHROPIC_API_KEY=... gateway demo   against the real provider')
  .action(async (options: { standin?: boolean }) => {
    const ok = await runDemo({ standin: Boolean(options.standin), out: process.stdout });
    process.exitCode = ok ? 0 : 1;
  });

await program.parseAsync();
