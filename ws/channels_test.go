package ws

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestIdempotentPublish(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "once", 0)
	sub := ts.dial(t)
	sub.subscribe("once", nil)
	pub := ts.dial(t)

	publish := func(data, key string) map[string]any {
		t.Helper()
		return pub.command("publish", "p", "once", map[string]any{"data": json.RawMessage(data), "idempotency_key": key})
	}
	first := publish(`{"n":1}`, "order-17")
	if d := diff(first, map[string]any{"type": "ack", "ref": "p", "channel": "once", "id": anyID, "duplicate": false}); d != "" {
		t.Fatalf("first publish: %v\n%s", first, d)
	}
	// The key alone identifies the message: other data changes nothing.
	for _, data := range []string{`{"n":1}`, `{"n":2}`} {
		again := publish(data, "order-17")
		if d := diff(again, map[string]any{"type": "ack", "ref": "p", "channel": "once", "id": first["id"], "duplicate": true}); d != "" {
			t.Fatalf("retry with %s: %v\n%s", data, again, d)
		}
	}
	// Without the key, the ack is as before.
	plain := pub.publish("once", `2`)
	if got := sub.messages("once", 2); got[0] != first["id"] || got[1] != plain {
		t.Fatalf("subscriber received %v, want %v then %s", got, first["id"], plain)
	}
	sub.roundTrip()

	for name, frame := range map[string]string{
		"empty":      `{"type":"publish","ref":"k","channel":"once","data":1,"idempotency_key":""}`,
		"space":      `{"type":"publish","ref":"k","channel":"once","data":1,"idempotency_key":"a b"}`,
		"too long":   `{"type":"publish","ref":"k","channel":"once","data":1,"idempotency_key":"` + strings.Repeat("k", 129) + `"}`,
		"not string": `{"type":"publish","ref":"k","channel":"once","data":1,"idempotency_key":7}`,
		"twice":      `{"type":"publish","ref":"k","channel":"once","data":1,"idempotency_key":"a","idempotency_key":"b"}`,
		"case":       `{"type":"publish","ref":"k","channel":"once","data":1,"Idempotency_Key":"a"}`,
	} {
		t.Run(name, func(t *testing.T) {
			pub.t = t
			pub.send(frame)
			pub.expectError("k", "bad_request")
		})
	}
	pub.t = t
	sub.roundTrip() // none of those published
}

func TestDeletedFrame(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "c", 0)
	v1, other := ts.dial(t), ts.dial(t)
	v1.subscribe("c", nil)
	other.subscribe("c", nil)
	lc := ts.dialLegacy(t)
	lc.send(`{"Subscribe":"c"}`)
	lc.expect(map[string]any{"Success": "Subscribed to c"})
	ids := ts.publish(t, "c", 1)
	if got := v1.messages("c", 1); got[0] != ids[0] {
		t.Fatalf("got %v, want %v", got, ids)
	}
	lc.read()

	if err := ts.hub.Delete(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	v1.expect(map[string]any{"type": "deleted", "channel": "c"})
	other.messages("c", 1)
	other.expect(map[string]any{"type": "deleted", "channel": "c"})
	// An unsubscribe from the ended subscription is acknowledged as usual.
	if ack := other.command("unsubscribe", "u", "c", nil); diff(ack, map[string]any{"type": "ack", "ref": "u", "channel": "c"}) != "" {
		t.Fatalf("unsubscribe after deleted: %v", ack)
	}
	lc.expect(map[string]any{"Error": "deleted: channel c was deleted"})

	// Then nothing, even once the channel is created again; the ended
	// subscription does not stand in the way of a new one.
	ts.create(t, "c", 0)
	ts.publish(t, "c", 1)
	v1.roundTrip()
	// An ID of the deleted channel proves nothing about the new one.
	if ack := v1.subscribe("c", map[string]any{"since": ids[0]}); ack["resumed"] != false {
		t.Fatalf("resume from the deleted channel: %v, want resumed:false", ack)
	}
	after := ts.publish(t, "c", 1)
	if got := v1.messages("c", 2); got[1] != after[0] {
		t.Fatalf("resubscribed: got %v, want the new channel's messages ending with %v", got, after)
	}
	lc.send(`{"Subscribe":"c"}`)
	lc.expect(map[string]any{"Success": "Subscribed to c"})
}
