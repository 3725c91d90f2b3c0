// The demo page: one channel at a time, its messages with their IDs, and
// the connection's life (reconnects, resumes, a fallback to SSE). Query
// parameters: channel, last or since, transport (auto|websocket|sse).
// window.tslmDemo exposes what the page showed, for the browser tests.
import { connect } from "/tslm.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;

const state = { messages: [], events: [], transports: [], errors: [] };
window.tslmDemo = state;

const client = connect(wsUrl, { transport: params.get("transport") || "auto" });
let sub = null;

function show(listId, text, cls, idText) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  if (idText) {
    const span = document.createElement("span");
    span.className = "id";
    span.textContent = idText;
    li.append(span);
  }
  li.append(text);
  const list = $(listId);
  list.prepend(li);
  while (list.children.length > 500) list.lastChild.remove();
}

function event(text, cls) {
  state.events.push(text);
  show("events", `${new Date().toLocaleTimeString()} ${text}`, cls);
}

function status() {
  $("status").textContent = client.state;
  $("status").dataset.state = client.state;
  $("transport").textContent = client.transport;
}

client.on("open", (e) => {
  const at = sub && sub.lastId ? `, resuming ${sub.channel} after ${sub.lastId}` : "";
  event(`connected over ${e.transport}${at}`);
  status();
});
client.on("close", (e) => {
  event(`disconnected (${e.code}${e.reason ? " " + e.reason : ""})`, e.willReconnect ? "warn" : "bad");
  status();
});
client.on("reconnecting", (e) => {
  event(`reconnecting in ${e.delay} ms (attempt ${e.attempt})`, "warn");
  status();
});
client.on("transport", (e) => {
  state.transports.push(e.transport);
  event(`switched to ${e.transport}: ${e.reason}`, "warn");
  status();
});
client.on("error", (e) => {
  state.errors.push(e.code);
  event(`error ${e.code}: ${e.message}`, "bad");
  status();
});

function subscribe(channel, position) {
  if (sub) sub.unsubscribe();
  state.channel = channel;
  $("messages").replaceChildren();
  sub = client.subscribe(channel, {
    ...position,
    onMessage: (m) => {
      state.messages.push({ id: m.id, data: m.data });
      show("messages", JSON.stringify(m.data), "", m.id);
    },
    onGap: (g) => event(`gap on ${g.channel}: messages after ${g.after} were lost`, "bad"),
    onNotResumed: (n) => event(`could not resume ${n.channel}: restarted at the oldest message held (head ${n.head})`, "bad"),
    onDeleted: (d) => event(`channel ${d.channel} was deleted`, "bad"),
    onError: (e) => event(`subscription to ${channel} ended: ${e.code}: ${e.message}`, "bad"),
  });
  sub.ready.then(
    (ack) => event(`subscribed to ${ack.channel} (head ${ack.head})`),
    () => {},
  );
}

$("pick").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const last = Number($("last").value) || 0;
  const channel = $("channel").value;
  history.replaceState(null, "", `?channel=${encodeURIComponent(channel)}&last=${last}`);
  subscribe(channel, last > 0 ? { last } : {});
});

// Simulates a network failure: the client cannot tell it from a real one,
// so it reconnects with backoff and resumes after the last ID shown. (It
// reaches into the client, which has no public way to break itself.)
$("drop").addEventListener("click", () => {
  const conn = client._conn;
  if (conn && conn.socket) conn.socket.close(3000, "dropped by the demo page");
  else if (conn && conn.restart) conn.restart(1006, "dropped by the demo page");
});

const channel = params.get("channel") || "demo";
$("channel").value = channel;
if (params.has("last")) $("last").value = params.get("last");
const position = params.has("since") ? { since: params.get("since") } : Number($("last").value) > 0 ? { last: Number($("last").value) } : {};
subscribe(channel, position);
status();
