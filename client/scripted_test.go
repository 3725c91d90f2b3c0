package client_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/client"
)

// TestSubscriptionErrors: an error after a subscribe's ack (the replay
// failed midway) makes the client subscribe again after the last message;
// a forbidden without ref ends the subscription with that error.
func TestSubscriptionErrors(t *testing.T) {
	resub := make(chan map[string]any, 1)
	srv := startScripted(t, func(_ int, ws *websocket.Conn, _ http.ResponseWriter) {
		f, err := readFrame(ws)
		if err != nil {
			return
		}
		ws.WriteJSON(map[string]any{"type": "ack", "ref": f["ref"], "channel": "a", "head": "9-0"})
		ws.WriteJSON(map[string]any{"type": "message", "channel": "a", "id": "3-0", "data": 3})
		ws.WriteJSON(map[string]any{"type": "error", "ref": f["ref"], "code": "unavailable", "message": "backlog down"})
		f2, err := readFrame(ws)
		if err != nil {
			return
		}
		resub <- f2
		ws.WriteJSON(map[string]any{"type": "ack", "ref": f2["ref"], "channel": "a", "head": "9-0", "resumed": true})
		ws.WriteJSON(map[string]any{"type": "message", "channel": "a", "id": "4-0", "data": 4})
		ws.WriteJSON(map[string]any{"type": "error", "code": "forbidden", "channel": "a", "message": "subscription ended: grants changed"})
		readFrame(ws)
	})
	c := dial(t, srv.url())
	s, err := c.Subscribe(ctxT(t), "a", client.SubscribeOptions{Last: 5})
	if err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, s); m.ID != "3-0" {
		t.Fatalf("got %s", m.ID)
	}
	f := <-resub
	if f["type"] != "subscribe" || f["since"] != "3-0" || f["last"] != nil {
		t.Fatalf("subscribed again with %v, want since 3-0", f)
	}
	if m := nextMessage(t, s); m.ID != "4-0" {
		t.Fatalf("got %s", m.ID)
	}
	if ev, ok := <-s.Events(); ok {
		t.Fatalf("event %#v after the forbidden", ev)
	}
	var e *client.Error
	if !errors.Is(s.Err(), client.ErrForbidden) || !errors.As(s.Err(), &e) || e.Channel != "a" {
		t.Fatalf("Err %v, want the forbidden", s.Err())
	}
	if c.Err() != nil {
		t.Fatalf("client stopped: %v", c.Err())
	}
}

// TestSessionResume: after a drop the client lists its awaited requests
// in a session frame first; an expired session fails them with not_found,
// and a reply through the session answers them.
func TestSessionResume(t *testing.T) {
	sessions := make(chan map[string]any, 2)
	srv := startScripted(t, func(n int, ws *websocket.Conn, _ http.ResponseWriter) {
		if n == 1 {
			for range 2 {
				f, err := readFrame(ws)
				if err != nil {
					return
				}
				id := "1-0"
				if f["data"] == "b" {
					id = "2-0"
				}
				ws.WriteJSON(map[string]any{"type": "ack", "ref": f["ref"], "channel": "rpc", "id": id, "session": "tok"})
			}
			closeWith(ws, 4000)
			readFrame(ws)
			return
		}
		f, err := readFrame(ws)
		if err != nil {
			return
		}
		sessions <- f
		ws.WriteJSON(map[string]any{"type": "ack", "ref": f["ref"], "session": "tok"})
		for _, p := range f["pending"].([]any) {
			p := p.(map[string]any)
			if p["id"] == "1-0" {
				ws.WriteJSON(map[string]any{"type": "reply", "ref": p["ref"], "channel": "rpc", "id": "1-0", "data": "answer"})
			} else {
				ws.WriteJSON(map[string]any{"type": "reply", "ref": p["ref"], "channel": "rpc", "id": "2-0", "error": map[string]any{"code": "nope", "message": "refused"}})
			}
		}
		readFrame(ws)
	})
	c := dial(t, srv.url())
	type answer struct {
		data string
		err  error
	}
	answers := make(chan answer, 2)
	for _, d := range []string{"a", "b"} {
		go func() {
			got, err := c.Request(context.Background(), "rpc", d)
			answers <- answer{string(got), err}
		}()
	}
	f := <-sessions
	if f["type"] != "session" || f["session"] != "tok" || len(f["pending"].([]any)) != 2 {
		t.Fatalf("first frame after the reconnect %v, want the session with 2 pending", f)
	}
	for _, p := range f["pending"].([]any) {
		p := p.(map[string]any)
		if p["channel"] != "rpc" || p["ref"] == "" || p["timeout_ms"] != nil {
			t.Fatalf("pending entry %v", p)
		}
	}
	got := map[string]error{}
	for range 2 {
		a := <-answers
		got[a.data] = a.err
	}
	var ref *client.Refusal
	if err, ok := got[`"answer"`]; !ok || err != nil {
		t.Fatalf("answers %v, want \"answer\"", got)
	}
	if err := got[""]; !errors.As(err, &ref) || ref.Code != "nope" {
		t.Fatalf("answers %v, want the refusal", got)
	}
}

// TestExpiredSession: the session is gone on the gateway: its requests
// fail with not_found.
func TestExpiredSession(t *testing.T) {
	srv := startScripted(t, func(n int, ws *websocket.Conn, _ http.ResponseWriter) {
		f, err := readFrame(ws)
		if err != nil {
			return
		}
		if n == 1 {
			ws.WriteJSON(map[string]any{"type": "ack", "ref": f["ref"], "channel": "rpc", "id": "1-0", "session": "tok"})
			closeWith(ws, 1001)
		} else {
			ws.WriteJSON(map[string]any{"type": "error", "ref": f["ref"], "code": "not_found", "message": "session expired or unknown"})
		}
		readFrame(ws)
	})
	c := dial(t, srv.url())
	_, err := c.Request(ctxT(t), "rpc", 1)
	if !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("request of an expired session: %v, want ErrNotFound", err)
	}
}
