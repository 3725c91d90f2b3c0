package backlogtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
)

// The conformance tests of ChannelConfig.Expiry. Expiries run on the
// backlog's clock (Redis's own for Redis), so the tests poll for a channel
// to go rather than assume when it does, and an expiry short enough to keep
// them quick (shortExpiry) is only relied upon not to pass between two
// steps of a refresh loop that are far quicker than it.

const shortExpiry = 300 * time.Millisecond

// waitExpired polls until ch is gone, failing t if it stays for long.
func waitExpired(t *testing.T, ctx context.Context, l backlog.Log, ch string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := l.Info(ctx, ch)
		if errors.Is(err, backlog.ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("Info while waiting for expiry: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists 10s after its last activity, with an expiry of %v", ch, shortExpiry)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testExpiryDeletes: an idle channel with an Expiry goes, with its
// messages and idempotency keys, and is then as if it never existed.
func testExpiryDeletes(t *testing.T, ctx context.Context, l backlog.Log) {
	cfg := backlog.ChannelConfig{MaxLen: 10, Expiry: shortExpiry}
	ch := mustCreate(t, ctx, l, cfg)
	// A channel without expiry stays: Expiry is per channel.
	keep := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	old := mustAppend(t, ctx, l, ch, 2)
	oldKeyed, _ := appendOnce(t, ctx, l, ch, "k", "1")
	waitExpired(t, ctx, l, ch)

	if _, err := l.Append(ctx, ch, []byte("1")); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Append to an expired channel: %v, want ErrNotFound", err)
	}
	if _, _, err := l.AppendIdempotent(ctx, ch, []byte("1"), backlog.Idempotency{Key: "k", Window: time.Minute}); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("AppendIdempotent to an expired channel: %v, want ErrNotFound", err)
	}
	if _, err := l.Range(ctx, ch, backlog.Zero, 10); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Range of an expired channel: %v, want ErrNotFound", err)
	}
	if _, err := l.TailStart(ctx, ch, 10); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("TailStart of an expired channel: %v, want ErrNotFound", err)
	}
	if err := l.Delete(ctx, ch); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Delete of an expired channel: %v, want ErrNotFound", err)
	}
	if names := Walk(t, ctx, l, "", 100); slices.Contains(names, ch) || !slices.Contains(names, keep) {
		t.Errorf("List = %v, want %s without the expired %s", names, keep, ch)
	}
	// A follower ignores the expired channel or reports it deleted;
	// either way it returns no message.
	batches, err := backlog.ReadOnce(ctx, l, []backlog.Cursor{{Channel: ch, After: old[0]}}, 10, 300*time.Millisecond)
	if err != nil {
		t.Errorf("Read of an expired channel: %v", err)
	}
	for _, b := range batches {
		if b.Channel != ch || !b.Deleted || len(b.Messages) > 0 {
			t.Errorf("Read of an expired channel = %+v, want nothing or one Deleted batch", batches)
		}
	}
	if err := l.TrimExpired(ctx); err != nil {
		t.Errorf("TrimExpired after an expiry: %v", err)
	}
	if _, err := l.Info(ctx, keep); err != nil {
		t.Errorf("channel without expiry: %v", err)
	}

	// Created again, it is a new channel: empty, proving nothing about
	// the old IDs, knowing none of the old keys.
	cfg2 := backlog.ChannelConfig{MaxLen: 7, Expiry: time.Minute}
	if created, err := l.Create(ctx, ch, cfg2); err != nil || !created {
		t.Fatalf("Create after expiry = %v, %v; want true, nil", created, err)
	}
	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config != cfg2 || info.Length != 0 || !info.FirstID.IsZero() || !info.LastID.IsZero() {
		t.Errorf("info after re-creation = %+v, want empty with the new config %+v", info, cfg2)
	}
	if page, err := l.Range(ctx, ch, old[1], 10); err != nil || page.Continuous || len(page.Messages) > 0 {
		t.Errorf("Range after an old id = %+v, %v; want nothing, not continuous", page, err)
	}
	id, dup := appendOnce(t, ctx, l, ch, "k", "2")
	if dup || !oldKeyed.Less(id) {
		t.Errorf("key of the expired channel = %v, duplicate %v; want a new append after %v", id, dup, oldKeyed)
	}
	wantLength(t, ctx, l, ch, 1)
}

// testExpiryRestarts: Create of the existing channel (its configuration
// unchanged) and each Append restart the countdown, so a channel refreshed
// more often than its expiry lives on; once refreshing stops, it goes.
func testExpiryRestarts(t *testing.T, ctx context.Context, l backlog.Log) {
	cfg := backlog.ChannelConfig{MaxLen: 100, Expiry: shortExpiry}
	refreshers := []struct {
		name    string
		refresh func(ch string, i int) (gone bool)
	}{
		{"Create", func(ch string, i int) bool {
			created, err := l.Create(ctx, ch, backlog.ChannelConfig{MaxLen: 5, Expiry: time.Hour})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			return created
		}},
		{"Append", func(ch string, i int) bool {
			_, err := l.Append(ctx, ch, []byte("1"))
			if errors.Is(err, backlog.ErrNotFound) {
				return true
			}
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			return false
		}},
		{"AppendIdempotent", func(ch string, i int) bool {
			_, _, err := l.AppendIdempotent(ctx, ch, []byte("1"), backlog.Idempotency{Key: fmt.Sprint("k", i), Window: time.Minute})
			if errors.Is(err, backlog.ErrNotFound) {
				return true
			}
			if err != nil {
				t.Fatalf("AppendIdempotent: %v", err)
			}
			return false
		}},
	}
	for _, r := range refreshers {
		t.Run(r.name, func(t *testing.T) {
			// Refresh every 50ms for two expiries. A refresh finding
			// the channel gone less than 2/3 of an expiry after the
			// previous one fails the test; a later one means this
			// machine stalled for longer than that, and the round is
			// tried again.
			for round := 0; ; round++ {
				if round == 5 {
					t.Fatalf("5 rounds stalled for more than 2/3 of the expiry (%v) between two refreshes", shortExpiry)
				}
				ch := mustCreate(t, ctx, l, cfg)
				last, start, stalled := time.Now(), time.Now(), false
				for i := 0; time.Since(start) < 2*shortExpiry; i++ {
					time.Sleep(50 * time.Millisecond)
					since := time.Since(last)
					if r.refresh(ch, i) {
						if since < 2*shortExpiry/3 {
							t.Fatalf("%s expired %v after a refresh by %s, with an expiry of %v", ch, since, r.name, shortExpiry)
						}
						t.Logf("refresh found %s gone %v after the previous one: this machine stalled; trying again", ch, since)
						stalled = true
						break
					}
					last = time.Now()
				}
				if stalled {
					continue
				}
				info, err := l.Info(ctx, ch)
				if err != nil {
					if errors.Is(err, backlog.ErrNotFound) && time.Since(last) >= 2*shortExpiry/3 {
						t.Logf("%s gone %v after the last refresh: this machine stalled; trying again", ch, time.Since(last))
						continue
					}
					t.Fatalf("Info after refreshing: %v", err)
				}
				if info.Config != cfg {
					t.Errorf("config after refreshing = %+v, want the first one %+v", info.Config, cfg)
				}
				waitExpired(t, ctx, l, ch)
				return
			}
		})
	}
}

// testExpiryContinuous: an expiring channel proves a resume from 0-0 like
// any other, before and after its first messages (in Redis its stream
// exists from the start, to carry the expiry).
func testExpiryContinuous(t *testing.T, ctx context.Context, l backlog.Log) {
	cfg := backlog.ChannelConfig{MaxLen: 10, Expiry: time.Minute}
	ch := mustCreate(t, ctx, l, cfg)
	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config != cfg || info.Length != 0 || !info.FirstID.IsZero() || !info.LastID.IsZero() {
		t.Errorf("new expiring channel info = %+v, want empty with zero ids and config %+v", info, cfg)
	}
	page, err := l.Range(ctx, ch, backlog.Zero, 10)
	if err != nil || !page.Continuous || len(page.Messages) > 0 {
		t.Errorf("Range from 0-0 of a new expiring channel = %+v, %v; want empty and continuous", page, err)
	}
	if id, err := l.TailStart(ctx, ch, 5); err != nil || !id.IsZero() {
		t.Errorf("TailStart of a new expiring channel = %v, %v; want 0-0", id, err)
	}
	ids := mustAppend(t, ctx, l, ch, 3)
	page, err = l.Range(ctx, ch, backlog.Zero, 10)
	if err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "range from 0-0", idsOf(page.Messages), ids)
	if !page.Continuous {
		t.Error("Range from 0-0 of an expiring channel is not continuous")
	}
	batches, err := backlog.ReadOnce(ctx, l, []backlog.Cursor{{Channel: ch}}, 10, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) != 1 || batches[0].Gap || batches[0].Deleted {
		t.Fatalf("Read from 0-0 = %+v, want one batch without gap", batches)
	}
	sameIDs(t, "read from 0-0", idsOf(batches[0].Messages), ids)
	// An expiring channel deleted and created again goes on after the
	// old IDs, as any channel does.
	if err := l.Delete(ctx, ch); err != nil {
		t.Fatal(err)
	}
	mustCreateNamed(t, ctx, l, ch, cfg)
	page, err = l.Range(ctx, ch, backlog.Zero, 10)
	if err != nil || !page.Continuous || len(page.Messages) > 0 {
		t.Errorf("Range from 0-0 after Delete and Create = %+v, %v; want empty and continuous", page, err)
	}
	if id := mustAppend(t, ctx, l, ch, 1)[0]; !ids[2].Less(id) {
		t.Errorf("id after Delete and Create = %v, want after %v", id, ids[2])
	}
	if names := Walk(t, ctx, l, "", 1000); !slices.Contains(names, ch) {
		t.Errorf("List = %v, want it to hold %s", names, ch)
	}
}

func mustCreateNamed(t *testing.T, ctx context.Context, l backlog.Log, ch string, cfg backlog.ChannelConfig) {
	t.Helper()
	if created, err := l.Create(ctx, ch, cfg); err != nil || !created {
		t.Fatalf("Create(%q) = %v, %v; want true, nil", ch, created, err)
	}
}
