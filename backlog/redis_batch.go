package backlog

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// appendBatcher sends the appends that arrive while others are in flight
// together, as one pipeline: the first append goes at once, so a lone
// publisher waits no longer than without it, and under load n appends cost
// Redis and the gateway one write and one read instead of n of each.
// Appends are most of what a busy gateway sends (docs/benchmarks.md).
//
// Each call stays a script of its own with its own result: the batch is a
// pipeline, not a transaction, so one channel's error fails only its own
// append. The writer client never retries, batched or not, so an append is
// still run at most once.
type appendBatcher struct {
	r    *Redis
	wake chan struct{} // cap 1
	done chan struct{} // closed by stop

	mu    sync.Mutex
	queue []*batchedCall
}

type batchedCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	ran    chan struct{}
}

// maxBatch bounds the calls of one pipeline, and so the bytes one write
// holds with the largest messages.
const maxBatch = 128

func newAppendBatcher(r *Redis) *appendBatcher {
	b := &appendBatcher{r: r, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go b.loop()
	return b
}

func (b *appendBatcher) stop() { close(b.done) }

// run queues one script call and waits for its result, or for ctx.
func (b *appendBatcher) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &batchedCall{ctx: ctx, script: script, keys: keys, args: args, ran: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	select {
	case <-c.ran:
		return c.cmd
	case <-ctx.Done():
		// The append may still run: the caller says so (Append's
		// contract on errors), as without batching.
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	case <-b.done:
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ErrClosed)
		return cmd
	}
}

func (b *appendBatcher) loop() {
	for {
		select {
		case <-b.done:
			return
		case <-b.wake:
		}
		for {
			b.mu.Lock()
			n := min(len(b.queue), maxBatch)
			batch := b.queue[:n:n]
			b.queue = b.queue[n:]
			if len(b.queue) == 0 {
				b.queue = nil
			}
			b.mu.Unlock()
			if n == 0 {
				break
			}
			b.exec(batch)
		}
	}
}

// exec runs batch as one pipeline on the writer. Calls whose context is
// done already are not sent. A script Redis lost (NOSCRIPT: a restart, a
// SCRIPT FLUSH) did not run, so it is loaded and those calls go again.
func (b *appendBatcher) exec(batch []*batchedCall) {
	live := batch[:0:0]
	var deadline time.Time
	for _, c := range batch {
		if c.ctx.Err() != nil {
			c.cmd = redis.NewCmd(c.ctx)
			c.cmd.SetErr(c.ctx.Err())
			close(c.ran)
			continue
		}
		if dl, ok := c.ctx.Deadline(); !ok {
			deadline = time.Now().Add(time.Minute)
		} else if dl.After(deadline) {
			deadline = dl
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	// The batch's own context: one caller giving up must not cancel the
	// others' appends half-way through the pipeline.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	todo := live
	for attempt := 0; len(todo) > 0; attempt++ {
		pipe := b.r.writer.Pipeline()
		for _, c := range todo {
			c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		pipe.Exec(ctx) // errors are read per command
		var again []*batchedCall
		loaded := make(map[*redis.Script]bool)
		for _, c := range todo {
			if attempt == 0 && redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
				if _, tried := loaded[c.script]; !tried {
					loaded[c.script] = c.script.Load(ctx, b.r.writer).Err() == nil
				}
				if loaded[c.script] {
					again = append(again, c)
					continue
				}
			}
			close(c.ran)
		}
		todo = again
	}
}

// runBatched runs script like script.Run on the writer, through the
// batcher. On a Cluster the calls go one by one: its pipelines re-send a
// command whose connection failed after it was sent, which the writer's
// hook prevents only for single commands (withoutRetries), and an append
// must not run twice.
func (r *Redis) runBatched(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if _, cluster := r.writer.(*redis.ClusterClient); cluster || r.unbatched {
		return script.Run(ctx, r.writer, keys, args...)
	}
	cmd := r.batcher.run(ctx, script, keys, args...)
	if cmd.Err() != nil && r.isClosed() {
		cmd.SetErr(ErrClosed) // not the writer's own "client is closed"
	}
	return cmd
}
