package ws

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func frames(sizes ...int) [][]byte {
	out := make([][]byte, len(sizes))
	for i, n := range sizes {
		out[i] = []byte(strings.Repeat(string(rune('a'+i%26)), n))
	}
	return out
}

func TestSendQueueOffer(t *testing.T) {
	tests := []struct {
		name                string
		maxFrames, maxBytes int
		sizes               []int
		want                []bool // offer's answer per frame
	}{
		{name: "up to the frame limit", maxFrames: 3, maxBytes: 100, sizes: []int{1, 1, 1, 1}, want: []bool{true, true, true, false}},
		{name: "exactly the byte limit", maxFrames: 10, maxBytes: 10, sizes: []int{4, 6, 1}, want: []bool{true, true, false}},
		{name: "one byte over", maxFrames: 10, maxBytes: 10, sizes: []int{4, 7, 6}, want: []bool{true, false, true}},
		{name: "oversized frame enters an empty queue", maxFrames: 10, maxBytes: 10, sizes: []int{11, 1}, want: []bool{true, false}},
		{name: "oversized frame waits for an empty queue", maxFrames: 10, maxBytes: 10, sizes: []int{1, 11}, want: []bool{true, false}},
		{name: "empty frames count against frames", maxFrames: 2, maxBytes: 10, sizes: []int{0, 0, 0}, want: []bool{true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newSendQueue(tt.maxFrames, tt.maxBytes, nil)
			var accepted [][]byte
			for i, f := range frames(tt.sizes...) {
				if got := q.offer(f) == nil; got != tt.want[i] {
					t.Fatalf("offer #%d (%d bytes) = %v, want %v", i, len(f), got, tt.want[i])
				} else if got {
					accepted = append(accepted, f)
				}
			}
			select {
			case <-q.ready:
			default:
				t.Fatal("ready not signalled after an offer")
			}
			got := q.take(nil)
			if len(got) != len(accepted) {
				t.Fatalf("take returned %d frames, want %d", len(got), len(accepted))
			}
			for i := range got {
				if string(got[i].frame) != string(accepted[i]) {
					t.Errorf("frame %d = %q, want %q (order kept)", i, got[i], accepted[i])
				}
			}
			// Written, the frames no longer count: the limits apply afresh.
			q.done(len(got), q.bytes)
			if q.bytes != 0 || q.held != 0 || len(q.frames) != 0 {
				t.Errorf("after take and done: %d frames waiting, %d held, %d bytes; want none", len(q.frames), q.held, q.bytes)
			}
			if q.offer(make([]byte, tt.maxBytes)) != nil {
				t.Error("an emptied queue refused a frame of maxBytes")
			}
		})
	}
}

func TestSendQueueTake(t *testing.T) {
	q := newSendQueue(10, 100, nil)
	if got := q.take(nil); len(got) != 0 {
		t.Errorf("take of an empty queue returned %d frames", len(got))
	}
	q.offer([]byte("a"))
	q.offer([]byte("b"))
	dst := make([]queued, 0, 8)
	got := q.take(dst)
	if len(got) != 2 || &got[:1][0] != &dst[:1][0] {
		t.Errorf("take returned %d frames in a new array, want 2 in dst's", len(got))
	}
	select {
	case <-q.space:
		t.Error("take signalled space: taken frames are not written yet")
	default:
	}
	q.done(1, 1)
	select {
	case <-q.space:
	default:
		t.Error("done did not signal space")
	}
}

// TestSendQueueGivesRoomBack: after a burst (a replay, a reconnect storm)
// neither the drained queue nor the writer's recycled batch keeps the
// room it grew to, nor any reference to a frame written; a small batch
// keeps its array, so a steady trickle allocates none.
func TestSendQueueGivesRoomBack(t *testing.T) {
	q := newSendQueue(1000, 1<<20, nil)
	for _, f := range frames(make([]int, 200)...) {
		if err := q.offer(f); err != nil {
			t.Fatal(err)
		}
	}
	batch := q.take(nil)
	if len(batch) != 200 {
		t.Fatalf("took %d frames, want 200", len(batch))
	}
	if cap(q.frames) > keptFrames {
		t.Errorf("the drained queue keeps room for %d frames, want at most %d", cap(q.frames), keptFrames)
	}
	q.done(200, 0)
	if batch = recycled(batch); cap(batch) > keptFrames {
		t.Errorf("the written batch keeps room for %d frames, want at most %d", cap(batch), keptFrames)
	}

	small := make([]queued, 3, keptFrames)
	small[0].frame = []byte("x")
	kept := recycled(small)
	if cap(kept) != keptFrames || len(kept) != 0 || small[0].frame != nil {
		t.Errorf("a small batch: cap %d len %d, first frame %q; want its array kept, emptied and cleared", cap(kept), len(kept), small[0].frame)
	}
}

// TestSendQueueHeldUntilDone: taken frames count against both limits until
// the writer reports them written.
func TestSendQueueHeldUntilDone(t *testing.T) {
	tests := []struct {
		name                string
		maxFrames, maxBytes int
	}{
		{"frame limit", 2, 100},
		{"byte limit", 100, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newSendQueue(tt.maxFrames, tt.maxBytes, nil)
			for _, f := range frames(1, 1) {
				if q.offer(f) != nil {
					t.Fatal("offer within the limits refused")
				}
			}
			batch := q.take(nil)
			if q.offer([]byte("c")) == nil {
				t.Fatal("offer accepted while the taken batch still fills the queue")
			}
			q.done(1, len(batch[0].frame))
			if q.offer([]byte("c")) != nil {
				t.Fatal("offer refused after one frame was written")
			}
			if q.offer([]byte("d")) == nil {
				t.Fatal("offer accepted past the limit")
			}
		})
	}
}

func TestSendQueuePush(t *testing.T) {
	const patience = 50 * time.Millisecond
	full := func(t *testing.T) *sendQueue {
		q := newSendQueue(1, 100, nil)
		if q.offer([]byte("x")) != nil {
			t.Fatal("offer to an empty queue refused")
		}
		return q
	}

	t.Run("fits at once", func(t *testing.T) {
		q := newSendQueue(2, 100, nil)
		if err := q.push(context.Background(), []byte("a"), patience); err != nil {
			t.Fatalf("push = %v, want nil", err)
		}
		if got := q.take(nil); len(got) != 1 || string(got[0].frame) != "a" {
			t.Errorf("queued %q, want [a]", got)
		}
	})
	t.Run("oversized into an empty queue", func(t *testing.T) {
		q := newSendQueue(2, 4, nil)
		if err := q.push(context.Background(), []byte("too big"), patience); err != nil {
			t.Fatalf("push = %v, want nil", err)
		}
	})
	// The timing cases run in a synctest bubble: its clock moves only
	// when every goroutine in it is blocked, so patience is measured
	// exactly and a loaded machine cannot starve the writer past it.
	t.Run("waits for the writer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			q := full(t)
			done := make(chan error, 1)
			go func() { done <- q.push(context.Background(), []byte("y"), time.Minute) }()
			synctest.Wait()
			select {
			case err := <-done:
				t.Fatalf("push into a full queue returned %v without waiting", err)
			default:
			}
			if got := q.take(nil); len(got) != 1 || string(got[0].frame) != "x" {
				t.Fatalf("took %q, want [x]", got)
			}
			q.done(1, 1)
			if err := <-done; err != nil {
				t.Fatalf("push = %v after the writer wrote, want nil", err)
			}
			if got := q.take(nil); len(got) != 1 || string(got[0].frame) != "y" {
				t.Errorf("queued %q, want [y]", got)
			}
		})
	})
	t.Run("gives up after patience", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			q := full(t)
			start := time.Now()
			err := q.push(context.Background(), []byte("y"), patience)
			if !errors.Is(err, errQueueStuck) {
				t.Fatalf("push = %v, want errQueueStuck", err)
			}
			if d := time.Since(start); d != patience {
				t.Errorf("gave up after %v, want %v", d, patience)
			}
			if len(q.frames) != 1 {
				t.Errorf("%d frames queued, want the first only", len(q.frames))
			}
		})
	})
	t.Run("progress restarts patience", func(t *testing.T) {
		// A full queue of ten 1-byte frames, a writer that writes one
		// frame every patience/5, and a push that needs 8 bytes of room:
		// it waits 8/5 of patience in all, but never patience without
		// progress, so it must succeed.
		synctest.Test(t, func(t *testing.T) {
			q := newSendQueue(100, 10, nil)
			for _, f := range frames(1, 1, 1, 1, 1, 1, 1, 1, 1, 1) {
				q.offer(f)
			}
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tick := time.NewTicker(patience / 5)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						q.mu.Lock()
						waiting := len(q.frames) > 0
						if waiting {
							q.frames = q.frames[1:]
						}
						q.mu.Unlock()
						if waiting {
							q.done(1, 1)
						}
					}
				}
			}()
			start := time.Now()
			if err := q.push(context.Background(), []byte("12345678"), patience); err != nil {
				t.Fatalf("push after %v = %v, want nil", time.Since(start), err)
			}
			if d, want := time.Since(start), 8*patience/5; d != want {
				t.Errorf("push returned after %v, want %v (8 takes)", d, want)
			}
		})
	})
	t.Run("context cancelled", func(t *testing.T) {
		q := full(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- q.push(ctx, []byte("y"), time.Minute) }()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("push = %v, want context.Canceled", err)
		}
	})
	t.Run("close wakes a waiting push", func(t *testing.T) {
		q := full(t)
		done := make(chan error, 1)
		go func() { done <- q.push(context.Background(), []byte("y"), time.Minute) }()
		q.close()
		select {
		case err := <-done:
			if !errors.Is(err, errQueueClosed) {
				t.Fatalf("push = %v, want errQueueClosed", err)
			}
		case <-time.After(readTimeout):
			t.Fatal("close did not wake the push")
		}
	})
}

func TestSendQueueClosed(t *testing.T) {
	q := newSendQueue(1, 100, nil)
	q.offer([]byte("before"))
	q.close()
	if q.offer([]byte("after")) != nil {
		t.Error("offer to a closed queue = false; want true (swallowed, not a slow consumer)")
	}
	if err := q.push(context.Background(), []byte("after"), time.Second); !errors.Is(err, errQueueClosed) {
		t.Errorf("push to a closed queue = %v, want errQueueClosed", err)
	}
	// What was queued before close is still there for a draining writer.
	if got := q.take(nil); len(got) != 1 || string(got[0].frame) != "before" {
		t.Errorf("take after close = %q, want [before]", got)
	}
}

// String shows a queued frame in test failures.
func (it queued) String() string { return string(it.frame) }
