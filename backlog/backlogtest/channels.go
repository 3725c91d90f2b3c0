package backlogtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
)

// The conformance tests of idempotent appends, deletion and listing.

func appendOnce(t *testing.T, ctx context.Context, l backlog.Log, ch, key, data string) (backlog.ID, bool) {
	t.Helper()
	id, dup, err := l.AppendIdempotent(ctx, ch, []byte(data), backlog.Idempotency{Key: key, Window: time.Minute})
	if err != nil {
		t.Fatalf("AppendIdempotent(%s, %q): %v", ch, key, err)
	}
	return id, dup
}

func wantLength(t *testing.T, ctx context.Context, l backlog.Log, ch string, want int64) {
	t.Helper()
	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != want {
		t.Fatalf("%s holds %d messages, want %d", ch, info.Length, want)
	}
}

func testIdempotentAppend(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	other := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	first, dup := appendOnce(t, ctx, l, ch, "order-1", `"a"`)
	if dup {
		t.Fatal("first append with a key reported a duplicate")
	}
	// The key alone identifies the message: a retry with other data
	// still gets the original ID and stores nothing.
	for _, data := range []string{`"a"`, `"b"`} {
		id, dup := appendOnce(t, ctx, l, ch, "order-1", data)
		if !dup || id != first {
			t.Fatalf("retry with %s = %v, duplicate %v; want %v, true", data, id, dup, first)
		}
	}
	wantLength(t, ctx, l, ch, 1)
	page, err := l.Range(ctx, ch, backlog.Zero, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1 || string(page.Messages[0].Data) != `"a"` {
		t.Fatalf("held %+v, want only the first data", page.Messages)
	}

	second, dup := appendOnce(t, ctx, l, ch, "order-2", `"c"`)
	if dup || !first.Less(second) {
		t.Fatalf("another key = %v, duplicate %v; want a new id after %v", second, dup, first)
	}
	// Keys are per channel.
	if _, dup := appendOnce(t, ctx, l, other, "order-1", `"a"`); dup {
		t.Fatal("a key used on another channel was a duplicate")
	}
	// Plain appends neither use nor disturb keys.
	mustAppend(t, ctx, l, ch, 1)
	if id, dup := appendOnce(t, ctx, l, ch, "order-1", `"a"`); !dup || id != first {
		t.Fatalf("retry after a plain append = %v, %v; want %v, true", id, dup, first)
	}
	wantLength(t, ctx, l, ch, 3)

	if _, _, err := l.AppendIdempotent(ctx, channel(t), []byte("1"), backlog.Idempotency{Key: "k", Window: time.Minute}); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("missing channel: %v, want ErrNotFound", err)
	}
}

func testIdempotentConcurrent(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	const n = 16
	ids := make([]backlog.ID, n)
	dups := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			ids[i], dups[i], err = l.AppendIdempotent(ctx, ch, []byte("1"), backlog.Idempotency{Key: "same", Window: time.Minute})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if !dups[i] {
			fresh++
		}
		if ids[i] != ids[0] {
			t.Errorf("append #%d got %v, #0 got %v", i, ids[i], ids[0])
		}
	}
	if fresh != 1 {
		t.Errorf("%d appends were not duplicates, want exactly 1", fresh)
	}
	wantLength(t, ctx, l, ch, 1)
}

// testIdempotencyWindow: once the window passed, the key appends again.
// Windows run on the backlog's clock (Redis's own for Redis), so the test
// polls rather than assuming when it ends.
func testIdempotencyWindow(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	idem := backlog.Idempotency{Key: "short", Window: 20 * time.Millisecond}
	first, _, err := l.AppendIdempotent(ctx, ch, []byte("1"), idem)
	if err != nil {
		t.Fatal(err)
	}
	for {
		id, dup, err := l.AppendIdempotent(ctx, ch, []byte("1"), idem)
		if err != nil {
			t.Fatal(err)
		}
		if !dup {
			if !first.Less(id) {
				t.Fatalf("append after the window = %v, want after %v", id, first)
			}
			break
		}
		if id != first {
			t.Fatalf("duplicate = %v, want %v", id, first)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the key was still remembered long after its window")
		case <-time.After(10 * time.Millisecond):
		}
	}
	wantLength(t, ctx, l, ch, 2)
}

func testIdempotencyInvalid(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	for _, idem := range []backlog.Idempotency{
		{Key: "", Window: time.Minute},
		{Key: "has space", Window: time.Minute},
		{Key: string(make([]byte, backlog.MaxIdempotencyKeyLen+1)), Window: time.Minute},
		{Key: "k", Window: 0},
	} {
		if _, _, err := l.AppendIdempotent(ctx, ch, []byte("1"), idem); err == nil {
			t.Errorf("AppendIdempotent with %q, %v succeeded", idem.Key, idem.Window)
		}
	}
	wantLength(t, ctx, l, ch, 0)
}

func testDelete(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{Retention: time.Hour})
	mustAppend(t, ctx, l, ch, 3)
	if err := l.Delete(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Info(ctx, ch); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Info after Delete: %v, want ErrNotFound", err)
	}
	if _, err := l.Append(ctx, ch, []byte("1")); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Append after Delete: %v, want ErrNotFound", err)
	}
	if _, err := l.Range(ctx, ch, backlog.Zero, 10); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Range after Delete: %v, want ErrNotFound", err)
	}
	if err := l.Delete(ctx, ch); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	if err := l.Delete(ctx, channel(t)); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Delete of a channel that never existed: %v, want ErrNotFound", err)
	}
	if err := l.TrimExpired(ctx); err != nil {
		t.Errorf("TrimExpired after Delete: %v", err)
	}
}

// testDeleteCreate: a channel created again is a new, empty channel that
// proves nothing about the old one's IDs and knows none of its keys.
func testDeleteCreate(t *testing.T, ctx context.Context, l backlog.Log) {
	cfg := backlog.ChannelConfig{MaxLen: 5}
	ch := mustCreate(t, ctx, l, cfg)
	old := mustAppend(t, ctx, l, ch, 3)
	oldKeyed, _ := appendOnce(t, ctx, l, ch, "k", "1")
	if err := l.Delete(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if created, err := l.Create(ctx, ch, backlog.ChannelConfig{MaxLen: 7}); err != nil || !created {
		t.Fatalf("Create after Delete = %v, %v; want true, nil", created, err)
	}
	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != 0 || !info.FirstID.IsZero() || info.Config.MaxLen != 7 {
		t.Fatalf("info after re-creation = %+v, want empty with the new config", info)
	}
	page, err := l.Range(ctx, ch, old[1], 10)
	if err != nil {
		t.Fatal(err)
	}
	if page.Continuous || len(page.Messages) > 0 {
		t.Errorf("Range after an old id = %+v, want nothing, not continuous", page)
	}
	page, err = l.Range(ctx, ch, backlog.Zero, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Continuous {
		t.Error("Range from 0-0 of the new channel is not continuous")
	}
	id, dup := appendOnce(t, ctx, l, ch, "k", "2")
	if dup || id == oldKeyed {
		t.Errorf("key of the deleted channel = %v, duplicate %v; want a new append", id, dup)
	}
	wantLength(t, ctx, l, ch, 1)
	// IDs go on after the deleted channel's, even within its last
	// millisecond: a client holding an old ID must not find it held
	// again, which would prove a resume that skips the new messages.
	if !oldKeyed.Less(id) {
		t.Fatalf("first id of the new channel %v is not after the deleted channel's last %v", id, oldKeyed)
	}
	page, err = l.Range(ctx, ch, oldKeyed, 10)
	if err != nil {
		t.Fatal(err)
	}
	if page.Continuous {
		t.Errorf("Range after the deleted channel's last id is continuous")
	}
	info, err = l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.LastID != id || info.FirstID != id {
		t.Errorf("info = %+v, want first and last id %v", info, id)
	}
}

// readUntil follows ch after cursor until a batch comes, in a goroutine.
func readUntil(ctx context.Context, l backlog.Log, ch string, cursor backlog.ID) <-chan []backlog.Batch {
	got := make(chan []backlog.Batch, 1)
	f := l.NewFollower()
	f.Follow(ch, cursor)
	go func() {
		defer f.Close()
		for ctx.Err() == nil {
			batches, err := f.Next(ctx, 10)
			if err != nil || len(batches) > 0 {
				got <- batches
				return
			}
		}
	}()
	return got
}

func wantDeleted(t *testing.T, got <-chan []backlog.Batch, ch string) {
	t.Helper()
	select {
	case b := <-got:
		if len(b) != 1 || b[0].Channel != ch || !b[0].Deleted || len(b[0].Messages) > 0 {
			t.Fatalf("batches = %+v, want one Deleted for %s", b, ch)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read did not report the delete")
	}
}

func testReadDeleted(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	head := mustAppend(t, ctx, l, ch, 2)[1]
	got := readUntil(ctx, l, ch, head)
	select {
	case b := <-got:
		t.Fatalf("Read returned %+v before the delete", b)
	case <-time.After(100 * time.Millisecond):
	}
	if err := l.Delete(ctx, ch); err != nil {
		t.Fatal(err)
	}
	wantDeleted(t, got, ch)
}

// testReadAfterDelete: a follower that was not reading when the channel
// was deleted learns of it all the same, whatever its cursor.
func testReadAfterDelete(t *testing.T, ctx context.Context, l backlog.Log) {
	for _, n := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("%d messages", n), func(t *testing.T) {
			ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
			ids := append([]backlog.ID{backlog.Zero}, mustAppend(t, ctx, l, ch, n)...)
			if err := l.Delete(ctx, ch); err != nil {
				t.Fatal(err)
			}
			wantDeleted(t, readUntil(ctx, l, ch, ids[len(ids)-1]), ch)
			wantDeleted(t, readUntil(ctx, l, ch, ids[0]), ch)
		})
	}
}

// Walk lists every page of l's channels that start with prefix, limit
// names a page, checks the page bound, and returns the names sorted and
// without duplicates (Redis may return a name twice).
func Walk(t *testing.T, ctx context.Context, l backlog.Log, prefix string, limit int) []string {
	t.Helper()
	var all []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("the walk does not end")
		}
		names, next, err := l.List(ctx, prefix, cursor, limit)
		if err != nil {
			t.Fatalf("List(%q, %q, %d): %v", prefix, cursor, limit, err)
		}
		if len(names) > limit {
			t.Fatalf("page of %d names, limit %d", len(names), limit)
		}
		all = append(all, names...)
		if next == "" {
			break
		}
		cursor = next
	}
	slices.Sort(all)
	return slices.Compact(all) // Redis may return a name twice
}

func testList(t *testing.T, ctx context.Context, l backlog.Log) {
	if names := Walk(t, ctx, l, "", 10); len(names) != 0 {
		t.Fatalf("empty log lists %v", names)
	}
	var want []string
	for i := range 25 {
		name := fmt.Sprintf("list.%02d", i)
		if _, err := l.Create(ctx, name, backlog.ChannelConfig{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	mustAppend(t, ctx, l, want[0], 2)
	if err := l.Delete(ctx, want[3]); err != nil {
		t.Fatal(err)
	}
	want = slices.Delete(want, 3, 4)
	for _, limit := range []int{1, 7, 24, 1000} {
		if got := Walk(t, ctx, l, "", limit); !slices.Equal(got, want) {
			t.Errorf("limit %d lists %v, want %v", limit, got, want)
		}
	}
}

func testListPrefix(t *testing.T, ctx context.Context, l backlog.Log) {
	for _, name := range []string{"a.x", "a.y", "ab", "b.a", "a"} {
		if _, err := l.Create(ctx, name, backlog.ChannelConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	for prefix, want := range map[string][]string{
		"a.":  {"a.x", "a.y"},
		"a":   {"a", "a.x", "a.y", "ab"},
		"b":   {"b.a"},
		"c":   nil,
		"a.x": {"a.x"},
	} {
		if got := Walk(t, ctx, l, prefix, 2); !slices.Equal(got, want) {
			t.Errorf("prefix %q lists %v, want %v", prefix, got, want)
		}
	}
}

func testListBadCursor(t *testing.T, ctx context.Context, l backlog.Log) {
	for _, cursor := range []string{"{", "a b", "~~"} {
		if _, _, err := l.List(ctx, "", cursor, 10); !errors.Is(err, backlog.ErrBadCursor) {
			t.Errorf("List from %q: %v, want ErrBadCursor", cursor, err)
		}
	}
}
