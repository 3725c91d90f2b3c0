package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/backlog/backlogtest"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/redistest"
)

// Tests of what subscribers are told when a channel loses its newest
// entries, as in a Redis failover that lost writes the old primary had not
// passed on, on both backlogs.

// loser makes channel lose its n newest entries and returns their IDs.
type loser func(t *testing.T, channel string, n int) []backlog.ID

// lossBackend starts a hub over a backlog that can lose entries; wrap, when
// not nil, wraps the backlog the hub sees.
type lossBackend struct {
	name  string
	start func(t *testing.T, wrap func(backlog.Log) backlog.Log) (*broker.Hub, loser)
}

var lossBackends = []lossBackend{
	{"memory", func(t *testing.T, wrap func(backlog.Log) backlog.Log) (*broker.Hub, loser) {
		mem := backlog.NewMemory(backlog.MemoryConfig{})
		lossy := backlogtest.NewLossy(mem)
		h := broker.New(wrapWith(wrap, lossy), broker.Config{})
		t.Cleanup(func() { h.Close(); mem.Close() })
		return h, func(t *testing.T, channel string, n int) []backlog.ID {
			t.Helper()
			ids, err := lossy.LoseNewest(t.Context(), channel, n)
			if err != nil {
				t.Fatal(err)
			}
			return ids
		}
	}},
	{"redis", func(t *testing.T, wrap func(backlog.Log) backlog.Log) (*broker.Hub, loser) {
		srv := redistest.Start(t, redistest.Options{})
		log := backlog.NewRedis(srv.Client(), backlog.RedisConfig{})
		h := broker.New(wrapWith(wrap, log), broker.Config{})
		t.Cleanup(func() { h.Close(); log.Close() })
		rdb := srv.Client()
		return h, func(t *testing.T, channel string, n int) []backlog.ID {
			t.Helper()
			// What a failover loses, the stream's newest entries, as XDEL
			// leaves it: the last generated ID stays.
			key := "tslm:ch:{" + channel + "}"
			entries, err := rdb.XRevRangeN(t.Context(), key, "+", "-", int64(n)).Result()
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]backlog.ID, len(entries))
			var raw []string
			for i, e := range entries {
				ids[len(ids)-1-i], _ = backlog.ParseID(e.ID)
				raw = append(raw, e.ID)
			}
			if err := rdb.XDel(t.Context(), key, raw...).Err(); err != nil {
				t.Fatal(err)
			}
			return ids
		}
	}},
}

func wrapWith(wrap func(backlog.Log) backlog.Log, l backlog.Log) backlog.Log {
	if wrap == nil {
		return l
	}
	return wrap(l)
}

// heldReads holds the hub's follower back until release is closed, so
// that what happens to the backlog meanwhile reaches its reader at once.
type heldReads struct {
	backlog.Log
	release chan struct{}
}

func (l *heldReads) NewFollower() backlog.Follower {
	return &heldFollower{Follower: l.Log.NewFollower(), release: l.release}
}

type heldFollower struct {
	backlog.Follower
	release chan struct{}
}

func (f *heldFollower) Next(ctx context.Context, limit int) ([]backlog.Batch, error) {
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return f.Follower.Next(ctx, limit)
}

// TestNoGapAfterResumeFromLostEntries: a client resuming after IDs the
// channel lost is told resumed:false and replayed what is held; the loss
// it was told of is not reported again as a gap before the next message.
// A subscriber that received the lost entries live is told of the gap.
func TestNoGapAfterResumeFromLostEntries(t *testing.T) {
	for _, b := range lossBackends {
		for _, following := range []bool{true, false} {
			name := b.name + "/reader following"
			if !following {
				name = b.name + "/reader not following"
			}
			t.Run(name, func(t *testing.T) {
				h, lose := b.start(t, nil)
				create(t, h, "lossy", 100)
				var live *recorder
				if following {
					live = newRecorder()
					subscribe(t, h, "lossy", broker.From{}, live)
				}
				ids := publish(t, h, "lossy", 5)
				if following {
					live.waitFor(t, 5) // the reader is past the entries to lose
				}
				lost := lose(t, "lossy", 2)
				checkIDs(t, "lost", lost, ids[3:])

				resumed := newRecorder()
				_, res := subscribe(t, h, "lossy", broker.From{Since: &ids[4]}, resumed)
				if res.Resumed {
					t.Fatalf("resume after a lost id: %+v, want resumed false", res)
				}
				checkSequence(t, resumed.snapshot(), ids[:3])

				// A later millisecond: the lost ID's successor would prove
				// continuity by itself.
				time.Sleep(2 * time.Millisecond)
				next := publish(t, h, "lossy", 1)
				got := resumed.waitFor(t, 4)
				checkSequence(t, got, append(ids[:3:3], next...))

				if following {
					got := live.waitFor(t, 7)[5:]
					if !got[0].Gap || got[0].ID != ids[4] {
						t.Fatalf("the live subscriber got %+v after the loss, want a gap after %v", got[0], ids[4])
					}
					checkSequence(t, got[1:], next)
				}
			})
		}
	}
}

// TestLossAfterResumeFromLostEntriesIsReported: once the resumed client is
// live, a loss it was not told of (the messages after its last one trimmed
// before the reader read them) still gets its gap, after its last message.
func TestLossAfterResumeFromLostEntriesIsReported(t *testing.T) {
	for _, b := range lossBackends {
		t.Run(b.name, func(t *testing.T) {
			var held *heldReads
			h, lose := b.start(t, func(l backlog.Log) backlog.Log {
				held = &heldReads{Log: l, release: make(chan struct{})}
				return held
			})
			create(t, h, "lossy", 5)
			ids := publish(t, h, "lossy", 5)
			lose(t, "lossy", 2)
			resumed := newRecorder()
			_, res := subscribe(t, h, "lossy", broker.From{Since: &ids[4]}, resumed)
			if res.Resumed {
				t.Fatalf("resume after a lost id: %+v, want resumed false", res)
			}
			checkSequence(t, resumed.snapshot(), ids[:3])

			// Trims ids[:3] and the first two new ones before the reader
			// reads any.
			more := publish(t, h, "lossy", 7)
			close(held.release)
			got := resumed.waitFor(t, 3+1+5)[3:]
			if !got[0].Gap || got[0].ID != ids[2] {
				t.Fatalf("after the trim the resumed client got %+v first, want a gap after its last message %v", got[0], ids[2])
			}
			checkSequence(t, got[1:], more[2:])
		})
	}
}

func checkIDs(t *testing.T, what string, got, want []backlog.ID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
}
