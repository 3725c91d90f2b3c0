package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tslm/tslm/client"
	"github.com/tslm/tslm/responder"
)

// serve runs a responder (as examples/echo-responder) on the replica's
// internal listener until the test ends.
func serve(t *testing.T, r *replica, h responder.Handler, channels ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- responder.ServeWebSocket(ctx, responder.WebSocketConfig{URL: r.internal}, h, channels...)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("responder: %v", err)
		}
	})
}

func echo(_ context.Context, r responder.Request) (json.RawMessage, error) {
	if string(r.Data) == `"refuse"` {
		return nil, &responder.Refusal{Code: "no_thanks", Message: "refused on request"}
	}
	return r.Data, nil
}

func TestRequestReply(t *testing.T) {
	r := startReplica(t, nil, nil)
	c := dial(t, r.internal)
	ctx := ctxT(t)
	c.Create(ctx, "echo", client.ChannelOptions{})
	serve(t, r, echo, "echo")
	for _, data := range []string{`{"hello":"world"}`, `[1,2]`, `null`} {
		got, err := c.Request(ctx, "echo", json.RawMessage(data))
		if err != nil || string(got) != data {
			t.Fatalf("request %s: %s, %v", data, got, err)
		}
	}
	_, err := c.Request(ctx, "echo", "refuse")
	var ref *client.Refusal
	if !errors.As(err, &ref) || ref.Code != "no_thanks" || ref.Message != "refused on request" {
		t.Fatalf("refused request: %v, want the app's refusal", err)
	}
	if _, err := c.Request(ctx, "nowhere", 1); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("request on a missing channel: %v", err)
	}
}

// TestRequestAcrossReconnect: the connection drops after the request's
// ack and before its reply; the client resumes the session on the next
// connection and gets the reply.
func TestRequestAcrossReconnect(t *testing.T) {
	r := startReplica(t, nil, nil)
	p := startProxy(t, strings.TrimPrefix(strings.TrimSuffix(r.internal, "/v1/ws"), "ws://"))
	c := dial(t, p.url())
	ctx := ctxT(t)
	c.Create(ctx, "slow", client.ChannelOptions{})
	release := make(chan struct{})
	handling := make(chan struct{}, 4)
	serve(t, r, func(ctx context.Context, req responder.Request) (json.RawMessage, error) {
		handling <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return req.Data, nil
	}, "slow")

	type answer struct {
		data json.RawMessage
		err  error
	}
	answers := make(chan answer, 2)
	for _, d := range []string{`1`, `2`} {
		go func() {
			got, err := c.Request(ctx, "slow", json.RawMessage(d))
			answers <- answer{got, err}
		}()
	}
	for range 2 {
		<-handling
	}
	waitFor(t, "both acks", func() bool { return client.AwaitedRequests(c) == 2 })
	before := p.acceptCount()
	p.drop()
	waitFor(t, "the reconnection", func() bool { return p.acceptCount() > before })
	close(release)
	got := map[string]bool{}
	for range 2 {
		a := <-answers
		if a.err != nil {
			t.Fatalf("request across a reconnect: %v", a.err)
		}
		got[string(a.data)] = true
	}
	if !got["1"] || !got["2"] {
		t.Fatalf("answers %v, want 1 and 2", got)
	}
	if n := client.AwaitedRequests(c); n != 0 {
		t.Fatalf("%d requests still awaited", n)
	}
}
