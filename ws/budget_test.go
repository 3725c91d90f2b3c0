package ws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestSendBudget(t *testing.T) {
	b := NewSendBudget(10)
	steps := []struct {
		acquire, release int
		want             bool
		used             int64
	}{
		{acquire: 4, want: true, used: 4},
		{acquire: 6, want: true, used: 10}, // exactly the limit
		{acquire: 1, want: false, used: 10},
		{release: 4, used: 6},
		{acquire: 5, want: false, used: 6}, // a refusal takes nothing
		{acquire: 4, want: true, used: 10},
		{release: 10, used: 0},
	}
	for i, s := range steps {
		if s.release > 0 {
			b.release(s.release)
		} else if got := b.acquire(s.acquire); got != s.want {
			t.Errorf("step %d: acquire(%d) = %v, want %v", i, s.acquire, got, s.want)
		}
		if got := b.Used(); got != s.used {
			t.Errorf("step %d: Used() = %d, want %d", i, got, s.used)
		}
	}

	var none *SendBudget
	if !none.acquire(1 << 40) {
		t.Error("the nil budget refused")
	}
	none.release(1 << 40) // no panic
	unbounded := NewSendBudget(0)
	if !unbounded.acquire(1<<40) || unbounded.Used() != 1<<40 {
		t.Errorf("NewSendBudget(0) refused or did not count: used %d", unbounded.Used())
	}
}

// TestSendQueueBudget: queues sharing a budget refuse, with errBudget, a
// frame that fits their own limits but not the budget; written frames and
// released queues give their bytes back.
func TestSendQueueBudget(t *testing.T) {
	b := NewSendBudget(10)
	q1, q2 := newSendQueue(100, 100, b), newSendQueue(100, 100, b)
	if err := q1.offer(make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	if err := q2.offer(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := q2.offer([]byte("x")); !errors.Is(err, errBudget) {
		t.Fatalf("offer past the budget = %v, want errBudget", err)
	}
	if q2.held != 1 || q2.bytes != 4 {
		t.Errorf("a refused frame was counted: %d frames, %d bytes", q2.held, q2.bytes)
	}

	// q1's writer writes its frame: its bytes go back to the budget.
	batch := q1.take(nil)
	q1.done(len(batch), len(batch[0].frame))
	if got := b.Used(); got != 4 {
		t.Errorf("Used() after q1's write = %d, want 4", got)
	}
	if err := q2.offer(make([]byte, 6)); err != nil {
		t.Fatalf("offer after room was made = %v", err)
	}

	// The queue's own limit is checked first, and named as such.
	full := newSendQueue(1, 100, NewSendBudget(0))
	full.offer([]byte("a"))
	if err := full.offer([]byte("b")); !errors.Is(err, errQueueFull) {
		t.Errorf("offer to a full queue = %v, want errQueueFull", err)
	}
	// The budget bounds memory: no frame is too big for an empty queue,
	// but one bigger than the budget never fits.
	if err := newSendQueue(10, 1, b).offer(make([]byte, 11)); !errors.Is(err, errBudget) {
		t.Errorf("frame over the whole budget = %v, want errBudget", err)
	}

	// release gives back what is held, taken frames included, once.
	q2.take(nil)
	q2.offer([]byte("z")) // swallowed: no room (4+6 = 10 used)
	q2.release()
	if got := b.Used(); got != 0 {
		t.Errorf("Used() after release = %d, want 0", got)
	}
	if err := q2.offer([]byte("late")); err != nil || b.Used() != 0 {
		t.Errorf("offer after release = %v, used %d; want swallowed, nothing counted", err, b.Used())
	}
}

func TestSendQueuePushBudget(t *testing.T) {
	const patience = 50 * time.Millisecond
	t.Run("empty queue gives up at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := NewSendBudget(10)
			b.acquire(10) // another connection holds it all
			q := newSendQueue(100, 100, b)
			start := time.Now()
			if err := q.push(context.Background(), []byte("a"), patience); !errors.Is(err, errBudget) {
				t.Fatalf("push = %v, want errBudget", err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("push waited %v for room only others could make", d)
			}
		})
	})
	t.Run("own writes make room", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := NewSendBudget(10)
			q := newSendQueue(100, 100, b)
			q.offer(make([]byte, 8))
			done := make(chan error, 1)
			go func() { done <- q.push(context.Background(), make([]byte, 5), time.Minute) }()
			synctest.Wait()
			select {
			case err := <-done:
				t.Fatalf("push returned %v without waiting", err)
			default:
			}
			batch := q.take(nil)
			q.done(1, len(batch[0].frame))
			if err := <-done; err != nil {
				t.Fatalf("push = %v after the writer wrote, want nil", err)
			}
			if got := b.Used(); got != 5 {
				t.Errorf("Used() = %d, want 5", got)
			}
		})
	})
	t.Run("no progress gives up with errBudget", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := NewSendBudget(10)
			q := newSendQueue(100, 100, b)
			q.offer(make([]byte, 8))
			start := time.Now()
			if err := q.push(context.Background(), make([]byte, 5), patience); !errors.Is(err, errBudget) {
				t.Fatalf("push = %v, want errBudget", err)
			}
			if d := time.Since(start); d != patience {
				t.Errorf("gave up after %v, want %v", d, patience)
			}
		})
	})
}

// smallBuffers shrinks a server-side socket's kernel buffers, so that
// what a client does not read soon stays in the server's send queue
// instead of the socket. (Not the client's: on loopback a window far below
// the segment size makes reading crawl once the client starts.)
func smallBuffers(c net.Conn) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
		tc.SetWriteBuffer(4096)
	}
	return c
}

// publishTaken publishes one message to channel and waits until the hub
// has handed it to its subscriber, or the subscriber was closed for the
// budget.
func publishTaken(t *testing.T, ts *testServer, channel string, payload []byte) string {
	t.Helper()
	before, closes := ts.hub.Stats().Delivered, ts.srv.Stats().Closes[CodeBudget]
	id, err := ts.hub.Publish(context.Background(), channel, payload)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message taken or refused", func() bool {
		return ts.hub.Stats().Delivered > before || ts.srv.Stats().Closes[CodeBudget] > closes
	})
	return id.String()
}

// TestSendBudgetCloses4001: two clients, neither reading, each within its
// own send queue limit, whose queues together exceed the budget: the one
// whose frame no longer fits is closed with 4001; the other keeps
// everything, and once both are gone the budget is back to zero.
func TestSendBudgetCloses4001(t *testing.T) {
	const budgetBytes = 100 << 10
	budget := NewSendBudget(budgetBytes)
	ts := startServerWith(t, Config{Allow: OpAll, SendQueueFrames: 10_000, SendQueueBytes: 1 << 20, SendBudget: budget},
		serverOptions{conn: smallBuffers})
	ts.create(t, "a", 0)
	ts.create(t, "b", 0)
	a, b := ts.dial(t), ts.dial(t)
	a.subscribe("a", nil)
	b.subscribe("b", nil)
	payload := fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 10<<10))

	// a's queue takes over half the budget.
	var aIDs []string
	for budget.Used() < budgetBytes*6/10 {
		if len(aIDs) == 500 {
			t.Fatalf("a's queue holds %d bytes after %d messages", budget.Used(), len(aIDs))
		}
		aIDs = append(aIDs, publishTaken(t, ts, "a", payload))
	}
	if st := ts.srv.Stats(); st.Closes[CodeBudget] != 0 {
		t.Fatalf("a closed on its own: %v", st.Closes)
	}
	// b's queue gets what is left, then one frame too many.
	for i := 0; ts.srv.Stats().Closes[CodeBudget] == 0; i++ {
		if i == 500 {
			t.Fatalf("b not closed after %d messages; budget used %d", i, budget.Used())
		}
		publishTaken(t, ts, "b", payload)
	}
	if used := budget.Used(); used > budgetBytes {
		t.Errorf("budget used %d, over its limit %d", used, budgetBytes)
	}
	b.expectClose(CodeBudget)

	// a lost nothing, and is still served.
	if got := a.messages("a", len(aIDs)); strings.Join(got, ",") != strings.Join(aIDs, ",") {
		t.Fatalf("a received %v, want %v", got, aIDs)
	}
	a.roundTrip()
	waitFor(t, "b gone", func() bool { return ts.srv.Stats().Open == 1 })
	st := ts.srv.Stats()
	if st.Closes[CodeBudget] != 1 || st.Closes[CodeSlowConsumer] != 0 || st.Open != 1 {
		t.Errorf("closes %v, %d open; want one 4001 and a still open", st.Closes, st.Open)
	}
	waitFor(t, "the budget back to zero after a read everything", func() bool { return budget.Used() == 0 })

	// A connection that ends with frames queued gives them back too. (A
	// new one: a's socket buffers have grown while it read.)
	a.ws.Close()
	waitFor(t, "a gone", func() bool { return ts.srv.Stats().Open == 0 })
	c := ts.dial(t)
	c.subscribe("a", nil)
	for i := 0; budget.Used() < 30<<10; i++ {
		if i == 500 {
			t.Fatalf("c's queue holds %d bytes after %d messages", budget.Used(), i)
		}
		publishTaken(t, ts, "a", payload)
	}
	c.ws.Close()
	waitFor(t, "c gone", func() bool { return ts.srv.Stats().Open == 0 })
	if got := budget.Used(); got != 0 {
		t.Errorf("budget used %d after every connection closed, want 0", got)
	}
}

// TestReplayPastBudget: a replay (or an answer) for which the budget has
// no room, while the connection's own queue is empty, closes it with 4001
// at once: only other connections could make room.
func TestReplayPastBudget(t *testing.T) {
	const budgetBytes = 100 << 10
	budget := NewSendBudget(budgetBytes)
	ts := startServerWith(t, Config{Allow: OpAll, SendQueueFrames: 10_000, SendQueueBytes: 1 << 20, SendBudget: budget},
		serverOptions{conn: smallBuffers})
	ts.create(t, "hog", 0)
	ts.create(t, "big", 0)
	for range 5 {
		if _, err := ts.hub.Publish(context.Background(), "big", fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 20<<10))); err != nil {
			t.Fatal(err)
		}
	}
	hog := ts.dial(t)
	hog.subscribe("hog", nil)
	small := fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 1<<10))
	var hogIDs []string
	for budget.Used() < budgetBytes-10<<10 {
		if len(hogIDs) == 2000 {
			t.Fatalf("the hog's queue holds %d bytes after %d messages", budget.Used(), len(hogIDs))
		}
		hogIDs = append(hogIDs, publishTaken(t, ts, "hog", small))
	}

	c := ts.dial(t)
	c.subscribe("big", map[string]any{"last": 5})
	c.expectClose(CodeBudget)
	if got := hog.messages("hog", len(hogIDs)); strings.Join(got, ",") != strings.Join(hogIDs, ",") {
		t.Fatalf("the hog received %v, want %v", got, hogIDs)
	}
	hog.roundTrip()
	hog.ws.Close()
	waitFor(t, "every connection gone", func() bool { return ts.srv.Stats().Open == 0 })
	if got := budget.Used(); got != 0 {
		t.Errorf("budget used %d after every connection closed, want 0", got)
	}
}

// TestSendBudgetNoLeak: many connections, some reading, some not, some
// closed by the budget, some by their clients mid-stream: when all are
// gone, the budget is back to exactly zero. Run with -race.
func TestSendBudgetNoLeak(t *testing.T) {
	budget := NewSendBudget(64 << 10)
	ts := startServerWith(t, Config{Allow: OpAll, SendQueueBytes: 32 << 10, SendBudget: budget}, serverOptions{conn: smallBuffers})
	ts.create(t, "c", 0)
	var readers sync.WaitGroup
	var clients []*client
	for i := range 8 {
		c := ts.dial(t)
		c.subscribe("c", nil)
		clients = append(clients, c)
		if i%2 == 0 {
			readers.Go(func() {
				for {
					if _, err := c.next(readTimeout); err != nil {
						return
					}
				}
			})
		}
	}
	payload := fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 2<<10))
	for i := range 200 {
		if _, err := ts.hub.Publish(context.Background(), "c", payload); err != nil {
			t.Fatal(err)
		}
		if i == 100 {
			clients[1].ws.Close() // a client that leaves mid-stream
		}
	}
	waitFor(t, "a budget close", func() bool { return ts.srv.Stats().Closes[CodeBudget] > 0 })
	for _, c := range clients {
		c.ws.Close()
	}
	readers.Wait()
	waitFor(t, "every connection gone", func() bool { return ts.srv.Stats().Open == 0 })
	if got := budget.Used(); got != 0 {
		t.Errorf("budget used %d after every connection closed, want 0", got)
	}
}
