#!/usr/bin/env node
// PouchDB side of the sync benchmark (crvs-sync-bench runs it; see README "Sync benchmark").
//
// Usage: node replicate.js --docs FILE.ndjson --server http://127.0.0.1:PORT --db NAME --dir DIR
//
// 1. Loads every document of FILE (one JSON object a line) into a local on-disk PouchDB (LevelDB
//    in DIR): not timed.
// 2. Times `local.replicate.to(remote)` into a new database NAME on pouchdb-server: the backlog
//    drain, with PouchDB's default replication settings.
// 3. Replicates again with nothing new (the no-op sync of an up-to-date replica) through a
//    counting TCP relay on 127.0.0.1, on a warmed-up remote handle (one no-op first, so one-time
//    setup requests are not counted): HTTP requests, and bytes each way as TCP payload (HTTP
//    headers and bodies).
// Prints one JSON line:
//   {docs, docBytes, replicateMs, docsWritten, noop: {requests, bytesUp, bytesDown}}
// The PouchDB modules are the ones pouchdb-server 4.2.0 runs (7.3.1), pinned in package.json.
'use strict';

const fs = require('fs');
const net = require('net');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-leveldb'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

function options(argv) {
  const out = {};
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i];
    const value = argv[i + 1];
    if (!key.startsWith('--') || value === undefined) {
      throw new Error(`bad argument ${key}; usage: --docs FILE --server URL --db NAME --dir DIR`);
    }
    out[key.slice(2)] = value;
  }
  for (const need of ['docs', 'server', 'db', 'dir']) {
    if (!out[need]) throw new Error(`--${need} is required`);
  }
  return out;
}

// A TCP relay to `target` that counts payload bytes each way and HTTP request lines.
function countingRelay(target) {
  const counts = { requests: 0, bytesUp: 0, bytesDown: 0 };
  const requestLine = /(?:^|\r\n)(?:GET|HEAD|POST|PUT|DELETE|COPY|OPTIONS) \S+ HTTP\/1\.[01]\r\n/g;
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.hostname);
    let tail = '';
    client.on('data', (chunk) => {
      counts.bytesUp += chunk.length;
      const text = tail + chunk.toString('latin1');
      counts.requests += (text.match(requestLine) || []).length;
      // Keep a little of the end so a request line split across chunks is still seen once:
      // only text after the last complete line can start a match later.
      const cut = text.lastIndexOf('\r\n');
      tail = cut >= 0 ? text.slice(cut) : text.slice(-256);
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      counts.bytesDown += chunk.length;
      client.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, counts, port: server.address().port }));
  });
}

async function main() {
  const opts = options(process.argv);
  const lines = fs.readFileSync(opts.docs, 'utf8').split('\n').filter((l) => l.length > 0);
  const docs = lines.map((l) => JSON.parse(l));
  const docBytes = lines.reduce((sum, l) => sum + Buffer.byteLength(l), 0);

  const local = new PouchDB(opts.dir, { adapter: 'leveldb' });
  for (let i = 0; i < docs.length; i += 1000) {
    const results = await local.bulkDocs(docs.slice(i, i + 1000));
    const failed = results.find((r) => r.error);
    if (failed) throw new Error(`loading the local database: ${JSON.stringify(failed)}`);
  }

  const server = new URL(opts.server);
  const remote = new PouchDB(`${opts.server.replace(/\/$/, '')}/${opts.db}`);
  await remote.info(); // creates the database; not part of the replication time
  const started = process.hrtime.bigint();
  const result = await local.replicate.to(remote);
  const replicateMs = Number(process.hrtime.bigint() - started) / 1e6;
  if (!result.ok || result.docs_written !== docs.length) {
    throw new Error(`replication incomplete: ${JSON.stringify(result)}`);
  }

  const relay = await countingRelay(server);
  const viaRelay = new PouchDB(`http://127.0.0.1:${relay.port}/${opts.db}`);
  await local.replicate.to(viaRelay); // warm-up: setup requests and checkpoints
  relay.counts.requests = 0;
  relay.counts.bytesUp = 0;
  relay.counts.bytesDown = 0;
  const noop = await local.replicate.to(viaRelay);
  if (noop.docs_written !== 0) throw new Error(`no-op replication wrote ${noop.docs_written}`);
  const counts = { ...relay.counts };
  relay.server.close();
  await local.close();
  console.log(JSON.stringify({
    docs: docs.length,
    docBytes,
    replicateMs,
    docsWritten: result.docs_written,
    noop: counts,
  }));
  // Keep-alive sockets of the HTTP client would hold the process open.
  process.exit(0);
}

main().catch((e) => {
  console.error(`replicate.js: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
