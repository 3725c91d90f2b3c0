package ws

import (
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// Tests of the tslm.legacy table in docs/protocol.md.

func (ts *testServer) dialLegacy(t testing.TB) *client {
	t.Helper()
	c := ts.dial(t, ProtocolLegacy)
	if got := c.ws.Subprotocol(); got != ProtocolLegacy {
		t.Fatalf("subprotocol %q, want %q", got, ProtocolLegacy)
	}
	return c
}

// expectLegacyError reads {"Error":"<code>: <message>"}.
func (c *client) expectLegacyError(code string) {
	c.t.Helper()
	got := c.read()
	msg, ok := got["Error"].(string)
	if len(got) != 1 || !ok || !strings.HasPrefix(msg, code+": ") || len(msg) == len(code)+2 {
		c.t.Fatalf("got %v, want {\"Error\":\"%s: <message>\"}", got, code)
	}
}

// readBoth reads two frames that may come in either order (an answer and
// a message, which travels through the backlog) and returns them as
// (the one with key, the other).
func (c *client) readBoth(key string) (withKey, other map[string]any) {
	c.t.Helper()
	for range 2 {
		f := c.read()
		if _, ok := f[key]; ok && withKey == nil {
			withKey = f
		} else {
			other = f
		}
	}
	if withKey == nil || other == nil {
		c.t.Fatalf("want one frame with %q and one without; got %v and %v", key, withKey, other)
	}
	return withKey, other
}

func TestLegacyRoundTrip(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	lc := ts.dialLegacy(t)
	v1 := ts.dial(t)

	t.Run("create", func(t *testing.T) {
		lc.t = t
		lc.send(`{"CreateChannel":"c"}`)
		lc.expect(map[string]any{"Success": "Channel c created"})
		lc.send(`{"CreateChannel":"c"}`)
		lc.expect(map[string]any{"Success": "Channel c already exists"})
	})
	t.Run("subscribe", func(t *testing.T) {
		lc.t, v1.t = t, t
		lc.send(`{"Subscribe":"c"}`)
		lc.expect(map[string]any{"Success": "Subscribed to c"})
		v1.subscribe("c", nil)
	})

	tests := []struct {
		name string
		send func() // publishes on c, by legacy or v1
		// what each subscriber receives
		legacy map[string]any
		data   any
	}{
		{
			name:   "legacy Text",
			send:   func() { lc.send(`{"NotifyChannel":["c",{"Text":"hi"}]}`) },
			legacy: map[string]any{"ChannelMessage": []any{"c", map[string]any{"Text": "hi"}}},
			data:   "hi",
		},
		{
			name:   "legacy Json",
			send:   func() { lc.send(`{"NotifyChannel":["c",{"Json":{"a":1}}]}`) },
			legacy: map[string]any{"ChannelMessage": []any{"c", map[string]any{"Json": map[string]any{"a": 1}}}},
			data:   map[string]any{"a": 1},
		},
		{
			name:   "legacy Json string is Text",
			send:   func() { lc.send(`{"NotifyChannel":["c",{"Json":"s"}]}`) },
			legacy: map[string]any{"ChannelMessage": []any{"c", map[string]any{"Text": "s"}}},
			data:   "s",
		},
		{
			name:   "legacy Text with quotes",
			send:   func() { lc.send(`{"NotifyChannel":["c",{"Text":"say \"hi\"\n"}]}`) },
			legacy: map[string]any{"ChannelMessage": []any{"c", map[string]any{"Text": "say \"hi\"\n"}}},
			data:   "say \"hi\"\n",
		},
		{
			name:   "v1 string",
			send:   func() { v1.send(`{"type":"publish","ref":"p","channel":"c","data":"from v1"}`) },
			legacy: map[string]any{"ChannelMessage": []any{"c", map[string]any{"Text": "from v1"}}},
			data:   "from v1",
		},
		{
			name:   "v1 array",
			send:   func() { v1.send(`{"type":"publish","ref":"p","channel":"c","data":[1,null]}`) },
			legacy: map[string]any{"ChannelMessage": []any{"c", map[string]any{"Json": []any{1, nil}}}},
			data:   []any{1, nil},
		},
		{
			name:   "v1 null",
			send:   func() { v1.send(`{"type":"publish","ref":"p","channel":"c","data":null}`) },
			legacy: map[string]any{"ChannelMessage": []any{"c", map[string]any{"Json": nil}}},
			data:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lc.t, v1.t = t, t
			tt.send()
			var fromLegacy bool
			if strings.HasPrefix(tt.name, "legacy") {
				fromLegacy = true
				success, msg := lc.readBoth("Success")
				if d := diff(success, map[string]any{"Success": "Message sent to c"}); d != "" {
					t.Errorf("legacy answer %v: %s", success, d)
				}
				if d := diff(msg, tt.legacy); d != "" {
					t.Errorf("legacy message %v: %s", msg, d)
				}
			} else {
				lc.expect(tt.legacy)
			}
			var msg map[string]any
			if fromLegacy {
				msg = v1.read()
			} else {
				var ack map[string]any
				ack, msg = v1.readBoth("ref")
				if d := diff(ack, map[string]any{"type": "ack", "ref": "p", "channel": "c", "id": anyID}); d != "" {
					t.Errorf("v1 ack %v: %s", ack, d)
				}
			}
			if d := diff(msg, map[string]any{"type": "message", "channel": "c", "id": anyID, "data": tt.data}); d != "" {
				t.Errorf("v1 message %v: %s", msg, d)
			}
		})
	}
}

func TestLegacyErrors(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "c", 0)
	tests := []struct {
		name   string
		frame  string
		binary bool
		code   string
	}{
		{name: "not JSON", frame: `hello`, code: "bad_request"},
		{name: "empty", frame: ``, code: "bad_request"},
		{name: "array", frame: `["Subscribe","c"]`, code: "bad_request"},
		{name: "string", frame: `"Subscribe"`, code: "bad_request"},
		{name: "empty object", frame: `{}`, code: "bad_request"},
		{name: "two commands", frame: `{"Subscribe":"c","CreateChannel":"d"}`, code: "bad_request"},
		{name: "v1 frame", frame: `{"type":"subscribe","channel":"c"}`, code: "bad_request"},
		{name: "CreateChannel number", frame: `{"CreateChannel":1}`, code: "bad_request"},
		{name: "Subscribe null", frame: `{"Subscribe":null}`, code: "bad_request"},
		{name: "Subscribe bad name", frame: `{"Subscribe":"a b"}`, code: "bad_request"},
		{name: "NotifyChannel not an array", frame: `{"NotifyChannel":"c"}`, code: "bad_request"},
		{name: "NotifyChannel one argument", frame: `{"NotifyChannel":["c"]}`, code: "bad_request"},
		{name: "NotifyChannel three arguments", frame: `{"NotifyChannel":["c",{"Text":"a"},1]}`, code: "bad_request"},
		{name: "NotifyChannel channel number", frame: `{"NotifyChannel":[1,{"Text":"a"}]}`, code: "bad_request"},
		{name: "NotifyChannel Text and Json", frame: `{"NotifyChannel":["c",{"Text":"a","Json":1}]}`, code: "bad_request"},
		{name: "NotifyChannel neither", frame: `{"NotifyChannel":["c",{}]}`, code: "bad_request"},
		{name: "NotifyChannel Text null", frame: `{"NotifyChannel":["c",{"Text":null}]}`, code: "bad_request"},
		{name: "NotifyChannel Text number", frame: `{"NotifyChannel":["c",{"Text":5}]}`, code: "bad_request"},
		{name: "NotifyChannel bad name", frame: `{"NotifyChannel":["a/b",{"Text":"a"}]}`, code: "bad_request"},
		{name: "binary frame", frame: `{"Subscribe":"c"}`, binary: true, code: "bad_request"},
		{name: "unknown command", frame: `{"Unsubscribe":"c"}`, code: "unknown_type"},
		{name: "wrong-case command", frame: `{"subscribe":"c"}`, code: "unknown_type"},
		{name: "Subscribe missing channel", frame: `{"Subscribe":"missing"}`, code: "not_found"},
		{name: "NotifyChannel missing channel", frame: `{"NotifyChannel":["missing",{"Text":"a"}]}`, code: "not_found"},
		{name: "duplicate Subscribe", frame: `{"Subscribe":"c"}`, code: "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ts.dialLegacy(t)
			c.send(`{"Subscribe":"c"}`)
			c.expect(map[string]any{"Success": "Subscribed to c"})
			if tt.binary {
				c.sendKind(websocket.BinaryMessage, []byte(tt.frame))
			} else {
				c.send(tt.frame)
			}
			c.expectLegacyError(tt.code)
			// The connection and its subscription still work.
			c.send(`{"NotifyChannel":["c",{"Text":"after"}]}`)
			success, msg := c.readBoth("Success")
			if d := diff(success, map[string]any{"Success": "Message sent to c"}); d != "" {
				t.Errorf("answer %v: %s", success, d)
			}
			if d := diff(msg, map[string]any{"ChannelMessage": []any{"c", map[string]any{"Text": "after"}}}); d != "" {
				t.Errorf("message %v: %s", msg, d)
			}
		})
	}
}

func TestLegacyPermissions(t *testing.T) {
	ts := startServer(t, Config{Allow: OpSubscribe})
	ts.create(t, "c", 0)
	c := ts.dialLegacy(t)
	for _, frame := range []string{`{"NotifyChannel":["c",{"Text":"hi"}]}`, `{"CreateChannel":"new"}`} {
		c.send(frame)
		c.expectLegacyError("forbidden")
	}
	c.send(`{"Subscribe":"c"}`)
	c.expect(map[string]any{"Success": "Subscribed to c"})
	if info, _ := ts.hub.Info(t.Context(), "c"); info.Length != 0 {
		t.Errorf("a forbidden NotifyChannel stored %d messages", info.Length)
	}
	if _, err := ts.hub.Info(t.Context(), "new"); err == nil {
		t.Error("a forbidden CreateChannel created the channel")
	}
}
