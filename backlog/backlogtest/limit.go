package backlogtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
)

// LimitFactory returns a fresh, empty log that holds at most maxChannels
// channels; the suite closes it.
type LimitFactory func(t *testing.T, maxChannels int) backlog.Log

// limitChannels is the limit the tests run at.
const limitChannels = 3

// RunLimit runs the conformance tests of the channel limit
// (MemoryConfig.MaxChannels, RedisConfig.MaxChannels) at its edge.
func RunLimit(t *testing.T, newLog LimitFactory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, l backlog.Log)
	}{
		{"LimitAtTheEdge", testLimitEdge},
		{"DeleteFreesASlot", testLimitDelete},
		{"ExpiredChannelFreesASlot", testLimitExpired},
		{"TrimExpiredFreesASlot", testLimitTrimExpired},
		{"ExpiredChannelCreatedAgain", testLimitExpiredAgain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLog(t, limitChannels)
			t.Cleanup(func() { l.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tt.fn(t, ctx, l)
		})
	}
}

// fill creates channels without expiry until the log holds n.
func fill(t *testing.T, ctx context.Context, l backlog.Log, n int) []string {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = mustCreate(t, ctx, l, backlog.ChannelConfig{})
	}
	return names
}

// wantFull checks that one more channel is refused with ErrLimit, and that
// nothing of it was made.
func wantFull(t *testing.T, ctx context.Context, l backlog.Log) {
	t.Helper()
	ch := channel(t)
	if created, err := l.Create(ctx, ch, backlog.ChannelConfig{}); !errors.Is(err, backlog.ErrLimit) || created {
		t.Fatalf("Create past the limit = %v, %v; want false, ErrLimit", created, err)
	}
	if _, err := l.Info(ctx, ch); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Info of the channel refused = %v, want ErrNotFound", err)
	}
}

// testLimitEdge: the limit-th channel is made, the next one is refused,
// and a Create of a channel that exists still answers at the limit.
func testLimitEdge(t *testing.T, ctx context.Context, l backlog.Log) {
	names := fill(t, ctx, l, limitChannels)
	wantFull(t, ctx, l)
	if created, err := l.Create(ctx, names[0], backlog.ChannelConfig{}); err != nil || created {
		t.Errorf("Create of an existing channel at the limit = %v, %v; want false, nil", created, err)
	}
	wantFull(t, ctx, l)
	if got := Walk(t, ctx, l, "", 100); len(got) != limitChannels {
		t.Errorf("List = %v, want the %d channels made", got, limitChannels)
	}
}

// testLimitDelete: a delete frees its slot at once, for one channel.
func testLimitDelete(t *testing.T, ctx context.Context, l backlog.Log) {
	names := fill(t, ctx, l, limitChannels)
	if err := l.Delete(ctx, names[1]); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, l, backlog.ChannelConfig{})
	wantFull(t, ctx, l)
	// The name deleted is a channel like any other.
	if err := l.Delete(ctx, names[2]); err != nil {
		t.Fatal(err)
	}
	mustCreateNamed(t, ctx, l, names[1], backlog.ChannelConfig{})
	wantFull(t, ctx, l)
}

// testLimitExpired: an expired channel frees its slot for the next Create,
// with no TrimExpired in between.
func testLimitExpired(t *testing.T, ctx context.Context, l backlog.Log) {
	fill(t, ctx, l, limitChannels-1)
	expiring := mustCreate(t, ctx, l, backlog.ChannelConfig{Expiry: shortExpiry})
	wantFull(t, ctx, l)
	waitExpired(t, ctx, l, expiring)
	mustCreate(t, ctx, l, backlog.ChannelConfig{})
	wantFull(t, ctx, l)
}

// testLimitTrimExpired: TrimExpired frees the slots of expired channels.
func testLimitTrimExpired(t *testing.T, ctx context.Context, l backlog.Log) {
	fill(t, ctx, l, limitChannels-2)
	a := mustCreate(t, ctx, l, backlog.ChannelConfig{Expiry: shortExpiry})
	b := mustCreate(t, ctx, l, backlog.ChannelConfig{Expiry: shortExpiry})
	waitExpired(t, ctx, l, a)
	waitExpired(t, ctx, l, b)
	if err := l.TrimExpired(ctx); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, l, backlog.ChannelConfig{})
	mustCreate(t, ctx, l, backlog.ChannelConfig{})
	wantFull(t, ctx, l)
}

// testLimitExpiredAgain: an expired channel's name may be created again at
// the limit, taking the slot it freed, and only that one.
func testLimitExpiredAgain(t *testing.T, ctx context.Context, l backlog.Log) {
	fill(t, ctx, l, limitChannels-1)
	expiring := mustCreate(t, ctx, l, backlog.ChannelConfig{Expiry: shortExpiry})
	waitExpired(t, ctx, l, expiring)
	mustCreateNamed(t, ctx, l, expiring, backlog.ChannelConfig{})
	wantFull(t, ctx, l)
}
