package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// checkDeletedLast asserts that got ends with the one deleted notice.
func checkDeletedLast(t *testing.T, got []*broker.Publication, ch string) {
	t.Helper()
	for i, p := range got {
		if p.Deleted != (i == len(got)-1) {
			t.Fatalf("publication #%d of %d: deleted %v; want the notice last and only once", i, len(got), p.Deleted)
		}
	}
	if last := got[len(got)-1]; last.Channel != ch || !last.ID.IsZero() || last.Data != nil {
		t.Fatalf("deleted notice = %+v", last)
	}
}

// waitEnded polls until sub ended.
func waitEnded(t *testing.T, sub *broker.Subscription) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !sub.Ended() {
		if time.Now().After(deadline) {
			t.Fatal("the subscription did not end")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeleteEndsSubscriptions(t *testing.T) {
	h, _ := newHub(t, broker.Config{})
	create(t, h, "doomed", 100)
	ids := publish(t, h, "doomed", 2)
	live, replayed := newRecorder(), newRecorder()
	liveSub, _ := subscribe(t, h, "doomed", broker.From{}, live)
	replayedSub, _ := subscribe(t, h, "doomed", broker.From{Since: &backlog.Zero}, replayed)
	more := publish(t, h, "doomed", 1)
	live.waitFor(t, 1)
	replayed.waitFor(t, 3)

	if err := h.Delete(t.Context(), "doomed"); err != nil {
		t.Fatal(err)
	}
	checkDeletedLast(t, live.waitFor(t, 2), "doomed")
	checkDeletedLast(t, replayed.waitFor(t, 4), "doomed")
	checkSequence(t, replayed.snapshot()[:3], append(ids, more...))
	waitEnded(t, liveSub)
	waitEnded(t, replayedSub)
	if err := h.Delete(t.Context(), "doomed"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}

	// Created again while the old subscriptions are still open (their
	// owners have not closed them): a new subscriber follows the new
	// channel, and the old ones hear nothing of it.
	create(t, h, "doomed", 100)
	fresh := newRecorder()
	subscribe(t, h, "doomed", broker.From{}, fresh)
	after := publish(t, h, "doomed", 2)
	checkSequence(t, fresh.waitFor(t, 2), after)
	if n := len(live.snapshot()); n != 2 {
		t.Errorf("an ended subscription received %d publications, want 2", n)
	}
}

// replayGate is a Sink whose replay stops at its first message until open
// is closed.
type replayGate struct {
	*recorder
	first, open chan struct{}
}

func (g *replayGate) Replay(ctx context.Context, p *broker.Publication) error {
	select {
	case g.first <- struct{}{}:
		<-g.open
	default:
	}
	return g.recorder.Replay(ctx, p)
}

// TestDeleteDuringReplay: a channel deleted while a subscription replays
// it ends the replay with the deleted notice, whether the replay learns of
// it from its next page or from the reader.
func TestDeleteDuringReplay(t *testing.T) {
	h, _ := newHub(t, broker.Config{ReplayPage: 2})
	create(t, h, "midway", 100)
	publish(t, h, "midway", 5)
	g := &replayGate{recorder: newRecorder(), first: make(chan struct{}, 1), open: make(chan struct{})}
	sub, _, err := h.Subscribe(t.Context(), "midway", broker.From{Since: &backlog.Zero}, g)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	done := make(chan error, 1)
	go func() { done <- sub.Replay(t.Context()) }()
	<-g.first
	if err := h.Delete(t.Context(), "midway"); err != nil {
		t.Fatal(err)
	}
	close(g.open)
	if err := <-done; !errors.Is(err, broker.ErrUnsubscribed) {
		t.Fatalf("Replay = %v, want ErrUnsubscribed", err)
	}
	got := g.snapshot()
	checkDeletedLast(t, got, "midway")
	if len(got) != 3 {
		t.Errorf("got %d publications, want the first page (2) and the notice", len(got))
	}
	if !sub.Ended() {
		t.Error("the subscription did not end")
	}
}

func TestPublishIdempotent(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	log := backlog.NewMemory(backlog.MemoryConfig{Now: func() time.Time { return now }})
	h := broker.New(log, broker.Config{IdempotencyWindow: time.Hour})
	t.Cleanup(func() { h.Close(); log.Close() })
	create(t, h, "once", 100)
	first, dup, err := h.PublishIdempotent(t.Context(), "once", []byte("1"), "k")
	if err != nil || dup {
		t.Fatalf("first publish = %v, %v", dup, err)
	}
	now = now.Add(time.Hour - time.Millisecond)
	if id, dup, err := h.PublishIdempotent(t.Context(), "once", []byte("2"), "k"); err != nil || !dup || id != first {
		t.Fatalf("retry within the window = %v, %v, %v; want %v, true", id, dup, err, first)
	}
	now = now.Add(time.Millisecond)
	if id, dup, err := h.PublishIdempotent(t.Context(), "once", []byte("2"), "k"); err != nil || dup || id == first {
		t.Fatalf("publish after the window = %v, %v, %v; want a new id", id, dup, err)
	}
	for _, key := range []string{"", "a b", "tab\t", strings.Repeat("k", 129), "é"} {
		_, _, err := h.PublishIdempotent(t.Context(), "once", []byte("1"), key)
		if !errors.Is(err, broker.ErrBadKey) || broker.ErrorOf(err).Code != broker.CodeBadRequest {
			t.Errorf("key %q: %v, want ErrBadKey (bad_request)", key, err)
		}
	}
	if _, _, err := h.PublishIdempotent(t.Context(), "once", []byte("1"), strings.Repeat("k", 128)); err != nil {
		t.Errorf("128-byte key: %v", err)
	}
}

func TestListValidatesPrefix(t *testing.T) {
	h, _ := newHub(t, broker.Config{})
	for _, name := range []string{"b", "a.1", "a.2"} {
		create(t, h, name, 10)
	}
	names, next, err := h.List(t.Context(), "a.", "", 10)
	if err != nil || next != "" || strings.Join(names, ",") != "a.1,a.2" {
		t.Errorf("List(a.) = %v, %q, %v", names, next, err)
	}
	for _, prefix := range []string{"a/", "{", strings.Repeat("a", 129)} {
		if _, _, err := h.List(t.Context(), prefix, "", 10); !errors.Is(err, broker.ErrBadPrefix) || broker.ErrorOf(err).Code != broker.CodeBadRequest {
			t.Errorf("prefix %q: %v, want ErrBadPrefix", prefix, err)
		}
	}
	if _, _, err := h.List(t.Context(), "", "not a cursor", 10); broker.ErrorOf(err).Code != broker.CodeBadRequest {
		t.Errorf("bad cursor: %v, want bad_request", err)
	}
}

// TestChannelDefaults: a channel created without options takes what
// ChannelDefaults gives for its name, each zero result the hub's default;
// options the creator names win.
func TestChannelDefaults(t *testing.T) {
	h, _ := newHub(t, broker.Config{DefaultMaxLen: 50, DefaultRetention: time.Hour,
		ChannelDefaults: func(ch string) (int64, time.Duration) {
			switch {
			case strings.HasPrefix(ch, "prices."):
				return 7, time.Minute
			case strings.HasPrefix(ch, "len."):
				return 9, 0
			case strings.HasPrefix(ch, "ret."):
				return 0, 2 * time.Minute
			}
			return 0, 0
		}})
	maxLen, retention := int64(3), 5*time.Second
	cases := []struct {
		channel   string
		opts      broker.ChannelOptions
		maxLen    int64
		retention time.Duration
	}{
		{"prices.eur", broker.ChannelOptions{}, 7, time.Minute},
		{"len.a", broker.ChannelOptions{}, 9, time.Hour},
		{"ret.a", broker.ChannelOptions{}, 50, 2 * time.Minute},
		{"other", broker.ChannelOptions{}, 50, time.Hour},
		{"prices.usd", broker.ChannelOptions{MaxLen: &maxLen}, 3, time.Minute},
		{"prices.gbp", broker.ChannelOptions{Retention: &retention}, 7, 5 * time.Second},
	}
	for _, c := range cases {
		if _, err := h.Create(t.Context(), c.channel, c.opts); err != nil {
			t.Fatalf("create %s: %v", c.channel, err)
		}
		info, err := h.Info(t.Context(), c.channel)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.MaxLen != c.maxLen || info.Config.Retention != c.retention {
			t.Errorf("%s: max_len %d retention %s, want %d and %s", c.channel, info.Config.MaxLen, info.Config.Retention, c.maxLen, c.retention)
		}
	}
}
