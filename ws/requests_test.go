package ws

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Tests of the request commands that the connection decides alone: frame
// validation, permissions, the framing of answers and served requests, and
// the sinks' queueing. Round trips through the hub are in
// requests_roundtrip_test.go.

// TestMalformedRequestFrames sends each frame on its own connection,
// expects the documented error with the frame's ref, and then proves the
// connection still works. Frames marked valid pass validation and meet
// the answer their state gives them (a reply on a connection serving
// nothing: not_found), which pins the edges of each bound.
func TestMalformedRequestFrames(t *testing.T) {
	const maxData = 100
	ts := startServer(t, Config{Allow: OpAll, MaxDataBytes: maxData})
	ts.create(t, "exists", 0)

	over := `"` + strings.Repeat("x", maxData-1) + `"`    // maxData+1 bytes
	exactly := `"` + strings.Repeat("x", maxData-2) + `"` // maxData bytes
	code64, code65 := strings.Repeat("c", 64), strings.Repeat("c", 65)
	msg1024, msg1025 := strings.Repeat("m", 1024), strings.Repeat("m", 1025)
	ref65 := strings.Repeat("r", 65)
	request := func(rest string) string { return `{"type":"request","ref":"r","channel":"exists"` + rest + `}` }
	session := func(rest string) string { return `{"type":"session","ref":"r"` + rest + `}` }
	pending := func(entries string) string { return session(`,"session":"tok","pending":[` + entries + `]`) }
	reply := func(rest string) string { return `{"type":"reply","ref":"r","channel":"exists"` + rest + `}` }
	refusal := func(e string) string { return reply(`,"id":"1-0","error":` + e) }

	tests := []struct {
		name  string
		frame string
		code  broker.Code
	}{
		// request
		{"request without channel", `{"type":"request","ref":"r","data":1}`, "bad_request"},
		{"request bad channel", `{"type":"request","ref":"r","channel":"a b","data":1}`, "bad_request"},
		{"request reserved channel", `{"type":"request","ref":"r","channel":"_inbox.0123abcd","data":1}`, "forbidden"},
		{"request without data", request(``), "bad_request"},
		{"request data over MaxDataBytes", request(`,"data":` + over), "too_large"},
		{"request timeout_ms 0", request(`,"data":1,"timeout_ms":0`), "bad_request"},
		{"request timeout_ms negative", request(`,"data":1,"timeout_ms":-5`), "bad_request"},
		{"request timeout_ms string", request(`,"data":1,"timeout_ms":"5000"`), "bad_request"},
		{"request timeout_ms float", request(`,"data":1,"timeout_ms":1.5`), "bad_request"},
		{"request timeout_ms past int64", request(`,"data":1,"timeout_ms":99999999999999999999`), "bad_request"},
		{"request timeout_ms null", request(`,"data":1,"timeout_ms":null`), ""},
		{"request timeout_ms twice", request(`,"data":1,"timeout_ms":100,"timeout_ms":200`), "bad_request"},
		{"request Timeout_ms", request(`,"data":1,"Timeout_ms":100`), "bad_request"},
		// session
		{"session without token", session(``), "bad_request"},
		{"session token number", session(`,"session":5`), "bad_request"},
		{"session token null", session(`,"session":null`), "bad_request"},
		{"session Session", session(`,"Session":"tok"`), "bad_request"},
		{"pending object", session(`,"session":"tok","pending":{"channel":"exists","id":"1-0"}`), "bad_request"},
		{"pending null", session(`,"session":"tok","pending":null`), "bad_request"},
		{"pending string", session(`,"session":"tok","pending":"1-0"`), "bad_request"},
		{"pending entry string", pending(`"1-0"`), "bad_request"},
		{"pending entry without channel", pending(`{"id":"1-0"}`), "bad_request"},
		{"pending entry without id", pending(`{"channel":"exists"}`), "bad_request"},
		{"pending entry bad id", pending(`{"channel":"exists","id":"01-0"}`), "bad_request"},
		{"pending entry id number", pending(`{"channel":"exists","id":1}`), "bad_request"},
		{"pending entry bad channel", pending(`{"channel":"a/b","id":"1-0"}`), "bad_request"},
		{"pending entry reserved channel", pending(`{"channel":"_inbox.x","id":"1-0"}`), "forbidden"},
		{"pending entry ref 65 bytes", pending(`{"channel":"exists","id":"1-0","ref":"` + ref65 + `"}`), "bad_request"},
		{"pending entry ref number", pending(`{"channel":"exists","id":"1-0","ref":7}`), "bad_request"},
		{"pending entry timeout_ms 0", pending(`{"channel":"exists","id":"1-0","timeout_ms":0}`), "bad_request"},
		{"pending entry timeout_ms string", pending(`{"channel":"exists","id":"1-0","timeout_ms":"1"}`), "bad_request"},
		{"pending entry Channel", pending(`{"Channel":"exists","id":"1-0"}`), "bad_request"},
		{"pending entry id twice", pending(`{"channel":"exists","id":"1-0","id":"2-0"}`), "bad_request"},
		{"pending entry listed twice", pending(`{"channel":"exists","id":"1-0","ref":"a"},{"channel":"exists","id":"1-0","ref":"b"}`), "bad_request"},
		// serve, unserve
		{"serve without channel", `{"type":"serve","ref":"r"}`, "bad_request"},
		{"serve reserved channel", `{"type":"serve","ref":"r","channel":"_inbox.abc"}`, "forbidden"},
		{"unserve bad channel", `{"type":"unserve","ref":"r","channel":"a*b"}`, "bad_request"},
		{"unserve reserved channel", `{"type":"unserve","ref":"r","channel":"_inbox.abc"}`, "forbidden"},
		// reply
		{"reply without channel", `{"type":"reply","ref":"r","id":"1-0","data":1}`, "bad_request"},
		{"reply reserved channel", `{"type":"reply","ref":"r","channel":"_inbox.abc","id":"1-0","data":1}`, "forbidden"},
		{"reply without id", reply(`,"data":1`), "bad_request"},
		{"reply bad id", reply(`,"id":"abc","data":1`), "bad_request"},
		{"reply id number", reply(`,"id":1,"data":1`), "bad_request"},
		{"reply without data or error", reply(`,"id":"1-0"`), "bad_request"},
		{"reply data and error", reply(`,"id":"1-0","data":1,"error":{"code":"no"}`), "bad_request"},
		{"reply data null and error", reply(`,"id":"1-0","data":null,"error":{"code":"no"}`), "bad_request"},
		{"reply data over MaxDataBytes", reply(`,"id":"1-0","data":` + over), "too_large"},
		{"reply error null", refusal(`null`), "bad_request"},
		{"reply error string", refusal(`"no"`), "bad_request"},
		{"reply error without code", refusal(`{"message":"no"}`), "bad_request"},
		{"reply error empty code", refusal(`{"code":""}`), "bad_request"},
		{"reply error uppercase code", refusal(`{"code":"Busy"}`), "bad_request"},
		{"reply error code with space", refusal(`{"code":"too busy"}`), "bad_request"},
		{"reply error code 65 bytes", refusal(`{"code":"` + code65 + `"}`), "bad_request"},
		{"reply error code number", refusal(`{"code":503}`), "bad_request"},
		{"reply error message number", refusal(`{"code":"busy","message":5}`), "bad_request"},
		{"reply error message 1025 bytes", refusal(`{"code":"busy","message":"` + msg1025 + `"}`), "bad_request"},
		{"reply error Code", refusal(`{"Code":"busy"}`), "bad_request"},
		{"reply error code twice", refusal(`{"code":"busy","code":"idle"}`), "bad_request"},
		// Valid replies, to a request this connection was never handed.
		{"valid: reply data exactly MaxDataBytes", reply(`,"id":"1-0","data":` + exactly), "not_found"},
		{"valid: reply data null", reply(`,"id":"1-0","data":null`), "not_found"},
		{"valid: reply error code 64 bytes, message 1024", refusal(`{"code":"` + code64 + `","message":"` + msg1024 + `"}`), "not_found"},
		{"valid: reply error code of every class", refusal(`{"code":"a.b-c_9"}`), "not_found"},
		{"valid: reply error without message", refusal(`{"code":"busy","extra":1}`), "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ts.dial(t)
			c.send(tt.frame)
			if tt.code == "" {
				// Valid, and answered by the hub: anything but a
				// validation error of the connection's.
				f := c.read()
				if f["ref"] != "r" || f["code"] == "bad_request" {
					t.Fatalf("got %v, want the frame accepted", f)
				}
			} else {
				c.expectError("r", string(tt.code))
			}
			c.roundTrip()
		})
	}
}

func TestSessionComesFirst(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	c := ts.dial(t)
	// Even a request refused for its data ties the connection to a new
	// session: the client that meant to resume must say so first.
	c.send(map[string]any{"type": "request", "ref": "q", "channel": "c"})
	c.expectError("q", "bad_request")
	c.send(map[string]any{"type": "session", "ref": "s", "session": strings.Repeat("A", 43), "pending": []any{}})
	got := c.expectError("s", "bad_request")
	if msg := got["message"].(string); !strings.Contains(msg, "before any request") {
		t.Errorf("message %q does not say when session may be sent", msg)
	}
	c.roundTrip()
}

func TestRequestPermissions(t *testing.T) {
	frames := map[string]map[string]any{
		"request": {"type": "request", "ref": "q", "channel": "c"}, // no data: bad_request once allowed
		"session": {"type": "session", "ref": "s"},                 // no token: likewise
		"serve":   {"type": "serve", "ref": "v", "channel": "c"},
		"unserve": {"type": "unserve", "ref": "u", "channel": "c"},
		"reply":   {"type": "reply", "ref": "p", "channel": "c", "id": "1-0", "data": 1},
	}
	// unserve needs nothing: it only undoes a serve (0 ⊆ any listener).
	needs := map[string]Ops{"request": OpRequest, "session": OpRequest, "serve": OpServe, "unserve": 0, "reply": OpServe}
	for _, allow := range []Ops{0, OpSubscribe | OpPublish | OpCreate, OpRequest, OpServe, OpRequest | OpServe, OpAll} {
		t.Run(allow.String(), func(t *testing.T) {
			ts := startServer(t, Config{Allow: allow})
			ts.create(t, "c", 0)
			c := ts.dial(t)
			for _, name := range []string{"request", "session", "serve", "unserve", "reply"} {
				frame := frames[name]
				c.send(frame)
				got := c.read()
				forbidden := got["type"] == "error" && got["code"] == "forbidden"
				if allowed := ts.srv.cfg.Allow&needs[name] == needs[name]; allowed == forbidden {
					t.Errorf("%s on a listener allowing %q: got %v", name, ts.srv.cfg.Allow, got)
				}
				if got["ref"] != frame["ref"] {
					t.Errorf("%s: answer %v does not carry ref %v", name, got, frame["ref"])
				}
				if name == "serve" && !forbidden && got["type"] == "ack" {
					// Served: stop, so that no request follows.
					c.send(frames["unserve"])
					c.expect(map[string]any{"type": "ack", "ref": "u", "channel": "c"})
				}
			}
		})
	}
}

func TestParseOps(t *testing.T) {
	tests := []struct {
		names []string
		want  Ops
		err   bool
	}{
		{[]string{"subscribe"}, OpSubscribe, false},
		{[]string{"request"}, OpRequest, false},
		{[]string{"serve"}, OpServe, false},
		{[]string{"subscribe", " request ", "serve"}, OpSubscribe | OpRequest | OpServe, false},
		{[]string{"subscribe", "publish", "create", "request", "serve"}, OpAll, false},
		{[]string{"Request"}, 0, true},
		{[]string{"reply"}, 0, true},
		{[]string{"session"}, 0, true},
	}
	for _, tt := range tests {
		got, err := ParseOps(tt.names)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseOps(%q) = %v, %v; want %v, error %v", tt.names, got, err, tt.want, tt.err)
		}
		if err != nil && !strings.Contains(err.Error(), "request or serve") {
			t.Errorf("ParseOps(%q): %v does not list the operations", tt.names, err)
		}
	}
	if got := OpAll.String(); got != "subscribe,publish,create,request,serve" {
		t.Errorf("OpAll = %q", got)
	}
}

// TestParseRequestCommands checks what the validators hand the hub.
func TestParseRequestCommands(t *testing.T) {
	parse := func(t *testing.T, frame string) command {
		t.Helper()
		cmd, _, perr := parseCommand([]byte(frame))
		if perr != nil {
			t.Fatalf("parseCommand(%s): %v", frame, perr)
		}
		return cmd
	}
	t.Run("request timeouts", func(t *testing.T) {
		for frame, want := range map[string]time.Duration{
			`{"type":"request","channel":"c","data":1}`:                                  0,
			`{"type":"request","channel":"c","data":1,"timeout_ms":1}`:                   time.Millisecond,
			`{"type":"request","channel":"c","data":1,"timeout_ms":5000}`:                5 * time.Second,
			`{"type":"request","channel":"c","data":1,"timeout_ms":9223372036854775807}`: 1<<63 - 1,
		} {
			cmd := parse(t, frame)
			got, perr := cmd.requestTimeout()
			if perr != nil || got != want {
				t.Errorf("%s: timeout %v, %v; want %v", frame, got, perr, want)
			}
		}
	})
	t.Run("session", func(t *testing.T) {
		cmd := parse(t, `{"type":"session","session":"tok","pending":[
			{"channel":"a","id":"5-1","ref":"r7","timeout_ms":3000},
			{"channel":"a","id":"5-2"},
			{"channel":"b","id":"5-1","ref":"x","other":true}]}`)
		token, pending, perr := cmd.resume()
		want := []broker.Pending{
			{Channel: "a", ID: backlog.ID{Ms: 5, Seq: 1}, Tag: "r7", Timeout: 3 * time.Second},
			{Channel: "a", ID: backlog.ID{Ms: 5, Seq: 2}},
			{Channel: "b", ID: backlog.ID{Ms: 5, Seq: 1}, Tag: "x"},
		}
		if perr != nil || token != "tok" || !reflect.DeepEqual(pending, want) {
			t.Errorf("resume = %q, %+v, %v; want tok, %+v", token, pending, perr, want)
		}
		cmd = parse(t, `{"type":"session","session":"tok"}`)
		if token, pending, perr := cmd.resume(); perr != nil || token != "tok" || len(pending) != 0 {
			t.Errorf("without pending: %q, %v, %v", token, pending, perr)
		}
	})
	t.Run("reply", func(t *testing.T) {
		cmd := parse(t, `{"type":"reply","channel":"c","id":"7-3","data":{"ok":true}}`)
		id, data, refusal, perr := cmd.reply(100)
		if perr != nil || id != (backlog.ID{Ms: 7, Seq: 3}) || string(data) != `{"ok":true}` || refusal != nil {
			t.Errorf("data reply = %v %s %v %v", id, data, refusal, perr)
		}
		cmd = parse(t, `{"type":"reply","channel":"c","id":"7-3","error":{"code":"out_of_stock","message":"none left"}}`)
		id, data, refusal, perr = cmd.reply(100)
		if perr != nil || data != nil || !reflect.DeepEqual(refusal, &broker.Refusal{Code: "out_of_stock", Message: "none left"}) {
			t.Errorf("refusal = %v %s %+v %v", id, data, refusal, perr)
		}
	})
}

func TestRequestEncoders(t *testing.T) {
	id := backlog.ID{Ms: 1732480000123, Seq: 4}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"reply", encodeAnswer(broker.Answer{Tag: "r7", Channel: "orders", ID: id, Data: []byte(`{"n":1}`)}, 64),
			`{"type":"reply","ref":"r7","channel":"orders","id":"1732480000123-4","data":{"n":1}}`},
		{"reply null", encodeAnswer(broker.Answer{Tag: "r7", Channel: "orders", ID: id, Data: []byte(`null`)}, 64),
			`{"type":"reply","ref":"r7","channel":"orders","id":"1732480000123-4","data":null}`},
		{"reply without ref", encodeAnswer(broker.Answer{Channel: "orders", ID: id, Data: []byte(`1`)}, 64),
			`{"type":"reply","channel":"orders","id":"1732480000123-4","data":1}`},
		{"reply not JSON", encodeAnswer(broker.Answer{Tag: "r", Channel: "o", ID: id, Data: []byte("a\xffb")}, 64),
			`{"type":"reply","ref":"r","channel":"o","id":"1732480000123-4","data":"a\ufffdb"}`},
		{"refusal", encodeAnswer(broker.Answer{Tag: "r7", Channel: "orders", ID: id, Refusal: &broker.Refusal{Code: "busy", Message: "try \"later\""}}, 64),
			`{"type":"reply","ref":"r7","channel":"orders","id":"1732480000123-4","error":{"code":"busy","message":"try \"later\""}}`},
		{"timeout", encodeAnswer(broker.Answer{Tag: "r7", Channel: "orders", ID: id, Timeout: true}, 64),
			`{"type":"error","ref":"r7","code":"timeout","message":"no reply before the request's deadline","channel":"orders","id":"1732480000123-4"}`},
		{"reply at the size limit", encodeAnswer(broker.Answer{Tag: "r7", Channel: "orders", ID: id, Data: []byte(`"` + strings.Repeat("x", 62) + `"`)}, 64),
			`{"type":"reply","ref":"r7","channel":"orders","id":"1732480000123-4","data":"` + strings.Repeat("x", 62) + `"}`},
		{"reply over the size limit", encodeAnswer(broker.Answer{Tag: "r7", Channel: "orders", ID: id, Data: []byte(`"` + strings.Repeat("x", 63) + `"`)}, 64),
			`{"type":"error","ref":"r7","code":"too_large","message":"the reply is larger than 64 bytes","channel":"orders","id":"1732480000123-4"}`},
		{"request", encodeServedRequest(broker.ServedRequest{Channel: "orders", ID: id, Data: []byte(`{"n":1}`), Deadline: time.UnixMilli(1732480005123), Deliveries: 2}),
			`{"type":"request","channel":"orders","id":"1732480000123-4","data":{"n":1},"deadline_ms":1732480005123,"deliveries":2}`},
		{"request not JSON", encodeServedRequest(broker.ServedRequest{Channel: "o", ID: id, Data: []byte("plain"), Deadline: time.UnixMilli(1), Deliveries: 1}),
			`{"type":"request","channel":"o","id":"1732480000123-4","data":"plain","deadline_ms":1,"deliveries":1}`},
		{"request ack", encodeAck(ackFrame{Ref: "r7", Channel: "orders", ID: id.String(), Session: "tok"}),
			`{"type":"ack","ref":"r7","channel":"orders","id":"1732480000123-4","session":"tok"}`},
		{"session ack", encodeAck(ackFrame{Ref: "s1", Session: "tok"}),
			`{"type":"ack","ref":"s1","session":"tok"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if string(tt.got) != tt.want {
				t.Errorf("got  %s\nwant %s", tt.got, tt.want)
			}
		})
	}
}

// TestAnswerSink drives the connection's sinks as the hub does, over a
// real socket.
func TestAnswerSink(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	c := ts.dial(t)
	conn := ts.onlyConn(t)
	id := backlog.ID{Ms: 9, Seq: 1}

	t.Run("answers go out at once", func(t *testing.T) {
		c.t = t
		if !conn.Answer(broker.Answer{Tag: "a", Channel: "o", ID: id, Data: []byte(`"yes"`)}) {
			t.Fatal("Answer refused")
		}
		c.expect(map[string]any{"type": "reply", "ref": "a", "channel": "o", "id": "9-1", "data": "yes"})
		conn.Answer(broker.Answer{Tag: "b", Channel: "o", ID: id, Timeout: true})
		c.expect(map[string]any{"type": "error", "ref": "b", "code": "timeout", "message": anyText, "channel": "o", "id": "9-1"})
		if n := ts.srv.Stats().Errors[broker.CodeTimeout]; n != 1 {
			t.Errorf("timeouts counted: %d, want 1", n)
		}
	})
	t.Run("held while a session resumes", func(t *testing.T) {
		c.t = t
		conn.holdAnswers()
		conn.Answer(broker.Answer{Tag: "h1", Channel: "o", ID: id, Data: []byte(`1`)})
		conn.Answer(broker.Answer{Tag: "h2", Channel: "o", ID: id, Refusal: &broker.Refusal{Code: "no"}})
		c.roundTrip() // nothing held came out before it
		conn.reply(encodeAck(ackFrame{Ref: "s", Session: "tok"}))
		conn.releaseAnswers(true)
		c.expect(map[string]any{"type": "ack", "ref": "s", "session": "tok"})
		c.expect(map[string]any{"type": "reply", "ref": "h1", "channel": "o", "id": "9-1", "data": 1})
		c.expect(map[string]any{"type": "reply", "ref": "h2", "channel": "o", "id": "9-1", "error": map[string]any{"code": "no", "message": ""}})
	})
	t.Run("dropped when the resume fails", func(t *testing.T) {
		c.t = t
		conn.holdAnswers()
		conn.Answer(broker.Answer{Tag: "lost", Channel: "o", ID: id, Data: []byte(`1`)})
		conn.releaseAnswers(false)
		c.roundTrip()
		conn.Answer(broker.Answer{Tag: "after", Channel: "o", ID: id, Data: []byte(`2`)})
		c.expect(map[string]any{"type": "reply", "ref": "after", "channel": "o", "id": "9-1", "data": 2})
	})
	t.Run("served requests wait for the serve ack", func(t *testing.T) {
		c.t = t
		sink := &servingSink{c: conn, acked: make(chan struct{})}
		served := make(chan error, 1)
		go func() {
			served <- sink.Serve(context.Background(), broker.ServedRequest{Channel: "o", ID: id, Data: []byte(`{"q":1}`), Deadline: time.UnixMilli(5000), Deliveries: 1})
		}()
		c.roundTrip() // the request is held back
		conn.reply(encodeAck(ackFrame{Ref: "v", Channel: "o"}))
		close(sink.acked)
		c.expect(map[string]any{"type": "ack", "ref": "v", "channel": "o"})
		c.expect(map[string]any{"type": "request", "channel": "o", "id": "9-1", "data": map[string]any{"q": 1}, "deadline_ms": 5000, "deliveries": 1})
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Run("a held request gives up with its context", func(t *testing.T) {
		c.t = t
		sink := &servingSink{c: conn, acked: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := sink.Serve(ctx, broker.ServedRequest{Channel: "o", ID: id, Data: []byte(`1`)}); err == nil {
			t.Error("Serve with a canceled context and no ack returned nil")
		}
		c.roundTrip()
	})
}

// TestAnswerToSlowConsumer: answers never wait; one that does not fit
// closes the connection with 4000, and the client resumes its session.
func TestAnswerToSlowConsumer(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll, SendQueueFrames: 4, SendQueueBytes: 256 << 10})
	c := ts.dial(t)
	conn := ts.onlyConn(t)
	data := fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 64<<10))
	// The client reads nothing: its socket buffers fill, then the queue.
	n := 0
	for conn.Answer(broker.Answer{Tag: "r", Channel: "o", ID: backlog.ID{Ms: 1, Seq: uint64(n)}, Data: data}) {
		if n++; n == 2000 {
			t.Fatalf("Answer still accepted after %d answers of %d bytes", n, len(data))
		}
	}
	c.expectClose(CodeSlowConsumer)
	if got := ts.srv.Stats().Closes[CodeSlowConsumer]; got != 1 {
		t.Errorf("slow consumer closes: %d, want 1", got)
	}
}

// TestLegacyHasNoRequests: requests are a v1 feature; the legacy adapter
// knows none of their commands.
func TestLegacyHasNoRequests(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "c", 0)
	c := ts.dialLegacy(t)
	for _, frame := range []string{`{"Request":["c",{"Json":1}]}`, `{"Serve":"c"}`, `{"type":"request","channel":"c","data":1}`} {
		c.send(frame)
		got := c.read()
		msg, _ := got["Error"].(string)
		if !strings.HasPrefix(msg, "unknown_type: ") && !strings.HasPrefix(msg, "bad_request: ") {
			t.Errorf("%s: got %v, want unknown_type or bad_request", frame, got)
		}
	}
	c.send(`{"Subscribe":"c"}`)
	c.expect(map[string]any{"Success": "Subscribed to c"})
}

// TestOpsAreAuths: ws's operation constants are auth's operation sets, so
// that listeners, grants and channel rules speak of the same things.
func TestOpsAreAuths(t *testing.T) {
	for _, c := range []struct {
		ws Ops
		op auth.Op
	}{{OpSubscribe, auth.OpSubscribe}, {OpPublish, auth.OpPublish}, {OpCreate, auth.OpCreate}, {OpRequest, auth.OpRequest}, {OpServe, auth.OpServe}} {
		if c.ws != auth.Ops(c.op) || c.ws.String() != c.op.String() {
			t.Errorf("ws %v is not auth's %v", c.ws, c.op)
		}
	}
	if OpAll != OpSubscribe|OpPublish|OpCreate|OpRequest|OpServe {
		t.Errorf("OpAll = %v", OpAll)
	}
}
