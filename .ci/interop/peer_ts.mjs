// The TypeScript SDK's client as a comparison peer: lists tools and makes calls, and writes
// every JSON-RPC message it received, as the transport handed it over (parsed, before the SDK
// validates or reshapes anything), to OUT as JSON.
//
// usage: node peer_ts.mjs SDK GENERATION OUT CALLS_JSON (--url URL | --stdio COMMAND [ARG...])
//   SDK:        v1 (@modelcontextprotocol/sdk, session-based only) or
//               v2 (@modelcontextprotocol/client, which also speaks 2026-07-28)
//   GENERATION: session or 2026-07-28 (v2 only; pinned, so no fallback hides a difference)
//   CALLS_JSON: [[TOOL, ARGS], ...], made in order after tools/list
// The npm packages are found under $PEERS_NPM_ROOT. $CUSTODY_TOKEN, when set, is sent as a
// bearer token on HTTP. A stdio server gets this process's environment.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [sdk, generation, out, callsJson, how, ...target] = process.argv.slice(2);
if (!['v1', 'v2'].includes(sdk) || !['session', '2026-07-28'].includes(generation) || !out || !['--url', '--stdio'].includes(how)) {
  console.error('usage: node peer_ts.mjs v1|v2 session|2026-07-28 OUT CALLS_JSON (--url URL | --stdio COMMAND [ARG...])');
  process.exit(2);
}
if (sdk === 'v1' && generation !== 'session') {
  console.error('the v1 SDK (@modelcontextprotocol/sdk) has no 2026-07-28 client');
  process.exit(2);
}
const require = createRequire(`${process.env.PEERS_NPM_ROOT}/`);
const load = async (spec) => import(pathToFileURL(require.resolve(spec)).href);

let Client, StreamableHTTPClientTransport, StdioClientTransport;
if (sdk === 'v1') {
  ({ Client } = await load('@modelcontextprotocol/sdk/client/index.js'));
  ({ StreamableHTTPClientTransport } = await load('@modelcontextprotocol/sdk/client/streamableHttp.js'));
  ({ StdioClientTransport } = await load('@modelcontextprotocol/sdk/client/stdio.js'));
} else {
  ({ Client, StreamableHTTPClientTransport } = await load('@modelcontextprotocol/client'));
  ({ StdioClientTransport } = await load('@modelcontextprotocol/client/stdio'));
}

const record = { client: `typescript-sdk-${sdk}`, generation, sent: {}, received: [], error: null };

// The same message twice in a row is one message seen at two layers (see recordingFetch).
const received = (message) => {
  const last = record.received[record.received.length - 1];
  if (last && JSON.stringify(last) === JSON.stringify(message)) return;
  record.received.push(structuredClone(message));
};

let transport;
if (how === '--url') {
  const headers = process.env.CUSTODY_TOKEN ? { Authorization: `Bearer ${process.env.CUSTODY_TOKEN}` } : {};
  // A JSON-RPC answer under a non-2xx status (a 2026-07-28 server answers method-not-found
  // with 404) is thrown by the SDK as an HTTP error instead of handed over as a message: record
  // it as received, as a stdio server's line would be.
  const recordingFetch = async (url, init) => {
    const response = await fetch(url, init);
    if (!response.ok && (response.headers.get('content-type') || '').startsWith('application/json')) {
      try { received(await response.clone().json()); } catch { /* not JSON-RPC: not a message */ }
    }
    return response;
  };
  transport = new StreamableHTTPClientTransport(new URL(target[0]), { requestInit: { headers }, fetch: recordingFetch });
} else {
  // A subclass, because the v2 SDK probes `server/discover` on a separate sibling process
  // for its own StdioClientTransport (not recorded) and in place for a subclass.
  class RecordedStdio extends StdioClientTransport {}
  transport = new RecordedStdio({
    command: target[0],
    args: target.slice(1),
    env: Object.fromEntries(Object.entries(process.env).filter(([, v]) => v !== undefined)),
    stderr: 'ignore',
  });
}

// Record at the transport: what the SDK sends (method by id) and every message it receives.
let handler;
Object.defineProperty(transport, 'onmessage', {
  configurable: true,
  set(fn) { handler = fn; },
  get() {
    return handler && ((message, ...rest) => {
      received(message);
      return handler(message, ...rest);
    });
  },
});
const send = transport.send.bind(transport);
transport.send = (message, ...rest) => {
  if (message.method && message.id !== undefined) record.sent[String(message.id)] = message.method;
  return send(message, ...rest);
};

const client = new Client(
  { name: 'custody-interop-peer', version: '1.0.0' },
  sdk === 'v2' && generation === '2026-07-28'
    ? { versionNegotiation: { mode: { pin: '2026-07-28' }, probe: { timeoutMs: 20000 } } }
    : {},
);
const timeout = { timeout: 20000 };
try {
  await client.connect(transport, timeout);
  await client.listTools(undefined, timeout);
  for (const [name, args] of JSON.parse(callsJson)) {
    if (sdk === 'v1') await client.callTool({ name, arguments: args }, undefined, timeout);
    else await client.callTool({ name, arguments: args }, timeout);
  }
} catch (e) {
  record.error = String(e && e.message ? e.message : e);
}
try { await client.close(); } catch { /* closing is not compared */ }
writeFileSync(out, JSON.stringify(record, null, 1));
process.exit(0);
