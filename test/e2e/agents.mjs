// Runs inside the end-to-end test's container: a simple @openai/agents run, configured from the
// environment only (OPENAI_BASE_URL on the shim, a placeholder OPENAI_API_KEY,
// OPENAI_AGENTS_DISABLE_TRACING=1). Prints one JSON line.
import { Agent, run } from '@openai/agents';

const agent = new Agent({ name: 'e2e', instructions: 'Answer briefly.', model: 'gpt-5.1' });
const result = await run(agent, 'Say hello through the gateway.');
console.log(JSON.stringify({ call: 'agents-run', text: result.finalOutput }));

const streamed = await run(agent, 'Say hello again, streaming.', { stream: true });
let text = '';
for await (const chunk of streamed.toTextStream()) text += chunk;
await streamed.completed;
console.log(JSON.stringify({ call: 'agents-run-stream', text, finalOutput: streamed.finalOutput }));
