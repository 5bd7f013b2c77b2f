// PeerJS server (the npm `peer` package) for bench/signaling.py, on loopback.
//
//   node bench/peerjs_server.js --port PORT [--alive-timeout-ms 600000] [--limit 100000]
//
// Loads `peer` from bench/.peerjs (installed there by bench/signaling.py, git-ignored). Prints
// "listening <port>" on stdout once the port is bound; exits on SIGTERM/SIGINT.
"use strict";

const path = require("node:path");

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const { PeerServer } = require(path.join(__dirname, ".peerjs", "node_modules", "peer"));

const port = Number(option("port", "9000"));
const server = PeerServer({
  port,
  host: "127.0.0.1",
  path: "/",
  key: "peerjs",
  // The default 5,000 would refuse the RSS phase's 5,000th client (the check is `>=`).
  concurrent_limit: Number(option("limit", "100000")),
  // Clients heartbeat every 20 s (like the hub's websocket pings); the default 60-90 s
  // timeout would do, but a loaded 2-core machine must not drop a client mid-phase.
  alive_timeout: Number(option("alive-timeout-ms", "600000")),
}, () => {
  process.stdout.write(`listening ${port}\n`);
});

server.on("error", (err) => process.stderr.write(`peerjs error: ${err}\n`));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
