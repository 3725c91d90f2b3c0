package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/client"
	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/responder"
)

// TestReplicaShutdown: two replicas share one Redis; the one the client is
// connected to shuts down (1001) and the client goes on on the other, as
// behind a load balancer: its subscription resumes with no gap and no
// duplicate, and the request it awaited is answered through its resumed
// session.
func TestReplicaShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Redis")
	}
	srv := redistest.Start(t, redistest.Options{})
	env := map[string]string{"TSLM_REDIS_URL": srv.URL()}
	a, b := startReplica(t, env, nil), startReplica(t, env, nil)
	host := func(r *replica) string { return strings.TrimPrefix(strings.TrimSuffix(r.internal, "/v1/ws"), "ws://") }
	p := startProxy(t, host(a))
	ctx := ctxT(t)
	pub := dial(t, b.internal)
	for _, ch := range []string{"feed", "rpc"} {
		if _, err := pub.Create(ctx, ch, client.ChannelOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	handling := make(chan struct{}, 1)
	serve(t, b, func(ctx context.Context, req responder.Request) (json.RawMessage, error) {
		handling <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return req.Data, nil
	}, "rpc")

	c := dial(t, p.url())
	s, err := c.Subscribe(ctx, "feed", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	answer := make(chan error, 1)
	go func() {
		got, err := c.Request(context.Background(), "rpc", "across")
		if err == nil && string(got) != `"across"` {
			err = fmt.Errorf("reply %s", got)
		}
		answer <- err
	}()
	<-handling
	waitFor(t, "the request's ack", func() bool { return client.AwaitedRequests(c) == 1 })

	const n = 200
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := pub.Publish(ctx, "feed", i); err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
		}
	}
	publish(0, n/2)
	for i := range 10 {
		if m := nextMessage(t, s); string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d: %s", i, m.Data)
		}
	}
	p.setTarget(host(b))
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	a.Shutdown(sctx) // 1001 to the client, which comes back to b
	cancel()
	go publish(n/2, n)
	for i := 10; i < n; i++ {
		if m := nextMessage(t, s); string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d has data %s: gap or duplicate", i, m.Data)
		}
	}
	close(release)
	select {
	case err := <-answer:
		if err != nil {
			t.Fatalf("request across the shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer 10s after the release")
	}
	if p.acceptCount() != 2 {
		t.Errorf("%d connections through the proxy, want 2", p.acceptCount())
	}
}
