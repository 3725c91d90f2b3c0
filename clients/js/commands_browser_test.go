package jsclient_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/gateway"
)

// TestBrowserCommands runs the client's promises in Chromium against a
// gateway whose public listener allows them: create, publish (received by
// an async-iterated subscription), a request answered by an app serving
// over the internal listener, the app's refusal, and a protocol error.
func TestBrowserCommands(t *testing.T) {
	chromium, node := browserPrerequisites(t)
	g := startGateway(t, gateway.Config{PublicAllow: []string{"subscribe", "publish", "create", "request"}})
	serveEcho(t, "ws://"+g.InternalAddrs()[0].String()+"/v1/ws")
	b := startBrowser(t, chromium, node)
	b.do(t, map[string]any{"cmd": "open", "url": "http://" + g.PublicAddrs()[0].String() + "/?channel=echo"})

	const script = `(async () => {
		const { connect, TslmError } = await import("/tslm.js");
		const c = connect("ws://" + location.host + "/v1/ws");
		const out = {};
		out.created = (await c.create("pub", { maxLen: 10 })).created;
		out.createdAgain = (await c.create("pub")).created;
		const sub = c.subscribe("pub", { since: "0-0" });
		out.published = await c.publish("pub", { x: 1 }, { idempotencyKey: "k1" });
		out.republished = await c.publish("pub", { x: 2 }, { idempotencyKey: "k1" });
		for await (const m of sub) { out.received = m; break; }
		out.subEnded = sub.ended;
		out.reply = await c.request("echo", { q: 1 }, { timeoutMs: 5000 });
		try { await c.request("echo", { refuse: true }); } catch (e) { out.refused = { code: e.code, message: e.message, isTslm: e instanceof TslmError }; }
		try { await c.publish("missing", 1); } catch (e) { out.missing = e.code; }
		c.close();
		try { await c.publish("pub", 3); } catch (e) { out.afterClose = e.code; }
		return out;
	})()`
	a := b.do(t, map[string]any{"cmd": "eval", "expr": script})
	var out struct {
		Created, CreatedAgain, SubEnded bool
		Published, Republished          struct {
			ID        string
			Duplicate bool
		}
		Received struct {
			Channel, ID string
			Data        map[string]int
		}
		Reply   map[string]map[string]int
		Refused struct {
			Code, Message string
			IsTslm        bool
		}
		Missing, AfterClose string
	}
	if err := json.Unmarshal(a.Value, &out); err != nil {
		t.Fatalf("%s: %v", a.Value, err)
	}
	t.Logf("page: %s", a.Value)
	if !out.Created || out.CreatedAgain {
		t.Errorf("create: %v then %v, want true then false", out.Created, out.CreatedAgain)
	}
	if out.Published.ID == "" || out.Published.Duplicate || out.Republished.ID != out.Published.ID || !out.Republished.Duplicate {
		t.Errorf("publish with a key twice: %+v then %+v, want one ID, the second a duplicate", out.Published, out.Republished)
	}
	if out.Received.Channel != "pub" || out.Received.ID != out.Published.ID || out.Received.Data["x"] != 1 || !out.SubEnded {
		t.Errorf("iterated %+v (ended after break: %v), want the published message, then the subscription ended", out.Received, out.SubEnded)
	}
	if out.Reply["echo"]["q"] != 1 {
		t.Errorf("request answered %v, want the echo", out.Reply)
	}
	if out.Refused.Code != "nope" || out.Refused.Message != "refused as asked" || !out.Refused.IsTslm {
		t.Errorf("refusal: %+v, want the app's code and message in a TslmError", out.Refused)
	}
	if out.Missing != "not_found" || out.AfterClose != "closed" {
		t.Errorf("publish to a missing channel: %q, after close: %q; want not_found, closed", out.Missing, out.AfterClose)
	}
}

// serveEcho serves channel echo over a WebSocket, as an app would: it
// answers {"echo": data}, or refuses data {"refuse": true}.
func serveEcho(t *testing.T, url string) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for _, f := range []map[string]any{
		{"type": "create", "ref": "c", "channel": "echo"},
		{"type": "serve", "ref": "s", "channel": "echo"},
	} {
		if err := conn.WriteJSON(f); err != nil {
			t.Fatal(err)
		}
		var ack map[string]any
		if err := conn.ReadJSON(&ack); err != nil || ack["type"] != "ack" {
			t.Fatalf("%v: %v %v", f, ack, err)
		}
	}
	go func() {
		for {
			var req struct {
				Type, Channel, ID string
				Data              json.RawMessage
			}
			if err := conn.ReadJSON(&req); err != nil {
				return
			}
			if req.Type != "request" {
				continue
			}
			reply := map[string]any{"type": "reply", "channel": req.Channel, "id": req.ID}
			var refuse struct{ Refuse bool }
			if json.Unmarshal(req.Data, &refuse); refuse.Refuse {
				reply["error"] = map[string]any{"code": "nope", "message": "refused as asked"}
			} else {
				reply["data"] = map[string]any{"echo": req.Data}
			}
			if conn.WriteJSON(reply) != nil {
				return
			}
		}
	}()
}
