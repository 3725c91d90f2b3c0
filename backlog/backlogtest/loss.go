package backlogtest

import (
	"context"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
)

// Loser makes channel of l lose its n newest entries, as a Redis failover
// loses writes not yet replicated, and returns their IDs, oldest first.
type Loser func(t *testing.T, ctx context.Context, l backlog.Log, channel string, n int) []backlog.ID

// RunLoss checks what a log tells once a channel lost its newest entries.
// It runs for the Redis backlog, losing them with XDEL, and for Lossy over
// the memory backlog, so that tests on Lossy see what Redis would show.
func RunLoss(t *testing.T, newLog Factory, lose Loser) {
	l := newLog(t)
	t.Cleanup(func() { l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	ids := mustAppend(t, ctx, l, ch, 5)
	sameIDs(t, "lost", lose(t, ctx, l, ch, 2), ids[3:])

	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != 3 || info.FirstID != ids[0] || info.LastID != ids[4] {
		t.Errorf("Info = %+v, want 3 held from %v, last ID still %v", info, ids[0], ids[4])
	}
	for _, c := range []struct {
		after      backlog.ID
		continuous bool
		want       []backlog.ID
	}{
		{ids[4], false, nil},           // the lost newest
		{ids[3], false, nil},           // lost too
		{ids[2], true, nil},            // held: only trims remove entries, as far as the proof knows
		{backlog.Zero, false, ids[:3]}, // entries were removed
	} {
		page, err := l.Range(ctx, ch, c.after, 10)
		if err != nil {
			t.Fatal(err)
		}
		if page.Continuous != c.continuous {
			t.Errorf("Range after %v: continuous %v, want %v", c.after, page.Continuous, c.continuous)
		}
		sameIDs(t, "Range after "+c.after.String(), idsOf(page.Messages), c.want)
	}
	if id, err := l.TailStart(ctx, ch, 2); err != nil || id != ids[1] {
		t.Errorf("TailStart(2) = %v, %v; want %v", id, err, ids[1])
	}
	if _, held, err := l.Before(ctx, ch, ids[4]); err != nil || held {
		t.Errorf("Before(lost %v): held %v, %v", ids[4], held, err)
	}

	lostCursor := readUntil(ctx, l, ch, ids[4])
	heldCursor := readUntil(ctx, l, ch, ids[2])
	time.Sleep(2 * time.Millisecond) // so that next is not the lost ID's successor
	next := mustAppend(t, ctx, l, ch, 1)[0]
	for _, c := range []struct {
		name    string
		got     <-chan []backlog.Batch
		wantGap bool
	}{{"after the lost newest", lostCursor, true}, {"after the newest held", heldCursor, false}} {
		select {
		case b := <-c.got:
			if len(b) != 1 || b[0].Gap != c.wantGap {
				t.Fatalf("Read %s: %+v, want gap %v", c.name, b, c.wantGap)
			}
			sameIDs(t, "Read "+c.name, idsOf(b[0].Messages), []backlog.ID{next})
		case <-time.After(10 * time.Second):
			t.Fatalf("Read %s returned nothing after an append", c.name)
		}
	}
	if prev, held, err := l.Before(ctx, ch, next); err != nil || !held || prev != ids[2] {
		t.Errorf("Before(%v) = %v, %v, %v; want the newest held before it, %v", next, prev, held, err, ids[2])
	}
}
