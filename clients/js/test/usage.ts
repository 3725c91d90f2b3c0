// Compiled by `tsc --noEmit` only: it holds src/tslm.d.ts to the way the
// README shows the API used.
import { connect, TslmError, compareIds, type Message, type Subscription } from "../src/tslm.js";

interface Price {
  bid: number;
}

async function main(): Promise<void> {
  const client = connect("wss://example.com/v1/ws", { token: () => "tok", backoff: { min: 200, max: 5000 } });
  const off = client.on("reconnecting", (e) => console.log(e.attempt, e.delay, e.code));
  client.on("transport", (e) => console.log(e.transport satisfies "websocket" | "sse"));
  client.on("error", (e: TslmError) => console.log(e.code, e.closeCode));
  off();

  const sub: Subscription<Price> = client.subscribe<Price>("prices", {
    last: 10,
    onMessage: (m: Message<Price>) => console.log(m.id, m.data.bid),
    onGap: (g) => console.log(g.after),
    onNotResumed: (n) => console.log(n.head),
    onDeleted: (d) => console.log(d.channel),
  });
  const ack = await sub.ready;
  console.log(ack.head, ack.resumed ?? "no since");
  for await (const m of client.subscribe("orders", { since: "0-0" })) {
    console.log(m.channel, m.id, m.data);
    break;
  }
  const { id, duplicate } = await client.publish("prices", { bid: 1.5 }, { idempotencyKey: "k1" });
  console.log(compareIds(id, sub.lastId ?? "0-0"), duplicate);
  const { created } = await client.create("prices", { maxLen: 100, retention: "1h" });
  const reply = await client.request<{ ok: boolean }>("orders", { item: 42 }, { timeoutMs: 3000 });
  console.log(created, reply.ok, client.state, client.transport);
  try {
    await client.request("orders", null);
  } catch (e) {
    if (e instanceof TslmError && e.code === "timeout") console.log(e.id);
  }
  sub.unsubscribe();
  client.close();
}

void main();
