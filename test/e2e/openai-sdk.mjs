// Runs inside the end-to-end test's container: the openai SDK (configured from the environment only:
// OPENAI_BASE_URL on the shim, a placeholder OPENAI_API_KEY) through chat completions and responses,
// streaming and not. Prints one JSON line per call.
import OpenAI from 'openai';

const client = new OpenAI({ maxRetries: 0, timeout: 30_000 });
const model = 'gpt-5.1';
const input = 'Say hello through the gateway.';

const chat = await client.chat.completions.create({ model, messages: [{ role: 'user', content: input }] });
console.log(JSON.stringify({ call: 'chat', text: chat.choices[0].message.content, usage: chat.usage }));

const chatStream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: input }], stream: true });
let chatText = '';
let chatChunks = 0;
for await (const chunk of chatStream) {
  chatChunks++;
  chatText += chunk.choices[0]?.delta?.content ?? '';
}
console.log(JSON.stringify({ call: 'chat-stream', text: chatText, chunks: chatChunks }));

const response = await client.responses.create({ model, input });
console.log(JSON.stringify({ call: 'responses', text: response.output_text, usage: response.usage }));

const responseStream = await client.responses.create({ model, input, stream: true });
let responseText = '';
const types = new Set();
for await (const event of responseStream) {
  types.add(event.type);
  if (event.type === 'response.output_text.delta') responseText += event.delta;
}
console.log(JSON.stringify({ call: 'responses-stream', text: responseText, events: [...types] }));
