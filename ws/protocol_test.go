package ws

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Tests of docs/protocol.md, v1, over real sockets.

func TestCreateAnswers(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	c := ts.dial(t)

	tests := []struct {
		name  string
		frame map[string]any
		want  map[string]any
	}{
		{"new channel", map[string]any{"type": "create", "ref": "1", "channel": "prices"},
			map[string]any{"type": "ack", "ref": "1", "channel": "prices", "created": true}},
		{"existing channel", map[string]any{"type": "create", "ref": "2", "channel": "prices"},
			map[string]any{"type": "ack", "ref": "2", "channel": "prices", "created": false}},
		{"no ref sent, none echoed", map[string]any{"type": "create", "channel": "noref"},
			map[string]any{"type": "ack", "channel": "noref", "created": true}},
		{"with options", map[string]any{"type": "create", "ref": "3", "channel": "opts", "max_len": 2, "retention": "90s"},
			map[string]any{"type": "ack", "ref": "3", "channel": "opts", "created": true}},
		{"options of an existing channel are left alone", map[string]any{"type": "create", "ref": "4", "channel": "opts", "max_len": 100, "retention": "24h"},
			map[string]any{"type": "ack", "ref": "4", "channel": "opts", "created": false}},
		{"unknown fields ignored", map[string]any{"type": "create", "ref": "5", "channel": "extra", "colour": "blue"},
			map[string]any{"type": "ack", "ref": "5", "channel": "extra", "created": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.send(tt.frame)
			c.expect(tt.want)
		})
	}

	t.Run("max_len of the first create holds", func(t *testing.T) {
		info, err := ts.hub.Info(context.Background(), "opts")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := info.Config.MaxLen, int64(2); got != want {
			t.Errorf("MaxLen = %d, want %d", got, want)
		}
		if got, want := info.Config.Retention, 90*time.Second; got != want {
			t.Errorf("Retention = %v, want %v", got, want)
		}
	})
}

func TestSubscribeAnswers(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})

	// Each case gets its own channel holding held messages; trimmed cases
	// keep only the newest two of five.
	tests := []struct {
		name     string
		trimmed  bool
		fields   func(ids []string) map[string]any
		resumed  any   // nil: the ack has no resumed field
		replayed []int // indexes into ids of the replayed messages
		head     func([]string) string
	}{
		{name: "no position", fields: func([]string) map[string]any { return nil }},
		{name: "last 0 is no position", fields: func([]string) map[string]any { return map[string]any{"last": 0} }},
		{name: "last 2", fields: func([]string) map[string]any { return map[string]any{"last": 2} }, replayed: []int{1, 2}},
		{name: "last over length", fields: func([]string) map[string]any { return map[string]any{"last": 50} }, replayed: []int{0, 1, 2}},
		{name: "since first", fields: func(ids []string) map[string]any { return map[string]any{"since": ids[0]} }, resumed: true, replayed: []int{1, 2}},
		{name: "since 0-0", fields: func([]string) map[string]any { return map[string]any{"since": "0-0"} }, resumed: true, replayed: []int{0, 1, 2}},
		{name: "since head", fields: func(ids []string) map[string]any { return map[string]any{"since": ids[2]} }, resumed: true},
		{name: "since trimmed", trimmed: true, fields: func(ids []string) map[string]any { return map[string]any{"since": ids[0]} }, resumed: false, replayed: []int{3, 4}},
		{name: "since 0-0 after trimming", trimmed: true, fields: func([]string) map[string]any { return map[string]any{"since": "0-0"} }, resumed: false, replayed: []int{3, 4}},
		{name: "since beyond head", fields: func([]string) map[string]any { return map[string]any{"since": "99999999999999-0"} }, resumed: false, replayed: []int{0, 1, 2}},
		{name: "since held after trimming", trimmed: true, fields: func(ids []string) map[string]any { return map[string]any{"since": ids[3]} }, resumed: true, replayed: []int{4}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			channel := fmt.Sprintf("sub-%d", i)
			var ids []string
			if tt.trimmed {
				ts.create(t, channel, 2)
				ids = ts.publish(t, channel, 5)
			} else {
				ts.create(t, channel, 0)
				ids = ts.publish(t, channel, 3)
			}
			c := ts.dial(t)
			fields := tt.fields(ids)
			c.send(mergeFields(map[string]any{"type": "subscribe", "ref": "s", "channel": channel}, fields))
			want := map[string]any{"type": "ack", "ref": "s", "channel": channel, "head": ids[len(ids)-1]}
			if tt.resumed != nil {
				want["resumed"] = tt.resumed
			}
			c.expect(want)
			for _, i := range tt.replayed {
				c.expect(map[string]any{"type": "message", "channel": channel, "id": ids[i], "data": map[string]any{"i": i}})
			}
			// Then live, with nothing in between.
			live := ts.publish(t, channel, 1)[0]
			c.expect(map[string]any{"type": "message", "channel": channel, "id": live, "data": map[string]any{"i": 0}})
		})
	}

	t.Run("empty channel has head 0-0", func(t *testing.T) {
		ts.create(t, "empty", 0)
		c := ts.dial(t)
		c.send(map[string]any{"type": "subscribe", "channel": "empty"})
		c.expect(map[string]any{"type": "ack", "channel": "empty", "head": "0-0"})
		c.send(map[string]any{"type": "subscribe", "ref": "x", "channel": "empty2-missing", "since": "0-0"})
		c.expectError("x", "not_found")
	})
}

func mergeFields(dst, src map[string]any) map[string]any {
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

func TestUnsubscribeAnswers(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "u", 0)
	c := ts.dial(t)
	other := ts.dial(t)
	c.subscribe("u", nil)
	other.subscribe("u", nil)

	c.send(map[string]any{"type": "unsubscribe", "ref": "3", "channel": "u"})
	c.expect(map[string]any{"type": "ack", "ref": "3", "channel": "u"})

	ids := ts.publish(t, "u", 3)
	if got := other.messages("u", 3); strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("other subscriber got %v, want %v", got, ids)
	}
	// The hub has fanned every message out; none reached c, so the answer
	// to its next command comes first.
	c.roundTrip()

	t.Run("idempotent", func(t *testing.T) {
		c.t = t
		c.send(map[string]any{"type": "unsubscribe", "ref": "again", "channel": "u"})
		c.expect(map[string]any{"type": "ack", "ref": "again", "channel": "u"})
		c.send(map[string]any{"type": "unsubscribe", "channel": "u"})
		c.expect(map[string]any{"type": "ack", "channel": "u"})
	})
	t.Run("subscribe again after unsubscribe", func(t *testing.T) {
		c.t = t
		c.send(map[string]any{"type": "subscribe", "ref": "re", "channel": "u"})
		c.expect(map[string]any{"type": "ack", "ref": "re", "channel": "u", "head": ids[2]})
	})
}

func TestPublishAnswers(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll, MaxDataBytes: 100})
	ts.create(t, "p", 0)
	c := ts.dial(t)
	c.subscribe("p", nil)

	tests := []struct {
		name string
		data string // as sent, raw
	}{
		{"object", `{"bid":1.5}`},
		{"array", `[1,"two",{"three":3}]`},
		{"string", `"hello"`},
		{"number", `42`},
		{"null", `null`},
		{"bool", `false`},
		{"unicode", `"prïces €"`},
		{"with whitespace", `{ "a" : [ 1 , 2 ] }`},
		{"exactly MaxDataBytes", `"` + strings.Repeat("x", 98) + `"`},
	}
	var last backlog.ID
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.send(`{"type":"publish","ref":"4","channel":"p","data":` + tt.data + `}`)
			// The ack and the publisher's own message may come in either
			// order: the message travels through the backlog.
			var ack, msg map[string]any
			for range 2 {
				f := c.read()
				if f["type"] == "ack" {
					ack = f
				} else {
					msg = f
				}
			}
			if d := diff(ack, map[string]any{"type": "ack", "ref": "4", "channel": "p", "id": anyID}); d != "" {
				t.Fatalf("ack %v: %s", ack, d)
			}
			id := ack["id"].(string)
			want := map[string]any{"type": "message", "channel": "p", "id": id, "data": json.RawMessage(tt.data)}
			if d := diff(msg, want); d != "" {
				t.Fatalf("message %v: %s", msg, d)
			}
			parsed, _ := backlog.ParseID(id)
			if !last.Less(parsed) {
				t.Errorf("id %s does not follow the previous %s", id, last)
			}
			last = parsed
		})
	}
	t.Run("no ref sent, none echoed", func(t *testing.T) {
		c.t = t
		c.send(map[string]any{"type": "unsubscribe", "channel": "p"})
		c.expect(map[string]any{"type": "ack", "channel": "p"})
		c.send(map[string]any{"type": "publish", "channel": "p", "data": 1})
		c.expect(map[string]any{"type": "ack", "channel": "p", "id": anyID})
	})
	t.Run("answers in command order", func(t *testing.T) {
		c.t = t
		for i := range 20 {
			c.send(map[string]any{"type": "publish", "ref": fmt.Sprint(i), "channel": "p", "data": i})
		}
		for i := range 20 {
			c.expect(map[string]any{"type": "ack", "ref": fmt.Sprint(i), "channel": "p", "id": anyID})
		}
	})
}

// TestMalformedFrames sends each frame on a connection subscribed to
// "exists", expects the documented error, and then proves the same
// connection and its subscription still work.
func TestMalformedFrames(t *testing.T) {
	const maxData = 100
	ts := startServer(t, Config{Allow: OpAll, MaxDataBytes: maxData})
	ts.create(t, "exists", 0)

	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	ref65 := strings.Repeat("r", 65)
	tests := []struct {
		name   string
		frame  string
		binary bool
		code   broker.Code
		ref    string // "" means the error must carry no ref
	}{
		{name: "not JSON", frame: `hello`, code: "bad_request"},
		{name: "empty frame", frame: ``, code: "bad_request"},
		{name: "whitespace", frame: "  \n ", code: "bad_request"},
		{name: "JSON array", frame: `[{"type":"publish","ref":"r","channel":"exists","data":1}]`, code: "bad_request"},
		{name: "JSON string", frame: `"publish"`, code: "bad_request"},
		{name: "JSON number", frame: `42`, code: "bad_request"},
		{name: "JSON null", frame: `null`, code: "bad_request"},
		{name: "JSON true", frame: `true`, code: "bad_request"},
		{name: "empty object", frame: `{}`, code: "bad_request"},
		{name: "type missing", frame: `{"ref":"r","channel":"exists"}`, code: "bad_request", ref: "r"},
		{name: "type number", frame: `{"type":1,"ref":"r","channel":"exists"}`, code: "bad_request", ref: "r"},
		{name: "type null", frame: `{"type":null,"ref":"r","channel":"exists"}`, code: "bad_request", ref: "r"},
		{name: "type object", frame: `{"ref":"r","type":{"x":1},"channel":"exists"}`, code: "bad_request", ref: "r"},
		{name: "unknown type", frame: `{"type":"delete","ref":"r","channel":"exists"}`, code: "unknown_type", ref: "r"},
		{name: "wrong-case type", frame: `{"type":"Publish","ref":"r","channel":"exists","data":1}`, code: "unknown_type", ref: "r"},
		{name: "wrong-case field name", frame: `{"TYPE":"publish","ref":"r","channel":"exists","data":1}`, code: "bad_request", ref: "r"},
		{name: "wrong-case data", frame: `{"type":"publish","ref":"r","channel":"exists","Data":1}`, code: "bad_request", ref: "r"},
		{name: "repeated field", frame: `{"type":"publish","ref":"r","channel":"nope","channel":"exists","data":1}`, code: "bad_request", ref: "r"},
		{name: "repeated type", frame: `{"type":"subscribe","type":"publish","ref":"r","channel":"exists","data":1}`, code: "bad_request", ref: "r"},
		{name: "empty type", frame: `{"type":"","ref":"r","channel":"exists"}`, code: "unknown_type", ref: "r"},
		{name: "missing channel", frame: `{"type":"subscribe","ref":"r"}`, code: "bad_request", ref: "r"},
		{name: "null channel", frame: `{"type":"subscribe","ref":"r","channel":null}`, code: "bad_request", ref: "r"},
		{name: "empty channel", frame: `{"type":"subscribe","ref":"r","channel":""}`, code: "bad_request", ref: "r"},
		{name: "129-byte channel", frame: `{"type":"create","ref":"r","channel":"` + strings.Repeat("c", 129) + `"}`, code: "bad_request", ref: "r"},
		{name: "channel with space", frame: `{"type":"subscribe","ref":"r","channel":"a b"}`, code: "bad_request", ref: "r"},
		{name: "channel with slash", frame: `{"type":"publish","ref":"r","channel":"a/b","data":1}`, code: "bad_request", ref: "r"},
		{name: "channel with unicode", frame: `{"type":"subscribe","ref":"r","channel":"prïces"}`, code: "bad_request", ref: "r"},
		{name: "channel number", frame: `{"type":"subscribe","ref":"r","channel":7}`, code: "bad_request", ref: "r"},
		{name: "unsubscribe bad channel", frame: `{"type":"unsubscribe","ref":"r","channel":"a*b"}`, code: "bad_request", ref: "r"},
		{name: "since abc", frame: `{"type":"subscribe","ref":"r","channel":"exists","since":"abc"}`, code: "bad_request", ref: "r"},
		{name: "since leading zero", frame: `{"type":"subscribe","ref":"r","channel":"exists","since":"01-1"}`, code: "bad_request", ref: "r"},
		{name: "since without seq", frame: `{"type":"subscribe","ref":"r","channel":"exists","since":"1-"}`, code: "bad_request", ref: "r"},
		{name: "since bare ms", frame: `{"type":"subscribe","ref":"r","channel":"exists","since":"1"}`, code: "bad_request", ref: "r"},
		{name: "since number", frame: `{"type":"subscribe","ref":"r","channel":"exists","since":5}`, code: "bad_request", ref: "r"},
		{name: "last negative", frame: `{"type":"subscribe","ref":"r","channel":"exists","last":-1}`, code: "bad_request", ref: "r"},
		{name: "last over the default limit", frame: `{"type":"subscribe","ref":"r","channel":"never-created","last":1001}`, code: "limit_exceeded", ref: "r"},
		{name: "last string", frame: `{"type":"subscribe","ref":"r","channel":"exists","last":"5"}`, code: "bad_request", ref: "r"},
		{name: "last float", frame: `{"type":"subscribe","ref":"r","channel":"exists","last":1.5}`, code: "bad_request", ref: "r"},
		{name: "since and last", frame: `{"type":"subscribe","ref":"r","channel":"exists","since":"0-0","last":1}`, code: "bad_request", ref: "r"},
		{name: "ref 65 bytes", frame: `{"type":"publish","ref":"` + ref65 + `","channel":"exists","data":1}`, code: "bad_request"},
		{name: "ref number", frame: `{"type":"publish","ref":4,"channel":"exists","data":1}`, code: "bad_request"},
		{name: "ref object", frame: `{"type":"publish","ref":{"a":"b"},"channel":"exists","data":1}`, code: "bad_request"},
		{name: "publish without data", frame: `{"type":"publish","ref":"r","channel":"exists"}`, code: "bad_request", ref: "r"},
		{name: "data over MaxDataBytes", frame: `{"type":"publish","ref":"r","channel":"exists","data":"` + strings.Repeat("x", maxData-1) + `"}`, code: "too_large", ref: "r"},
		{name: "create max_len string", frame: `{"type":"create","ref":"r","channel":"fresh","max_len":"10"}`, code: "bad_request", ref: "r"},
		{name: "create max_len 0", frame: `{"type":"create","ref":"r","channel":"fresh","max_len":0}`, code: "bad_request", ref: "r"},
		{name: "create max_len negative", frame: `{"type":"create","ref":"r","channel":"fresh","max_len":-5}`, code: "bad_request", ref: "r"},
		{name: "create max_len float", frame: `{"type":"create","ref":"r","channel":"fresh","max_len":2.5}`, code: "bad_request", ref: "r"},
		{name: "create max_len over limit", frame: `{"type":"create","ref":"r","channel":"fresh","max_len":1000001}`, code: "limit_exceeded", ref: "r"},
		{name: "create retention malformed", frame: `{"type":"create","ref":"r","channel":"fresh","retention":"soon"}`, code: "bad_request", ref: "r"},
		{name: "create retention negative", frame: `{"type":"create","ref":"r","channel":"fresh","retention":"-1s"}`, code: "bad_request", ref: "r"},
		{name: "create retention under 1ms", frame: `{"type":"create","ref":"r","channel":"fresh","retention":"999us"}`, code: "bad_request", ref: "r"},
		{name: "create retention number", frame: `{"type":"create","ref":"r","channel":"fresh","retention":60}`, code: "bad_request", ref: "r"},
		{name: "create retention over limit", frame: `{"type":"create","ref":"r","channel":"fresh","retention":"10000h"}`, code: "limit_exceeded", ref: "r"},
		{name: "subscribe to missing channel", frame: `{"type":"subscribe","ref":"r","channel":"missing"}`, code: "not_found", ref: "r"},
		{name: "publish to missing channel", frame: `{"type":"publish","ref":"r","channel":"missing","data":1}`, code: "not_found", ref: "r"},
		{name: "trailing garbage", frame: `{"type":"publish","ref":"r","channel":"exists","data":1} x`, code: "bad_request"},
		{name: "two objects", frame: `{"type":"publish","ref":"r","channel":"exists","data":1}{}`, code: "bad_request"},
		{name: "20000-deep data", frame: `{"type":"publish","ref":"r","channel":"exists","data":` + deep + `}`, code: "bad_request"},
		{name: "duplicate subscribe", frame: `{"type":"subscribe","ref":"r","channel":"exists"}`, code: "bad_request", ref: "r"},
		{name: "binary frame", frame: `{"type":"publish","ref":"r","channel":"exists","data":1}`, binary: true, code: "bad_request"},
		{name: "invalid UTF-8", frame: "{\"type\":\"publish\",\"ref\":\"r\",\"channel\":\"exists\",\"data\":\"\xff\"}", code: "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ts.dial(t)
			c.subscribe("exists", nil)
			if tt.binary {
				c.sendKind(2, []byte(tt.frame)) // websocket.BinaryMessage
			} else {
				c.send(tt.frame)
			}
			c.expectError(tt.ref, string(tt.code))

			// The same connection works and its subscription is intact.
			c.send(map[string]any{"type": "publish", "ref": "ok", "channel": "exists", "data": "after"})
			var ack, msg map[string]any
			for range 2 {
				if f := c.read(); f["type"] == "ack" {
					ack = f
				} else {
					msg = f
				}
			}
			if d := diff(ack, map[string]any{"type": "ack", "ref": "ok", "channel": "exists", "id": anyID}); d != "" {
				t.Fatalf("publish after the error: ack %v: %s", ack, d)
			}
			if d := diff(msg, map[string]any{"type": "message", "channel": "exists", "id": ack["id"], "data": "after"}); d != "" {
				t.Fatalf("publish after the error: message %v: %s", msg, d)
			}
		})
	}
	if t.Failed() {
		return
	}
	t.Run("error counters", func(t *testing.T) {
		errs := ts.srv.Stats().Errors
		var total int64
		for _, n := range errs {
			total += n
		}
		if total != int64(len(tests)) {
			t.Errorf("Stats().Errors = %v (total %d), want a total of %d", errs, total, len(tests))
		}
	})
}

func TestPermissions(t *testing.T) {
	tests := []struct {
		name  string
		allow Ops
		// wanted code per command; "" means acknowledged
		create, subscribe, publish, unsubscribe broker.Code
	}{
		{name: "default is subscribe only", allow: 0, create: "forbidden", publish: "forbidden"},
		{name: "subscribe", allow: OpSubscribe, create: "forbidden", publish: "forbidden"},
		{name: "subscribe and publish", allow: OpSubscribe | OpPublish, create: "forbidden"},
		// unsubscribe needs nothing: it only undoes a subscription.
		{name: "publish only", allow: OpPublish, create: "forbidden", subscribe: "forbidden"},
		{name: "all", allow: OpAll},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Config{Allow: tt.allow})
			ts.create(t, "c", 0)
			c := ts.dial(t)
			check := func(code broker.Code, frame, ack map[string]any) {
				t.Helper()
				c.send(frame)
				if code != "" {
					c.expectError(frame["ref"].(string), string(code))
				} else {
					c.expect(ack)
				}
			}
			check(tt.create, map[string]any{"type": "create", "ref": "c1", "channel": "new"},
				map[string]any{"type": "ack", "ref": "c1", "channel": "new", "created": true})
			check(tt.subscribe, map[string]any{"type": "subscribe", "ref": "s1", "channel": "c"},
				map[string]any{"type": "ack", "ref": "s1", "channel": "c", "head": "0-0"})
			check(tt.unsubscribe, map[string]any{"type": "unsubscribe", "ref": "u1", "channel": "c"},
				map[string]any{"type": "ack", "ref": "u1", "channel": "c"})
			check(tt.publish, map[string]any{"type": "publish", "ref": "p1", "channel": "c", "data": 1},
				map[string]any{"type": "ack", "ref": "p1", "channel": "c", "id": anyID})
			if tt.publish != "" {
				if info, _ := ts.hub.Info(context.Background(), "c"); info.Length != 0 {
					t.Errorf("a forbidden publish stored %d messages", info.Length)
				}
			}
		})
	}
}

func TestSubprotocols(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "c", 0)
	tests := []struct {
		name    string
		offered []string
		status  int    // HTTP status of a refused upgrade; 0 when upgraded
		chosen  string // Sec-WebSocket-Protocol of the answer
		legacy  bool
	}{
		{name: "none is v1", offered: nil},
		{name: "tslm.v1", offered: []string{"tslm.v1"}, chosen: "tslm.v1"},
		{name: "tslm.legacy", offered: []string{"tslm.legacy"}, chosen: "tslm.legacy", legacy: true},
		{name: "v1 preferred", offered: []string{"tslm.legacy", "tslm.v1"}, chosen: "tslm.v1"},
		{name: "unknown ones skipped", offered: []string{"foo", "tslm.legacy"}, chosen: "tslm.legacy", legacy: true},
		{name: "only foo", offered: []string{"foo"}, status: http.StatusBadRequest},
		{name: "foo and bar", offered: []string{"foo", "bar"}, status: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, resp, err := ts.handshake(nil, tt.offered...)
			if tt.status != 0 {
				if err == nil {
					conn.Close()
					t.Fatalf("upgraded with %q, want HTTP %d", conn.Subprotocol(), tt.status)
				}
				if resp == nil || resp.StatusCode != tt.status {
					t.Fatalf("dial: %v, response %v; want HTTP %d", err, resp, tt.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			c := &client{t: t, ws: conn}
			t.Cleanup(func() { conn.Close() })
			if got := conn.Subprotocol(); got != tt.chosen {
				t.Errorf("subprotocol %q, want %q", got, tt.chosen)
			}
			if tt.legacy {
				c.send(`{"Subscribe":"c"}`)
				c.expect(map[string]any{"Success": "Subscribed to c"})
			} else {
				c.send(`{"type":"subscribe","ref":"s","channel":"c"}`)
				c.expect(map[string]any{"type": "ack", "ref": "s", "channel": "c", "head": anyID})
			}
		})
	}
}
