package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tslm/tslm/backlog"
)

// guardedLog is the Hub's view of its backlog: every call made for a client
// is bounded by the operation timeout, and every error comes out as an
// *Error, so that each endpoint fails the same way and after the same time
// when the backlog hangs. Read and TrimExpired are the hub's own work and
// keep their own timing (Read blocks by design); their outcomes, like
// every other call's, feed the availability log.
type guardedLog struct {
	log     backlog.Log
	reqs    backlog.Requests // nil when log has no request queues
	timeout time.Duration
	health  *availability
}

var (
	_ backlog.Log      = (*guardedLog)(nil)
	_ backlog.Requests = (*guardedLog)(nil)
)

// guard runs op under the operation timeout and converts its error.
func guard[T any](g *guardedLog, ctx context.Context, channel string, op func(context.Context) (T, error)) (T, error) {
	return guardFor(g, ctx, g.timeout, channel, op)
}

// guardFor is guard with another bound, for calls that wait by design.
func guardFor[T any](g *guardedLog, ctx context.Context, timeout time.Duration, channel string, op func(context.Context) (T, error)) (T, error) {
	opCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := op(opCtx)
	err = fromBacklog(ctx, channel, err)
	g.health.observe(err)
	return v, err
}

func (g *guardedLog) Create(ctx context.Context, channel string, cfg backlog.ChannelConfig) (bool, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (bool, error) { return g.log.Create(ctx, channel, cfg) })
}

func (g *guardedLog) Info(ctx context.Context, channel string) (backlog.Info, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (backlog.Info, error) { return g.log.Info(ctx, channel) })
}

func (g *guardedLog) Append(ctx context.Context, channel string, data []byte) (backlog.ID, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (backlog.ID, error) { return g.log.Append(ctx, channel, data) })
}

func (g *guardedLog) Range(ctx context.Context, channel string, after backlog.ID, limit int) (backlog.Page, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (backlog.Page, error) { return g.log.Range(ctx, channel, after, limit) })
}

func (g *guardedLog) AppendIdempotent(ctx context.Context, channel string, data []byte, idem backlog.Idempotency) (backlog.ID, bool, error) {
	type appended struct {
		id        backlog.ID
		duplicate bool
	}
	a, err := guard(g, ctx, channel, func(ctx context.Context) (appended, error) {
		id, dup, err := g.log.AppendIdempotent(ctx, channel, data, idem)
		return appended{id, dup}, err
	})
	return a.id, a.duplicate, err
}

func (g *guardedLog) Delete(ctx context.Context, channel string) error {
	_, err := guard(g, ctx, channel, func(ctx context.Context) (struct{}, error) { return struct{}{}, g.log.Delete(ctx, channel) })
	return err
}

func (g *guardedLog) List(ctx context.Context, prefix, cursor string, limit int) ([]string, string, error) {
	type listed struct {
		names []string
		next  string
	}
	l, err := guard(g, ctx, "", func(ctx context.Context) (listed, error) {
		names, next, err := g.log.List(ctx, prefix, cursor, limit)
		return listed{names, next}, err
	})
	return l.names, l.next, err
}

func (g *guardedLog) Before(ctx context.Context, channel string, id backlog.ID) (backlog.ID, bool, error) {
	type before struct {
		prev backlog.ID
		held bool
	}
	b, err := guard(g, ctx, channel, func(ctx context.Context) (before, error) {
		prev, held, err := g.log.Before(ctx, channel, id)
		return before{prev, held}, err
	})
	return b.prev, b.held, err
}

func (g *guardedLog) TailStart(ctx context.Context, channel string, n int) (backlog.ID, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (backlog.ID, error) { return g.log.TailStart(ctx, channel, n) })
}

// NewFollower is the log's own: the reader observes its errors and tells
// its own cancellation apart.
func (g *guardedLog) NewFollower() backlog.Follower { return g.log.NewFollower() }

func (g *guardedLog) TrimExpired(ctx context.Context) error {
	err := g.log.TrimExpired(ctx)
	g.health.observe(fromBacklog(ctx, "", err))
	return err
}

func (g *guardedLog) Close() error { return g.log.Close() }

// The request queue methods are only called once the Hub checked that
// reqs is set (see Hub.requests).

func (g *guardedLog) Enqueue(ctx context.Context, channel string, req backlog.Request) (backlog.ID, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (backlog.ID, error) { return g.reqs.Enqueue(ctx, channel, req) })
}

// Claim waits up to block by design: its bound is block plus the
// operation timeout.
func (g *guardedLog) Claim(ctx context.Context, channel, group, consumer string, n int, block time.Duration) ([]backlog.Request, error) {
	return guardFor(g, ctx, block+g.timeout, channel, func(ctx context.Context) ([]backlog.Request, error) {
		return g.reqs.Claim(ctx, channel, group, consumer, n, block)
	})
}

func (g *guardedLog) Ack(ctx context.Context, channel, group string, ids ...backlog.ID) (int, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (int, error) { return g.reqs.Ack(ctx, channel, group, ids...) })
}

func (g *guardedLog) Reclaim(ctx context.Context, channel, group, consumer string, minIdle time.Duration, n int) ([]backlog.Request, error) {
	return guard(g, ctx, channel, func(ctx context.Context) ([]backlog.Request, error) {
		return g.reqs.Reclaim(ctx, channel, group, consumer, minIdle, n)
	})
}

func (g *guardedLog) Release(ctx context.Context, channel, group string, ids ...backlog.ID) (int, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (int, error) { return g.reqs.Release(ctx, channel, group, ids...) })
}

func (g *guardedLog) Leave(ctx context.Context, channel, group, consumer string) (bool, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (bool, error) { return g.reqs.Leave(ctx, channel, group, consumer) })
}

func (g *guardedLog) Touch(ctx context.Context, channel, group, consumer string, ids ...backlog.ID) (int, error) {
	return guard(g, ctx, channel, func(ctx context.Context) (int, error) {
		return g.reqs.Touch(ctx, channel, group, consumer, ids...)
	})
}

// Ping checks the backlog under the operation timeout, when it can tell.
func (g *guardedLog) Ping(ctx context.Context) error {
	p, ok := g.log.(backlog.Pinger)
	if !ok {
		return nil
	}
	_, err := guard(g, ctx, "", func(ctx context.Context) (struct{}, error) { return struct{}{}, p.Ping(ctx) })
	return err
}

// availability logs when the backlog stops answering and when it is back,
// once each, however many calls fail in between: one line per outage
// rather than one per request.
type availability struct {
	logger *slog.Logger
	now    func() time.Time

	// down mirrors state for the common case, a call that succeeds while
	// all is well, which then takes no lock.
	down atomic.Bool

	mu        sync.Mutex
	state     bool // down, guarded by mu
	downSince time.Time
}

// observe notes the outcome of one backlog call. A cancellation says
// nothing either way; a closed backlog is a shutdown, not an outage; any
// other answer, an error included (not_found, a bug), shows the backlog
// is reachable.
func (a *availability) observe(err error) {
	if errors.Is(err, ErrCanceled) || errors.Is(err, ErrClosed) {
		return
	}
	failed := errors.Is(err, ErrUnavailable)
	if failed == a.down.Load() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case failed && !a.state:
		a.state, a.downSince = true, a.now()
		a.logger.Warn("backlog unavailable: commands that need it fail with unavailable until it answers again", "err", err)
	case !failed && a.state:
		a.state = false
		a.logger.Info("backlog available again", "down_for", a.now().Sub(a.downSince).Round(time.Millisecond))
	}
	a.down.Store(a.state)
}
