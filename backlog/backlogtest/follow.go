package backlogtest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
)

// follow returns a follower of l following cursors, closed at the end of
// the test.
func follow(t *testing.T, l backlog.Log, cursors ...backlog.Cursor) backlog.Follower {
	t.Helper()
	f := l.NewFollower()
	t.Cleanup(func() { f.Close() })
	for _, c := range cursors {
		f.Follow(c.Channel, c.After)
	}
	return f
}

// nextFor calls f.Next until it returns a batch of ch, which it returns,
// failing the test after wait; batches of other channels are passed to
// other, when not nil.
func nextFor(t *testing.T, ctx context.Context, f backlog.Follower, limit int, ch string, wait time.Duration, other func(backlog.Batch)) backlog.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		batches, err := f.Next(ctx, limit)
		if err != nil {
			t.Fatalf("Next waiting for %s: %v", ch, err)
		}
		var found *backlog.Batch
		for i, b := range batches {
			if b.Channel == ch && found == nil {
				found = &batches[i]
			} else if other != nil {
				other(b)
			} else {
				t.Fatalf("Next returned %+v, expecting only %s", b, ch)
			}
		}
		if found != nil {
			return *found
		}
	}
}

// nextAsync runs Next in a goroutine until it returns batches or fails.
func nextAsync(ctx context.Context, f backlog.Follower, limit int) (<-chan []backlog.Batch, <-chan error) {
	got := make(chan []backlog.Batch, 1)
	errs := make(chan error, 1)
	go func() {
		for {
			batches, err := f.Next(ctx, limit)
			if err != nil {
				errs <- err
				return
			}
			if len(batches) > 0 {
				got <- batches
				return
			}
		}
	}()
	return got, errs
}

// testFollowOrder appends in bursts while a follower with a small limit
// reads: every message arrives once, in order, without a gap.
func testFollowOrder(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	head := mustAppend(t, ctx, l, ch, 1)[0]
	f := follow(t, l, backlog.Cursor{Channel: ch, After: head})
	var want []backlog.ID
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5 {
			want = append(want, mustAppend(t, ctx, l, ch, 20)...)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var got []backlog.ID
	cursor := head
	for len(got) < 100 {
		b := nextFor(t, ctx, f, 7, ch, 10*time.Second, nil)
		if b.Gap || b.Deleted || len(b.Messages) == 0 || len(b.Messages) > 7 {
			t.Fatalf("batch %+v, want 1-7 messages without gap", b)
		}
		if b.After != cursor {
			t.Fatalf("batch after %v, want after the last one returned, %v", b.After, cursor)
		}
		got = append(got, idsOf(b.Messages)...)
		cursor = got[len(got)-1]
	}
	<-done
	sameIDs(t, "followed", got, want)
}

// testFollowRefollow: each Follow numbers its batches; after Unfollow
// nothing of the channel comes; a Follow again starts at its own cursor.
func testFollowRefollow(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	other := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	ids := mustAppend(t, ctx, l, ch, 3)
	f := l.NewFollower()
	defer f.Close()
	first := f.Follow(ch, ids[0])
	b := nextFor(t, ctx, f, 10, ch, 5*time.Second, nil)
	if b.Follow != first || b.After != ids[0] {
		t.Fatalf("batch %+v, want Follow %d after %v", b, first, ids[0])
	}
	sameIDs(t, "first follow", idsOf(b.Messages), ids[1:])

	f.Unfollow(ch)
	f.Follow(other, backlog.Zero)
	mustAppend(t, ctx, l, ch, 2)
	later := mustAppend(t, ctx, l, other, 1)
	b = nextFor(t, ctx, f, 10, other, 5*time.Second, func(b backlog.Batch) {
		t.Fatalf("batch %+v after Unfollow", b)
	})
	sameIDs(t, "other", idsOf(b.Messages), later)

	second := f.Follow(ch, ids[2])
	if second <= first {
		t.Errorf("Follow numbers %d then %d, want increasing", first, second)
	}
	b = nextFor(t, ctx, f, 10, ch, 5*time.Second, nil)
	if b.Follow != second || b.After != ids[2] || len(b.Messages) != 2 || b.Gap {
		t.Fatalf("batch %+v, want the 2 appended while unfollowed, Follow %d", b, second)
	}
}

// testFollowClose: Close ends a Next in flight with ErrClosed.
func testFollowClose(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	f := l.NewFollower()
	f.Follow(ch, backlog.Zero)
	got, errs := nextAsync(ctx, f, 10)
	time.Sleep(50 * time.Millisecond)
	f.Close()
	select {
	case b := <-got:
		t.Fatalf("Next returned %+v, want ErrClosed", b)
	case err := <-errs:
		if !errors.Is(err, backlog.ErrClosed) {
			t.Errorf("Next after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next ignored Close")
	}
}

// testFollowMany follows more channels than one catch-up reads, with news
// on each: every channel is reported once.
func testFollowMany(t *testing.T, ctx context.Context, l backlog.Log) {
	const n = 250
	f := l.NewFollower()
	defer f.Close()
	want := make(map[string]backlog.ID, n)
	for range n {
		ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
		f.Follow(ch, backlog.Zero)
		want[ch] = mustAppend(t, ctx, l, ch, 1)[0]
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(want) > 0 {
		batches, err := f.Next(ctx, 10)
		if err != nil {
			t.Fatalf("Next with %d channels still to come: %v", len(want), err)
		}
		for _, b := range batches {
			id, ok := want[b.Channel]
			if !ok || b.Gap || !slices.Equal(idsOf(b.Messages), []backlog.ID{id}) {
				t.Fatalf("batch %+v, want once the message %v", b, id)
			}
			delete(want, b.Channel)
		}
	}
}
