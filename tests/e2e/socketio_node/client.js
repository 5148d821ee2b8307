// The npm socket.io-client against a server running tests/socketio_app.py:
//   node client.js URL default|websocket
// (socket.io-client found through NODE_PATH).  Prints one JSON line of results.
"use strict";
const { io } = require("socket.io-client");

const [url, scenario] = process.argv.slice(2);
const transports = scenario === "websocket" ? { transports: ["websocket"] } : {};
const sockets = [];
setTimeout(() => { console.error("timed out"); process.exit(1); }, 40000).unref();

const opened = [];  // the transport each connection opened with
let upgrades = 0;

function connect() {
  return new Promise((resolve, reject) => {
    const socket = io(url, { forceNew: true, reconnection: false, ...transports });
    sockets.push(socket);
    socket.io.once("open", () => {
      opened.push(socket.io.engine.transport.name);
      socket.io.engine.once("upgrade", () => { upgrades += 1; });
    });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

function collect(socket, event) {
  const got = [];
  socket.on(event, (data) => got.push(data));
  return got;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(predicate) {
  for (let i = 0; i < 500 && !predicate(); i++) await sleep(20);
}

async function main() {
  const result = {};
  const a = await connect();
  const engine = a.io.engine;
  result.first_transport = opened[0];
  await until(() => engine.transport.name === "websocket");
  result.upgraded = upgrades === 1;
  const ack = (socket, ...args) => socket.timeout(10000).emitWithAck(...args);
  result.ack = await ack(a, "echo", { n: 1 });
  result.acks = await Promise.all([...Array(50).keys()].map((n) => ack(a, "echo", n)));

  const b = await connect();
  const c = await connect();
  const heard = [a, b, c].map((socket) => collect(socket, "said"));
  await ack(a, "join", "blue");
  await ack(b, "join", "blue");
  a.emit("say", "blue", "to blue");
  await until(() => heard[0].length && heard[1].length);
  await ack(c, "echo", "after");  // anything sent to c before this answer arrived first
  result.members = heard.slice(0, 2);
  result.outsider = heard[2];

  const news = collect(a, "news");
  const response = await fetch(url + "/news?text=" + encodeURIComponent("from node"));
  if (response.status !== 200) throw new Error("view answered " + response.status);
  await until(() => news.length);
  result.news = news;

  const answer = await ack(a, "bin", Buffer.from([1, 2, 3]));
  result.binary = { length: answer.length, reversed: [...answer.reversed] };
  result.transport = engine.transport.name;
  console.log(JSON.stringify(result));
  sockets.forEach((socket) => socket.disconnect());
}

main().then(() => process.exit(0), (error) => { console.error(error); process.exit(1); });
