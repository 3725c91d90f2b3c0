package backlog

import (
	"context"
	"errors"
	"runtime"
	"slices"
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
// There is no batcher goroutine: the caller that finds no batch in flight
// leads, running the queue's batch itself, and on its way out hands the
// lead to the first caller still queued. A publish then costs no wake-up
// beyond its own, where a goroutine of the batcher's cost two (to wake it,
// and to wake the caller), and on this path the wake-ups were a measurable
// share of the gateway's CPU (docs/benchmarks.md, issue 18).
//
// Each call stays a script of its own with its own result: the batch is a
// pipeline, not a transaction, so one channel's error fails only its own
// append. The writer client never retries, batched or not, so an append is
// still run at most once.
type appendBatcher struct {
	r    *Redis
	done chan struct{} // closed by stop

	mu      sync.Mutex
	queue   []*batchedCall
	leading bool // a caller runs a batch, or has been handed the lead

	// The connection batches go on to a standalone Redis (redis_wire.go):
	// used by the leader alone, guarded here against stop.
	wireMu      sync.Mutex
	wire        *appendWire
	wireStopped bool
}

type batchedCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	// signal gets one send: the call ran (cmd is set), or, with lead set
	// under mu, the caller now leads. Buffered, so neither send waits on a
	// caller that gave up.
	signal chan struct{}
	lead   bool
}

// maxBatch bounds the calls of one pipeline, and so the bytes one write
// holds with the largest messages.
const maxBatch = 128

func newAppendBatcher(r *Redis) *appendBatcher {
	return &appendBatcher{r: r, done: make(chan struct{})}
}

func (b *appendBatcher) stop() {
	close(b.done)
	b.wireMu.Lock()
	defer b.wireMu.Unlock()
	b.wireStopped = true
	if b.wire != nil {
		b.wire.close() // a batch on it fails; runBatched says ErrClosed
		b.wire = nil
	}
}

// run queues one script call and waits for its result, or for ctx.
func (b *appendBatcher) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &batchedCall{ctx: ctx, script: script, keys: keys, args: args, signal: make(chan struct{}, 1)}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if !b.leading {
		b.leading = true
		b.mu.Unlock()
		b.lead(c)
		return c.cmd
	}
	b.mu.Unlock()
	select {
	case <-c.signal:
		if c.lead {
			b.lead(c)
		}
		return c.cmd
	case <-ctx.Done():
	case <-b.done:
	}
	b.mu.Lock()
	promoted := c.lead
	if !promoted {
		// Out of the queue, so that the lead is never handed to a caller
		// that is gone. A batch may hold it already: exec then drops it.
		if i := slices.Index(b.queue, c); i >= 0 {
			b.queue = slices.Delete(b.queue, i, i+1)
		}
	}
	b.mu.Unlock()
	if promoted {
		// Handed the lead as it gave up: it must still pass it on, or the
		// calls queued behind it would wait for nobody. Its own append is
		// not sent (exec drops calls whose context is done).
		b.lead(c)
	}
	cmd := redis.NewCmd(ctx)
	if ctx.Err() != nil {
		// The append may still run: the caller says so (Append's
		// contract on errors), as without batching.
		cmd.SetErr(ctx.Err())
	} else {
		cmd.SetErr(ErrClosed)
	}
	return cmd
}

// lead runs the batch at the head of the queue, which holds self, then
// hands the lead to the next queued call, or lets it go.
func (b *appendBatcher) lead(self *batchedCall) {
	// Let the publishers the scheduler already woke queue their appends
	// first: they then share this round trip instead of waiting for it.
	runtime.Gosched()
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.mu.Unlock()
	b.exec(batch, self)
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.queue = nil
		b.leading = false
		b.mu.Unlock()
		return
	}
	next := b.queue[0]
	next.lead = true
	b.mu.Unlock()
	next.signal <- struct{}{}
}

// exec runs batch as one pipeline on the writer, and tells every call but
// self that it ran. Calls whose context is done already are not sent. A
// script Redis lost (NOSCRIPT: a restart, a SCRIPT FLUSH) did not run, so
// it is loaded and those calls go again.
func (b *appendBatcher) exec(batch []*batchedCall, self *batchedCall) {
	ran := func(c *batchedCall) {
		if c != self {
			c.signal <- struct{}{}
		}
	}
	live := batch[:0:0]
	var deadline time.Time
	for _, c := range batch {
		if c.ctx.Err() != nil {
			c.cmd = redis.NewCmd(c.ctx)
			c.cmd.SetErr(c.ctx.Err())
			ran(c)
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
		b.send(ctx, todo) // errors are read per command
		var again []*batchedCall
		var loaded map[*redis.Script]bool // made on the rare NOSCRIPT only
		for _, c := range todo {
			if attempt == 0 && redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
				if loaded == nil {
					loaded = make(map[*redis.Script]bool)
				}
				if _, tried := loaded[c.script]; !tried {
					loaded[c.script] = c.script.Load(ctx, b.r.writer).Err() == nil
				}
				if loaded[c.script] {
					again = append(again, c)
					continue
				}
			}
			ran(c)
		}
		todo = again
	}
}

// send runs calls as one batch: on the batcher's own connection to a
// standalone Redis, or else as a go-redis pipeline on the writer.
func (b *appendBatcher) send(ctx context.Context, calls []*batchedCall) {
	for try := 0; ; try++ {
		w, err := b.wireFor(ctx)
		if w == nil && err == nil {
			pipe := b.r.writer.Pipeline()
			for _, c := range calls {
				c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
			}
			pipe.Exec(ctx)
			return
		}
		cmds := make([]redis.Cmder, len(calls))
		for i, c := range calls {
			args := make([]any, 0, 3+len(c.keys)+len(c.args))
			args = append(args, "evalsha", c.script.Hash(), len(c.keys))
			for _, k := range c.keys {
				args = append(args, k)
			}
			c.cmd = redis.NewCmd(ctx, append(args, c.args...)...)
			cmds[i] = c.cmd
		}
		if err != nil {
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
			return
		}
		err = w.run(ctx, cmds)
		if err == nil {
			return
		}
		b.wireMu.Lock()
		if b.wire == w {
			b.wire = nil
		}
		b.wireMu.Unlock()
		w.close()
		// A connection found closed before the batch was written (Redis
		// restarted while it rested): nothing ran, so it goes once more
		// on a new one.
		if _, closed := errors.AsType[*wireClosed](err); !closed || try > 0 {
			return
		}
	}
}

// wireFor returns the batcher's connection, dialing it when there is
// none: nil and no error when batches go through go-redis instead (a
// Sentinel writer, or after stop), an error when it could not be dialed.
func (b *appendBatcher) wireFor(ctx context.Context) (*appendWire, error) {
	writer, ok := b.r.writer.(*redis.Client)
	if !ok {
		return nil, nil
	}
	b.wireMu.Lock()
	defer b.wireMu.Unlock()
	if b.wireStopped {
		return nil, nil
	}
	if b.wire == nil {
		w, err := dialWire(ctx, writer, b.r.cfg.Hooks)
		if err != nil {
			return nil, err
		}
		b.wire = w
	}
	return b.wire, nil
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
