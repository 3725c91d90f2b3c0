package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tslm/tslm/client"
)

func dial(t testing.TB, url string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithLogger(quietLogger()),
		client.WithBackoff(client.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: 0.5})}, opts...)
	c, err := client.Dial(ctxT(t), url, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next returns the subscription's next event, failing t after 10s.
func next(t testing.TB, s *client.Subscription) client.Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("events of %s closed: %v", s.Channel(), s.Err())
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("no event on %s for 10s", s.Channel())
	}
	return nil
}

func nextMessage(t testing.TB, s *client.Subscription) client.Message {
	t.Helper()
	ev := next(t, s)
	m, ok := ev.(client.Message)
	if !ok {
		t.Fatalf("event %#v, want a message", ev)
	}
	return m
}

func TestSubscribePublishRoundTrip(t *testing.T) {
	r := startReplica(t, nil, nil)
	pub := dial(t, r.internal)
	ctx := ctxT(t)
	created, err := pub.Create(ctx, "prices", client.ChannelOptions{MaxLen: 100, Retention: time.Hour})
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if created, err := pub.Create(ctx, "prices", client.ChannelOptions{}); err != nil || created {
		t.Fatalf("create again: created %v, err %v; want false, nil", created, err)
	}
	first, err := pub.Publish(ctx, "prices", map[string]float64{"bid": 1})
	if err != nil {
		t.Fatal(err)
	}

	sub := dial(t, r.public)
	s, err := sub.Subscribe(ctx, "prices", client.SubscribeOptions{Last: 10})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 2; i <= 4; i++ {
		id, err := pub.Publish(ctx, "prices", json.RawMessage(fmt.Sprintf(`{"bid":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for i, want := range append([]string{first}, ids...) {
		m := nextMessage(t, s)
		if m.ID != want || m.Channel != "prices" || string(m.Data) != fmt.Sprintf(`{"bid":%d}`, i+1) {
			t.Fatalf("message %d = %+v (%s), want id %s", i, m, m.Data, want)
		}
	}
	if s.LastID() != ids[2] {
		t.Errorf("LastID %s, want %s", s.LastID(), ids[2])
	}
	if _, err := sub.Subscribe(ctx, "prices", client.SubscribeOptions{}); !errors.Is(err, client.ErrBadRequest) {
		t.Errorf("second subscribe: %v, want ErrBadRequest", err)
	}
	// Closing ends the events; a new subscription of the channel works on
	// the same connection.
	s.Close()
	for range s.Events() {
	}
	if s.Err() != nil {
		t.Errorf("Err after Close: %v", s.Err())
	}
	s2, err := sub.Subscribe(ctx, "prices", client.SubscribeOptions{Since: ids[1]})
	if err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, s2); m.ID != ids[2] {
		t.Fatalf("since %s gave %s, want %s", ids[1], m.ID, ids[2])
	}
}

// TestReconnectNoGapNoDuplicate drops the subscriber's connection again
// and again while a publisher publishes: every message arrives once, in
// order.
func TestReconnectNoGapNoDuplicate(t *testing.T) {
	r := startReplica(t, nil, nil)
	p := startProxy(t, strings.TrimPrefix(strings.TrimSuffix(r.public, "/v1/ws"), "ws://"))
	pub := dial(t, r.internal)
	ctx := ctxT(t)
	if _, err := pub.Create(ctx, "ticks", client.ChannelOptions{}); err != nil {
		t.Fatal(err)
	}
	sub := dial(t, p.url())
	s, err := sub.Subscribe(ctx, "ticks", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	published := make(chan string, n)
	go func() {
		defer close(published)
		for i := range n {
			id, err := pub.Publish(ctx, "ticks", i)
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			published <- id
		}
	}()
	var want []string
	for i := range n {
		m := nextMessage(t, s)
		if string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d has data %s (id %s): gap or duplicate", i, m.Data, m.ID)
		}
		want = append(want, m.ID)
		if i%60 == 30 {
			before := p.acceptCount()
			p.drop()
			waitFor(t, "the client to reconnect", func() bool { return p.acceptCount() > before })
		}
	}
	i := 0
	for id := range published {
		if id != want[i] {
			t.Fatalf("message %d: got id %s, published %s", i, want[i], id)
		}
		i++
	}
	if p.acceptCount() < 5 {
		t.Errorf("%d connections through the proxy; the drops did not happen", p.acceptCount())
	}
	select {
	case ev := <-s.Events():
		t.Fatalf("extra event %#v", ev)
	default:
	}
}

// TestNotResumedAfterTrim: while the subscriber is away the backlog is
// trimmed past its last message; coming back it is told so, then gets
// the oldest messages held.
func TestNotResumedAfterTrim(t *testing.T) {
	r := startReplica(t, nil, nil)
	p := startProxy(t, strings.TrimPrefix(strings.TrimSuffix(r.public, "/v1/ws"), "ws://"))
	pub := dial(t, r.internal)
	ctx := ctxT(t)
	if _, err := pub.Create(ctx, "small", client.ChannelOptions{MaxLen: 3}); err != nil {
		t.Fatal(err)
	}
	sub := dial(t, p.url())
	s, err := sub.Subscribe(ctx, "small", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := pub.Publish(ctx, "small", 0)
	if m := nextMessage(t, s); m.ID != first {
		t.Fatalf("got %s, want %s", m.ID, first)
	}
	p.setDown(true)
	p.drop()
	var ids []string
	for i := 1; i <= 10; i++ {
		id, err := pub.Publish(ctx, "small", i)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	p.setDown(false)
	ev := next(t, s)
	nr, ok := ev.(client.NotResumed)
	if !ok || nr.Since != first || nr.Head != ids[9] || nr.Channel != "small" {
		t.Fatalf("event %#v, want NotResumed since %s head %s", ev, first, ids[9])
	}
	for _, want := range ids[7:] {
		if m := nextMessage(t, s); m.ID != want {
			t.Fatalf("after not-resumed got %s, want %s", m.ID, want)
		}
	}
	// A subscribe with a trimmed since says so too.
	s2, err := dial(t, r.public).Subscribe(ctx, "small", client.SubscribeOptions{Since: first})
	if err != nil {
		t.Fatal(err)
	}
	if ev, ok := next(t, s2).(client.NotResumed); !ok || ev.Since != first {
		t.Fatalf("event %#v, want NotResumed", ev)
	}
}

func TestDeletedEndsSubscription(t *testing.T) {
	r := startReplica(t, nil, nil)
	pub := dial(t, r.internal)
	ctx := ctxT(t)
	pub.Create(ctx, "gone", client.ChannelOptions{})
	s, err := dial(t, r.public).Subscribe(ctx, "gone", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := newRequest(ctx, "DELETE", r.api+"/v1/channels/gone")
	resp, err := httpDo(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("delete: %v %v", resp, err)
	}
	if ev := next(t, s); ev != (client.Deleted{Channel: "gone"}) {
		t.Fatalf("event %#v, want Deleted", ev)
	}
	if _, ok := <-s.Events(); ok {
		t.Fatal("events go on after Deleted")
	}
}

// TestGoroutinesEndAfterClose: a client's goroutines, reconnecting or
// not, are gone once Close returns and the gateway has let go.
func TestGoroutinesEndAfterClose(t *testing.T) {
	r := startReplica(t, nil, nil)
	p := startProxy(t, strings.TrimPrefix(strings.TrimSuffix(r.public, "/v1/ws"), "ws://"))
	ctx := ctxT(t)
	pub := dial(t, r.internal)
	pub.Create(ctx, "leak", client.ChannelOptions{})
	base := goroutines()
	for range 3 {
		c, err := client.Dial(ctx, p.url(), client.WithLogger(quietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Subscribe(ctx, "leak", client.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pub.Publish(ctx, "leak", 1)
		nextMessage(t, s)
		p.setDown(true)
		p.drop() // reconnecting when closed
		c.Close()
		p.setDown(false)
		if _, ok := <-s.Events(); ok {
			t.Fatal("events not closed by Close")
		}
		if !errors.Is(c.Err(), client.ErrClosed) {
			t.Fatalf("Err after Close: %v", c.Err())
		}
		if _, err := c.Publish(ctx, "leak", 1); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("publish after Close: %v", err)
		}
	}
	var now int
	waitFor(t, "goroutines to end", func() bool { now = goroutines(); return now <= base })
}

// TestConcurrentUse runs commands from many goroutines at once.
func TestConcurrentUse(t *testing.T) {
	r := startReplica(t, nil, nil)
	c := dial(t, r.internal)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			ch := fmt.Sprintf("c%d", g)
			if _, err := c.Create(ctx, ch, client.ChannelOptions{}); err != nil {
				t.Error(err)
				return
			}
			s, err := c.Subscribe(ctx, ch, client.SubscribeOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			for i := range 20 {
				if _, err := c.Publish(ctx, ch, i); err != nil {
					t.Error(err)
					return
				}
			}
			for i := range 20 {
				select {
				case ev := <-s.Events():
					if m, ok := ev.(client.Message); !ok || string(m.Data) != fmt.Sprint(i) {
						t.Errorf("%s: event %#v, want message %d", ch, ev, i)
						return
					}
				case <-ctx.Done():
					t.Error(ctx.Err())
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestIdempotencyKey: a publish repeated with its key stores one message,
// and both answers name it.
func TestIdempotencyKey(t *testing.T) {
	r := startReplica(t, nil, nil)
	c := dial(t, r.internal)
	ctx := ctxT(t)
	c.Create(ctx, "orders", client.ChannelOptions{})
	id1, err := c.Publish(ctx, "orders", 1, client.WithIdempotencyKey("order-1"))
	if err != nil {
		t.Fatal(err)
	}
	id2, err := c.Publish(ctx, "orders", 2, client.WithIdempotencyKey("order-1"))
	if err != nil || id2 != id1 {
		t.Fatalf("second publish with the key: %s, %v; want %s", id2, err, id1)
	}
	s, err := c.Subscribe(ctx, "orders", client.SubscribeOptions{Last: 10})
	if err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, s); m.ID != id1 || string(m.Data) != "1" {
		t.Fatalf("message %+v", m)
	}
	if _, err := c.Publish(ctx, "orders", 3); err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, s); string(m.Data) != "3" {
		t.Fatalf("after the duplicate got %s, want 3", m.Data)
	}
}
