// Claude Code's three gateway formats (docs/bedrock-vertex.md): Anthropic Messages, Amazon Bedrock
// InvokeModel and Vertex AI rawPredict. The cloud formats name the model and whether the answer
// streams in the path, not the body; this module reads those paths and knows each format's spelling.
import { GatewayError } from './errors.ts';

/** How a Claude client spells its call: the Messages API, Bedrock's InvokeModel, or Vertex's rawPredict. */
export type ClaudeFormat = 'anthropic' | 'bedrock' | 'vertex';

/** A call in a cloud format, as its path says it. */
export interface CloudCall {
  format: 'bedrock' | 'vertex';
  endpoint: 'messages' | 'count_tokens';
  /** The model id from the path (percent-decoded); Vertex's count-tokens names it in the body. */
  model?: string;
  /** Whether the path asks for a streamed answer. */
  stream: boolean;
}

/** The `anthropic_version` each cloud expects in the body. */
export const BEDROCK_VERSION = 'bedrock-2023-05-31';
export const VERTEX_VERSION = 'vertex-2023-10-16';

/** The content type of Bedrock's streamed answers. */
export const EVENT_STREAM_TYPE = 'application/vnd.amazon.eventstream';

// A model id as the clouds spell them: `us.anthropic.claude-opus-5-5`,
// `anthropic.claude-sonnet-4-5-20250929-v1:0`, an inference-profile ARN (with `/` and `:`),
// `claude-sonnet-4-5@20250929`. Starts with an alphanumeric, so no dot segment.
const CLOUD_MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,255}$/;
// `/model/{id}/{operation}`: the id is one path segment, `/` inside it encoded as %2F.
const BEDROCK_PATH = /^\/model\/([^/]{1,512})\/(invoke|invoke-with-response-stream|count-tokens)$/;
// `/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:{method}`. Project
// and region are the client's placeholders: the upstream's own come from the configuration.
const VERTEX_PATH =
  /^\/v1\/projects\/[A-Za-z0-9._-]{1,128}\/locations\/[A-Za-z0-9._-]{1,64}\/publishers\/anthropic\/models\/([A-Za-z0-9._@-]{1,256}):(rawPredict|streamRawPredict)$/;

/** Bedrock's control-plane listings Claude Code asks for (it tolerates a 404 for them). */
export function isBedrockListing(path: string): boolean {
  return path === '/inference-profiles' || path.startsWith('/inference-profiles/') || path === '/foundation-models';
}

/** The cloud call a path names, undefined for any other path, or a 400 for a malformed model id. */
export function cloudCall(path: string): CloudCall | undefined {
  const bedrock = BEDROCK_PATH.exec(path);
  if (bedrock) {
    const model = decodeModelId(bedrock[1]!);
    const operation = bedrock[2];
    return {
      format: 'bedrock',
      endpoint: operation === 'count-tokens' ? 'count_tokens' : 'messages',
      model,
      stream: operation === 'invoke-with-response-stream',
    };
  }
  const vertex = VERTEX_PATH.exec(path);
  if (vertex) {
    const [, model, method] = vertex;
    if (model === 'count-tokens') return { format: 'vertex', endpoint: 'count_tokens', stream: false };
    return { format: 'vertex', endpoint: 'messages', model: decodeModelId(model!), stream: method === 'streamRawPredict' };
  }
  return undefined;
}

function decodeModelId(segment: string): string {
  let id: string;
  try {
    id = decodeURIComponent(segment);
  } catch {
    throw new GatewayError('invalid_request', 'the model id in the path is not valid percent-encoding');
  }
  if (!CLOUD_MODEL_ID.test(id) || id.includes('..') || id.includes('//')) {
    throw new GatewayError('invalid_request', 'the model id in the path is not a model id (letters, digits, and . _ : @ / -)');
  }
  return id;
}

/** Bedrock's path for a call: `:` stays raw and `/` is encoded, as the AWS SDKs send it. */
export function bedrockPath(model: string, endpoint: CloudCall['endpoint'], stream: boolean): string {
  const operation = endpoint === 'count_tokens' ? 'count-tokens' : stream ? 'invoke-with-response-stream' : 'invoke';
  return `/model/${encodeURIComponent(model).replaceAll('%3A', ':')}/${operation}`;
}

/** Vertex's path for a call to `project` in `region`. */
export function vertexPath(project: string, region: string, model: string, endpoint: CloudCall['endpoint'], stream: boolean): string {
  const base = `/v1/projects/${encodeURIComponent(project)}/locations/${encodeURIComponent(region)}/publishers/anthropic/models`;
  if (endpoint === 'count_tokens') return `${base}/count-tokens:rawPredict`;
  return `${base}/${encodeURIComponent(model).replaceAll('%40', '@')}:${stream ? 'streamRawPredict' : 'rawPredict'}`;
}
