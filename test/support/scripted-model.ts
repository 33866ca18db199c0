// The stand-in model's scripted answers for the end-to-end tests: Anthropic Messages responses (JSON
// or SSE, text and tool_use blocks) and what a conversation's tool results say.
import type { ServerResponse } from 'node:http';

export type Block = Record<string, unknown>;

export function messagesText(messages: unknown): string {
  return JSON.stringify(messages ?? []);
}

/** The text of the first tool_result block in the conversation (answering `toolUseId`, when given), or undefined. */
export function toolResultText(messages: unknown, toolUseId?: string): string | undefined {
  for (const message of (messages as { content?: unknown }[]) ?? []) {
    if (!Array.isArray(message.content)) continue;
    for (const block of message.content as Block[]) {
      if (block.type !== 'tool_result' || (toolUseId !== undefined && block.tool_use_id !== toolUseId)) continue;
      const content = block.content;
      if (typeof content === 'string') return content;
      if (Array.isArray(content)) return (content as Block[]).map((c) => (typeof c.text === 'string' ? c.text : '')).join('');
      return '';
    }
  }
  return undefined;
}

/** Answers /v1/messages with `content`, as SSE when the request streams, else as JSON. */
export function answerMessages(res: ServerResponse, body: Record<string, unknown>, content: Block[], stopReason: string): void {
  const id = `msg_e2e_${Date.now().toString(36)}`;
  const usage = { input_tokens: 321, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 17 };
  const message = { id, type: 'message', role: 'assistant', model: body.model, content, stop_reason: stopReason, stop_sequence: null, usage };
  if (body.stream !== true) {
    const json = JSON.stringify(message);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json), 'request-id': `req_${id}` });
    res.end(json);
    return;
  }
  const events: [string, unknown][] = [
    ['message_start', { type: 'message_start', message: { ...message, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } } }],
  ];
  content.forEach((block, index) => {
    if (block.type === 'tool_use') {
      events.push(['content_block_start', { type: 'content_block_start', index, content_block: { ...block, input: {} } }]);
      const json = JSON.stringify(block.input);
      const half = Math.floor(json.length / 2);
      for (const partial of [json.slice(0, half), json.slice(half)]) {
        events.push(['content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: partial } }]);
      }
    } else {
      events.push(['content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '' } }]);
      events.push(['content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text: block.text } }]);
    }
    events.push(['content_block_stop', { type: 'content_block_stop', index }]);
  });
  events.push([
    'message_delta',
    { type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: usage.output_tokens } },
  ]);
  events.push(['message_stop', { type: 'message_stop' }]);
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'request-id': `req_${id}` });
  for (const [name, data] of events) res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
  res.end();
}
