package backlogtest

import (
	"context"
	"slices"
	"sync"

	"github.com/tslm/tslm/backlog"
)

// Lossy wraps a Log whose channels can lose their newest entries, as a
// Redis failover loses writes the old primary had not passed on (or an
// XDEL of the newest entries does), for tests of what subscribers are
// told then. Only the Redis backlog can lose entries that way; Lossy
// gives the same view of any Log, so that tests run on the memory
// backlog too. As after an XDEL, the lost IDs stay below the next ID
// (Info.LastID is unchanged) and nothing proves a read from 0-0.
//
// Lose only entries every follower is at or past, or entries no follower
// follows yet (as after a failover, which a follower notices only with
// the next append): a follower that already returned them keeps what it
// returned.
type Lossy struct {
	backlog.Log

	mu   sync.Mutex
	lost map[string][]backlog.ID // per channel, ascending
}

// NewLossy wraps l.
func NewLossy(l backlog.Log) *Lossy {
	return &Lossy{Log: l, lost: make(map[string][]backlog.ID)}
}

// LoseNewest makes channel lose its n newest held entries and returns
// their IDs, oldest first.
func (l *Lossy) LoseNewest(ctx context.Context, channel string, n int) ([]backlog.ID, error) {
	held, err := l.held(ctx, channel)
	if err != nil {
		return nil, err
	}
	ids := make([]backlog.ID, 0, n)
	for _, m := range held[max(len(held)-n, 0):] {
		ids = append(ids, m.ID)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lost[channel] = append(l.lost[channel], ids...)
	slices.SortFunc(l.lost[channel], func(a, b backlog.ID) int { return a.Compare(b) })
	return ids, nil
}

func (l *Lossy) isLost(channel string, id backlog.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, found := slices.BinarySearchFunc(l.lost[channel], id, func(a, b backlog.ID) int { return a.Compare(b) })
	return found
}

func (l *Lossy) anyLost(channel string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lost[channel]) > 0
}

// keep returns msgs without the lost ones.
func (l *Lossy) keep(channel string, msgs []backlog.Message) []backlog.Message {
	return slices.DeleteFunc(msgs, func(m backlog.Message) bool { return l.isLost(channel, m.ID) })
}

// held returns every entry channel still holds.
func (l *Lossy) held(ctx context.Context, channel string) ([]backlog.Message, error) {
	page, err := l.Log.Range(ctx, channel, backlog.Zero, 0)
	if err != nil {
		return nil, err
	}
	return l.keep(channel, page.Messages), nil
}

func (l *Lossy) Info(ctx context.Context, channel string) (backlog.Info, error) {
	info, err := l.Log.Info(ctx, channel)
	if err != nil || !l.anyLost(channel) {
		return info, err
	}
	held, err := l.held(ctx, channel)
	if err != nil {
		return info, err
	}
	info.Length, info.FirstID = int64(len(held)), backlog.Zero
	if len(held) > 0 {
		info.FirstID = held[0].ID
	}
	return info, nil
}

func (l *Lossy) Range(ctx context.Context, channel string, after backlog.ID, limit int) (backlog.Page, error) {
	page, err := l.Log.Range(ctx, channel, after, 0)
	if err != nil {
		return page, err
	}
	page.Messages = l.keep(channel, page.Messages)
	if limit > 0 && len(page.Messages) > limit {
		page.Messages = page.Messages[:limit]
	}
	if l.isLost(channel, after) || (after.IsZero() && l.anyLost(channel)) {
		page.Continuous = false
	}
	return page, nil
}

func (l *Lossy) Before(ctx context.Context, channel string, id backlog.ID) (backlog.ID, bool, error) {
	if !l.anyLost(channel) {
		return l.Log.Before(ctx, channel, id)
	}
	held, err := l.held(ctx, channel)
	if err != nil {
		return backlog.Zero, false, err
	}
	i := slices.IndexFunc(held, func(m backlog.Message) bool { return m.ID == id })
	switch {
	case i < 0:
		return backlog.Zero, false, nil
	case i == 0:
		return backlog.Zero, true, nil
	}
	return held[i-1].ID, true, nil
}

func (l *Lossy) TailStart(ctx context.Context, channel string, n int) (backlog.ID, error) {
	if !l.anyLost(channel) {
		return l.Log.TailStart(ctx, channel, n)
	}
	held, err := l.held(ctx, channel)
	if err != nil || n <= 0 || len(held) == 0 {
		return backlog.Zero, err
	}
	return held[max(len(held)-n, 0)].ID, nil
}

// NewFollower returns a follower that filters the lost entries out and
// reports a gap after a lost cursor as Redis does: only a first entry
// that is the cursor's successor proves continuity then. A batch whose
// news were all lost is not returned: the follower waits for what follows.
func (l *Lossy) NewFollower() backlog.Follower {
	return &lossyFollower{Follower: l.Log.NewFollower(), l: l, cursors: make(map[string]backlog.ID)}
}

type lossyFollower struct {
	backlog.Follower
	l *Lossy

	mu      sync.Mutex
	cursors map[string]backlog.ID // what the caller was last given, per channel
}

func (f *lossyFollower) Follow(channel string, after backlog.ID) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cursors[channel] = after
	return f.Follower.Follow(channel, after)
}

func (f *lossyFollower) Next(ctx context.Context, limit int) ([]backlog.Batch, error) {
	for {
		batches, err := f.Follower.Next(ctx, limit)
		if err != nil || len(batches) == 0 {
			return batches, err
		}
		var out []backlog.Batch
		f.mu.Lock()
		for _, b := range batches {
			if b.Deleted {
				out = append(out, b)
				continue
			}
			b.Messages = f.l.keep(b.Channel, b.Messages)
			if len(b.Messages) == 0 {
				continue // all lost: wait for what follows
			}
			from, ok := f.cursors[b.Channel]
			if !ok {
				from = b.After
			}
			if f.l.isLost(b.Channel, from) && b.Messages[0].ID != from.Next() {
				b.Gap = true
			}
			b.After = from
			f.cursors[b.Channel] = b.Messages[len(b.Messages)-1].ID
			out = append(out, b)
		}
		f.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
	}
}
