package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// countingLog counts Range calls and records the bytes each Range
// returned. before, when set, runs before every Range with its number.
type countingLog struct {
	*backlog.Memory
	ranges atomic.Int64
	before func(call int64)

	mu        sync.Mutex
	pageBytes []int
}

func newCountingLog() *countingLog {
	return &countingLog{Memory: backlog.NewMemory(backlog.MemoryConfig{})}
}

func (l *countingLog) Range(ctx context.Context, channel string, after backlog.ID, limit int) (backlog.Page, error) {
	call := l.ranges.Add(1)
	if l.before != nil {
		l.before(call)
	}
	page, err := l.Memory.Range(ctx, channel, after, limit)
	l.record(page.Messages)
	return page, err
}

func (l *countingLog) record(msgs []backlog.Message) {
	n := 0
	for _, m := range msgs {
		n += len(m.Data)
	}
	l.mu.Lock()
	l.pageBytes = append(l.pageBytes, n)
	l.mu.Unlock()
}

func (l *countingLog) pages() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.pageBytes...)
}

// blockingSink records what it receives; its Replay blocks (honouring ctx,
// as the ws sink does) while hold is set, telling entered each time.
type blockingSink struct {
	*recorder
	entered chan struct{}
	mu      sync.Mutex
	hold    chan struct{} // nil: do not block
}

func newBlockingSink() *blockingSink {
	return &blockingSink{recorder: newRecorder(), entered: make(chan struct{}, 1), hold: make(chan struct{})}
}

func (b *blockingSink) Replay(ctx context.Context, p *broker.Publication) error {
	b.mu.Lock()
	hold := b.hold
	b.mu.Unlock()
	if hold != nil {
		select {
		case b.entered <- struct{}{}:
		default:
		}
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return b.recorder.Replay(ctx, p)
}

// release lets every Replay call through from now on.
func (b *blockingSink) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hold != nil {
		close(b.hold)
		b.hold = nil
	}
}

func waitChan(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestCloseStopsReplay: Close, called from another goroutine while a replay
// is blocked in its sink, is final: once it returns, the sink receives
// nothing more and no page is read.
func TestCloseStopsReplay(t *testing.T) {
	for _, tc := range []struct {
		name string
		from func(ids []backlog.ID) broker.From
	}{
		{"since", func(ids []backlog.ID) broker.From { return broker.From{Since: &ids[0]} }},
		{"last", func(ids []backlog.ID) broker.From { return broker.From{Last: len(ids)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := newCountingLog()
			h := broker.New(log, broker.Config{ReplayPage: 2})
			t.Cleanup(func() { h.Close(); log.Close() })
			create(t, h, "closing", 100)
			ids := publish(t, h, "closing", 10)
			sink := newBlockingSink()
			sub, _, err := h.Subscribe(t.Context(), "closing", tc.from(ids), sink)
			if err != nil {
				t.Fatal(err)
			}
			replayed := make(chan error, 1)
			go func() { replayed <- sub.Replay(context.Background()) }()
			waitChan(t, sink.entered, "the replay to reach the sink")

			closed := make(chan struct{})
			go func() { sub.Close(); close(closed) }()
			waitChan(t, closed, "Close to return")
			got, ranges := len(sink.snapshot()), log.ranges.Load()

			sink.release()
			var err2 error
			select {
			case err2 = <-replayed:
			case <-time.After(10 * time.Second):
				t.Fatal("Replay did not return after Close")
			}
			if !errors.Is(err2, broker.ErrUnsubscribed) {
				t.Errorf("Replay after Close = %v, want ErrUnsubscribed", err2)
			}
			publish(t, h, "closing", 3)
			if n := len(sink.snapshot()); n != got {
				t.Errorf("the sink received %d publications after Close returned", n-got)
			}
			if n := log.ranges.Load(); n != ranges {
				t.Errorf("%d pages were read after Close returned", n-ranges)
			}
		})
	}
}

// TestDeliveredCountsDeliveries: the delivered counter counts what sinks
// took, not the subscriptions a message was offered to.
func TestDeliveredCountsDeliveries(t *testing.T) {
	log := &pausedLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), release: make(chan struct{})}
	h := broker.New(log, broker.Config{})
	t.Cleanup(func() { h.Close(); log.Close() })
	create(t, h, "counted", 100)
	live := newRecorder()
	subscribe(t, h, "counted", broker.From{}, live) // the reader starts at 0-0, held back
	refusing := newRecorder()
	refusing.full = true
	subscribe(t, h, "counted", broker.From{}, refusing)
	// Subscribed, not yet replaying: what it is offered is buffered.
	buffering, _, err := h.Subscribe(t.Context(), "counted", broker.From{}, newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	defer buffering.Close()
	ids := publish(t, h, "counted", 3)
	// Replays ids[2] and is then ahead of the reader: ids[:3] are not news to it.
	ahead := newRecorder()
	subscribe(t, h, "counted", broker.From{Since: &ids[1]}, ahead)
	closed := newRecorder()
	sub, _ := subscribe(t, h, "counted", broker.From{}, closed)
	sub.Close()

	close(log.release)
	live.waitFor(t, 3)
	h.Close() // waits for the reader: every count is in
	if got, want := h.Stats().Delivered, int64(3+1); got != want {
		t.Errorf("delivered = %d, want %d (3 live deliveries and 1 replayed)", got, want)
	}
	if n := len(refusing.snapshot()) + len(closed.snapshot()); n != 0 {
		t.Errorf("refusing and closed sinks got %d publications", n)
	}
	checkSequence(t, ahead.snapshot(), ids[2:])
}

// gatedSink records what it receives; a replayed publication whose ID has
// a gate waits (honouring ctx) until the gate is opened.
type gatedSink struct {
	*recorder
	entered chan backlog.ID
	mu      sync.Mutex
	gates   map[backlog.ID]chan struct{}
}

func newGatedSink() *gatedSink {
	return &gatedSink{recorder: newRecorder(), entered: make(chan backlog.ID, 16), gates: make(map[backlog.ID]chan struct{})}
}

func (g *gatedSink) gate(id backlog.ID) (open func()) {
	c := make(chan struct{})
	g.mu.Lock()
	g.gates[id] = c
	g.mu.Unlock()
	return func() { close(c) }
}

func (g *gatedSink) Replay(ctx context.Context, p *broker.Publication) error {
	g.mu.Lock()
	c := g.gates[p.ID]
	g.mu.Unlock()
	if c != nil && !p.Gap {
		g.entered <- p.ID
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.recorder.Replay(ctx, p)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReplayMergesBufferedLive runs the normal merge deterministically: the
// replay is held in its sink while fewer than ReplayBuffer live messages
// arrive, some of which its first page read too; released, it sends each
// message once, in order, without a gap and without re-reading.
func TestReplayMergesBufferedLive(t *testing.T) {
	log := newCountingLog()
	h := broker.New(log, broker.Config{})
	t.Cleanup(func() { h.Close(); log.Close() })
	create(t, h, "merge", 100)
	ids := publish(t, h, "merge", 5)
	// Published after the subscription registered and before its first
	// page is read: both the page and the live buffer have them.
	var both []backlog.ID
	log.before = func(call int64) {
		if call == 1 {
			both = publish(t, h, "merge", 3)
		}
	}
	sink := newGatedSink()
	open := sink.gate(ids[2])
	sub, res, err := h.Subscribe(t.Context(), "merge", broker.From{Since: &ids[1]}, sink)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if !res.Resumed {
		t.Fatalf("since a held id: %+v", res)
	}
	replayed := make(chan error, 1)
	go func() { replayed <- sub.Replay(t.Context()) }()
	<-sink.entered
	live := publish(t, h, "merge", 4)
	waitUntil(t, "the live messages are buffered", func() bool { return broker.BufferLen(sub) == len(both)+len(live) })
	open()
	if err := <-replayed; err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]backlog.ID(nil), ids[2:]...), both...), live...)
	checkSequence(t, sink.snapshot(), want)
	if st := h.Stats(); st.ReplayOverflows != 0 || st.Gaps != 0 {
		t.Errorf("stats %+v: the merge took the overflow path or reported a gap", st)
	}
	if n := log.ranges.Load(); n != 1 {
		t.Errorf("the replay read %d pages, want only the first", n)
	}
	more := publish(t, h, "merge", 1)
	checkSequence(t, sink.waitFor(t, len(want)+1), append(want, more...))
}

// TestReplayOvertakenGivesUp: live traffic overflows the replay buffer
// twice in a row while the sink is held; with ReplayOvertakes 2 the replay
// ends with ErrSlowConsumer, having sent everything up to then in order.
func TestReplayOvertakenGivesUp(t *testing.T) {
	h, _ := newHub(t, broker.Config{ReplayBuffer: 2, ReplayOvertakes: 2})
	create(t, h, "overtaken", 100)
	ids := publish(t, h, "overtaken", 5)
	sink := newGatedSink()
	open := sink.gate(ids[1])
	sub, _, err := h.Subscribe(t.Context(), "overtaken", broker.From{Since: &ids[0]}, sink)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	replayed := make(chan error, 1)
	go func() { replayed <- sub.Replay(t.Context()) }()

	var sent []backlog.ID
	for round := range 2 {
		<-sink.entered
		live := publish(t, h, "overtaken", 3) // one more than the buffer holds
		waitUntil(t, fmt.Sprintf("overflow #%d", round+1), func() bool { return broker.Overflowed(sub) })
		sent = append(sent, live...)
		next := open
		if round == 0 {
			open = sink.gate(live[0]) // hold the re-read too
		}
		next()
	}
	if err := <-replayed; !errors.Is(err, broker.ErrSlowConsumer) {
		t.Fatalf("Replay = %v, want ErrSlowConsumer", err)
	}
	// Progress: the backlog part and the first re-read, not the last live.
	checkSequence(t, sink.snapshot(), append(append([]backlog.ID(nil), ids[1:]...), sent[:3]...))
	if n := h.Stats().ReplayOverflows; n != 2 {
		t.Errorf("replay overflows = %d, want 2", n)
	}
}

// TestReplayPagesBoundedInBytes: a replay of large messages reads and holds
// pages of about ReplayPageBytes, whatever ReplayPage allows, and releases
// its budget as it goes.
func TestReplayPagesBoundedInBytes(t *testing.T) {
	const pageBytes, msgBytes, total = 64 << 10, 16 << 10, 40
	for _, tc := range []struct {
		name string
		from func(ids []backlog.ID) broker.From
	}{
		{"since", func([]backlog.ID) broker.From { return broker.From{Since: &backlog.Zero} }},
		{"last", func([]backlog.ID) broker.From { return broker.From{Last: total} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := newCountingLog()
			h := broker.New(log, broker.Config{ReplayPageBytes: pageBytes})
			t.Cleanup(func() { h.Close(); log.Close() })
			create(t, h, "large", 1000)
			payload := []byte(`"` + strings.Repeat("x", msgBytes-2) + `"`)
			var ids []backlog.ID
			for range total {
				id, err := h.Publish(t.Context(), "large", payload)
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			rec := newRecorder()
			subscribe(t, h, "large", tc.from(ids), rec)
			checkSequence(t, rec.snapshot(), ids)
			pages := log.pages()
			for i, n := range pages {
				if n > pageBytes+msgBytes {
					t.Errorf("page %d of %d held %d bytes, want at most %d + one message", i, len(pages), n, pageBytes)
				}
			}
			if st := h.Stats(); st.ReplayBytes != 0 {
				t.Errorf("replay budget in use after the replay: %d bytes", st.ReplayBytes)
			}
		})
	}
}

// TestReplayBudgetClamps: messages larger than the whole replay budget are
// still replayed, each page taking the budget for itself.
func TestReplayBudgetClamps(t *testing.T) {
	h, _ := newHub(t, broker.Config{ReplayBytes: 1000})
	create(t, h, "huge", 100)
	var ids []backlog.ID
	for range 5 {
		id, err := h.Publish(t.Context(), "huge", []byte(`"`+strings.Repeat("y", 4000)+`"`))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rec := newRecorder()
	subscribe(t, h, "huge", broker.From{Last: 5}, rec)
	checkSequence(t, rec.snapshot(), ids)
	if st := h.Stats(); st.ReplayBytes != 0 || st.ReplayRefused != 0 {
		t.Errorf("stats after the replay: %+v", st)
	}
}

// TestLastReportsTrimBeforeFirstPage: the first of the newest n is trimmed
// between finding it and reading it: the replay starts with a gap.
func TestLastReportsTrimBeforeFirstPage(t *testing.T) {
	log := newCountingLog()
	h := broker.New(log, broker.Config{})
	t.Cleanup(func() { h.Close(); log.Close() })
	create(t, h, "trimmed", 5)
	ids := publish(t, h, "trimmed", 5)
	var more []backlog.ID
	log.before = func(call int64) {
		if call == 1 {
			more = publish(t, h, "trimmed", 3) // trims ids[:3]
		}
	}
	rec := newRecorder()
	subscribe(t, h, "trimmed", broker.From{Last: 3}, rec) // ids[2:]
	got := rec.snapshot()
	if len(got) == 0 || !got[0].Gap || got[0].ID != ids[2].Prev() {
		t.Fatalf("first publication %+v, want a gap before %v", got[0], ids[2])
	}
	checkSequence(t, got[1:], append(append([]backlog.ID(nil), ids[3:]...), more...))
}
