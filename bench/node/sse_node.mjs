// SSE benchmark, implementation (4): eventsource-parser under Node.
//   node bench/node/sse_node.mjs FILE [RUNS]
// Reads FILE, then RUNS times (default 7): a fresh TextDecoder in stream
// mode (as a client must: a UTF-8 sequence can be split between chunks) and
// a fresh parser, fed 16 KiB chunks (zero-copy subarray views); onEvent
// counts the events and touches event, data and id.  Prints the best run.
// data_bytes is in UTF-16 code units (JS string length), not bytes.
import { readFileSync } from 'node:fs';
import { createParser } from 'eventsource-parser';

const CHUNK = 16 * 1024;
const path = process.argv[2];
const runs = Number(process.argv[3] ?? 7);
if (!path || !(runs >= 1)) {
  console.error('usage: node sse_node.mjs FILE [RUNS]');
  process.exit(2);
}
const buf = readFileSync(path);

function run() {
  let events = 0, dataChars = 0, touch = 0;
  const parser = createParser({
    onEvent(ev) {
      events++;
      dataChars += ev.data.length;
      touch += (ev.event ?? 'message').length + (ev.id ?? '').length;
    },
  });
  const decoder = new TextDecoder('utf-8');
  for (let off = 0; off < buf.length; off += CHUNK) {
    parser.feed(decoder.decode(buf.subarray(off, off + CHUNK), { stream: true }));
  }
  parser.feed(decoder.decode());
  return { events, dataChars, touch };
}

let best = Infinity, r;
for (let i = 0; i < runs; i++) {
  const t0 = process.hrtime.bigint();
  r = run();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (secs < best) best = secs;
}
console.log(`RESULT impl=node bytes=${buf.length} events=${r.events} data_bytes=${r.dataChars} ` +
  `secs=${best.toFixed(6)} touch=${r.touch}`);
