package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// TestRedisBatchedAppends: appends sent side by side go out in shared
// pipelines, yet each keeps its own result: one for a missing channel
// fails alone, every other is stored once under the ID it answered, in
// every channel's order. A SCRIPT FLUSH in between (Redis forgot the
// scripts, as after a restart) makes a batch load them and run again
// only the calls that did not run.
func TestRedisBatchedAppends(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "batch:"})
	names := []string{"b0", "b1", "b2", "b3"}
	for _, ch := range names {
		create(t, ctx, r, ch, backlog.ChannelConfig{})
	}
	const perWorker, workers = 50, 16
	var mu sync.Mutex
	acked := make(map[string][]backlog.ID)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if i == perWorker/2 && w == 0 {
					if err := srv.Client().ScriptFlush(ctx).Err(); err != nil {
						t.Error(err)
					}
				}
				ch := names[(w+i)%len(names)]
				var id backlog.ID
				var err error
				if i%2 == 0 {
					id, err = r.Append(ctx, ch, fmt.Appendf(nil, `"%d.%d"`, w, i))
				} else {
					id, _, err = r.AppendIdempotent(ctx, ch, fmt.Appendf(nil, `"%d.%d"`, w, i), backlog.Idempotency{Key: fmt.Sprintf("k%d.%d", w, i), Window: time.Minute})
				}
				if err != nil {
					t.Errorf("append %d.%d: %v", w, i, err)
					return
				}
				mu.Lock()
				acked[ch] = append(acked[ch], id)
				mu.Unlock()
				if _, err := r.Append(ctx, "missing", []byte("1")); !errors.Is(err, backlog.ErrNotFound) {
					t.Errorf("append to a missing channel in a batch: %v, want ErrNotFound", err)
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for _, ch := range names {
		page, err := r.Range(ctx, ch, backlog.Zero, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := acked[ch]
		slices.SortFunc(got, backlog.ID.Compare)
		sameIDs(t, ch, idsOf(page.Messages), got)
		total += len(got)
	}
	if total != perWorker*workers {
		t.Errorf("%d appends stored, want %d", total, perWorker*workers)
	}

	// An append whose caller gave up returns its context's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.Append(cctx, "b0", []byte("1")); !errors.Is(err, context.Canceled) {
		t.Errorf("append with a cancelled context: %v, want context.Canceled", err)
	}
	// After Close, appends fail as closed.
	r.Close()
	if _, err := r.Append(ctx, "b0", []byte("1")); !errors.Is(err, backlog.ErrClosed) {
		t.Errorf("append after Close: %v, want ErrClosed", err)
	}
}

// TestRedisBatchedAppendsGiveUp: callers that give up while queued behind
// a batch in flight never strand the others. The caller running a batch
// hands the next one to a caller still queued; were it handed to one that
// left, every append queued behind would wait for nobody. Redis is paused
// for writes now and then so that queues form, and half the callers give
// up after a random wait.
func TestRedisBatchedAppendsGiveUp(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "giveup:"})
	create(t, ctx, r, "g", backlog.ChannelConfig{MaxLen: 0})
	stopPausing := make(chan struct{})
	var pauses sync.WaitGroup
	pauses.Go(func() {
		for {
			select {
			case <-stopPausing:
				return
			case <-time.After(3 * time.Millisecond):
			}
			if err := srv.Client().Do(ctx, "CLIENT", "PAUSE", "2", "WRITE").Err(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	const workers, perWorker = 16, 60
	var mu sync.Mutex
	var acked []backlog.ID
	var gaveUp int
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				actx, cancel := ctx, context.CancelFunc(func() {})
				if (w+i)%2 == 0 {
					actx, cancel = context.WithTimeout(ctx, time.Duration(rand.N(2000))*time.Microsecond)
				}
				id, err := r.Append(actx, "g", fmt.Appendf(nil, `"%d.%d"`, w, i))
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					acked = append(acked, id)
				case actx != ctx && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, backlog.ErrUnavailable)):
					// A batch of callers that all gave up soon has their
					// latest deadline: its read can time out just before
					// the caller's own timer fires.
					gaveUp++
				default:
					t.Errorf("append %d.%d: %v", w, i, err)
				}
				mu.Unlock()
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("appends still waiting after 30s: a batch was handed to a caller that had left")
	}
	close(stopPausing)
	pauses.Wait()
	page, err := r.Range(ctx, "g", backlog.Zero, 0)
	if err != nil {
		t.Fatal(err)
	}
	stored := idsOf(page.Messages)
	for _, id := range acked {
		if !slices.ContainsFunc(stored, func(s backlog.ID) bool { return s == id }) {
			t.Errorf("acknowledged %v is not stored", id)
		}
	}
	if gaveUp == 0 {
		t.Error("no caller gave up: the test did not exercise what it is for")
	}
	t.Logf("%d acknowledged, %d gave up, %d stored", len(acked), gaveUp, len(stored))
}

// pipelineRecorder is a hook that records the commands of the pipelines it
// sees, as the gateway's metrics hook would time them.
type pipelineRecorder struct {
	mu    sync.Mutex
	names []string
}

func (h *pipelineRecorder) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipelineRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipelineRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.mu.Lock()
		for _, c := range cmds {
			h.names = append(h.names, c.Name()+":"+fmt.Sprint(c.Err() == nil))
		}
		h.mu.Unlock()
		return err
	}
}

// TestRedisAppendConnection: batches go on a connection of their own,
// which the writer's hooks still see; one that Redis closed while it
// rested is found closed before a batch is written to it, and the batch
// goes on a new one instead of failing.
func TestRedisAppendConnection(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	hook := &pipelineRecorder{}
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "wire:", Hooks: []redis.Hook{hook}})
	create(t, ctx, r, "w", backlog.ChannelConfig{})
	if _, err := r.Append(ctx, "w", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	hook.mu.Lock()
	seen := slices.Clone(hook.names)
	hook.mu.Unlock()
	if !slices.Contains(seen, "evalsha:true") {
		t.Fatalf("the writer's hook saw %v, want the append's evalsha", seen)
	}
	// Every normal connection closed by Redis, the append connection too.
	if err := srv.Client().ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // past wireIdleCheck
	for i := range 3 {
		if _, err := r.Append(ctx, "w", fmt.Appendf(nil, "%d", i+2)); err != nil {
			t.Fatalf("append %d after Redis closed the connection: %v", i, err)
		}
	}
	n, err := srv.Client().XLen(ctx, "wire:ch:{w}").Result()
	if err != nil || n != 4 {
		t.Fatalf("stream holds %d messages (%v), want 4, each once", n, err)
	}
}
