// Package backlogtest is the conformance suite every backlog.Log
// implementation must pass, so that the memory and Redis backlogs cannot
// drift apart.
package backlogtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
)

// Factory returns a fresh, empty log; the suite closes it.
type Factory func(t *testing.T) backlog.Log

var channelSeq atomic.Int64

// channel returns a name no other subtest uses, so that factories may share
// one server.
func channel(t *testing.T) string {
	return fmt.Sprintf("conf.%d.%d", time.Now().UnixNano(), channelSeq.Add(1))
}

// Run runs every conformance test against logs made by newLog.
func Run(t *testing.T, newLog Factory) { run(t, newLog, true) }

// RunWithoutRead runs the conformance tests of everything but Read: the
// tests named Read... are left out, and the others skip their Read
// steps. It is for a log whose Read is not there yet (the Redis backlog on
// a Cluster).
func RunWithoutRead(t *testing.T, newLog Factory) { run(t, newLog, false) }

// withoutRead is the log RunWithoutRead tests: its Read fails, so that a
// Read step not skipped shows.
type withoutRead struct{ backlog.Log }

func (withoutRead) Read(context.Context, []backlog.Cursor, int) ([]backlog.Batch, error) {
	return nil, errors.New("backlogtest: Read is left out of RunWithoutRead")
}

// reads reports whether the tests may Read l.
func reads(l backlog.Log) bool {
	_, without := l.(withoutRead)
	return !without
}

func run(t *testing.T, newLog Factory, read bool) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, l backlog.Log)
	}{
		{"CreateIsIdempotent", testCreate},
		{"MissingChannel", testMissing},
		{"AppendIDsIncrease", testAppendIDs},
		{"RangeAndContinuity", testRange},
		{"MaxLenTrims", testMaxLen},
		{"TailStart", testTailStart},
		{"Before", testBefore},
		{"RetentionTrims", testRetention},
		{"ReadReturnsNewMessages", testRead},
		{"ReadBlocksUntilAppend", testReadBlocks},
		{"ReadReportsGap", testReadGap},
		{"ReadAfterLossBlocksUntilAppend", testReadGapWaits},
		{"ReadCancels", testReadCancels},
		{"ConcurrentAppends", testConcurrentAppends},
		{"DataIsOpaque", testDataOpaque},
		{"IdempotentAppend", testIdempotentAppend},
		{"IdempotentAppendConcurrent", testIdempotentConcurrent},
		{"IdempotencyWindowEnds", testIdempotencyWindow},
		{"IdempotencyKeysAreValidated", testIdempotencyInvalid},
		{"Delete", testDelete},
		{"DeleteThenCreateAgain", testDeleteCreate},
		{"ReadReportsDelete", testReadDeleted},
		{"ReadAfterDelete", testReadAfterDelete},
		{"List", testList},
		{"ListPrefix", testListPrefix},
		{"ListBadCursor", testListBadCursor},
		{"ExpiryDeletes", testExpiryDeletes},
		{"ExpiryRestarts", testExpiryRestarts},
		{"ExpiryContinuous", testExpiryContinuous},
	}
	for _, tt := range tests {
		if !read && strings.HasPrefix(tt.name, "Read") {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			l := newLog(t)
			t.Cleanup(func() { l.Close() })
			if !read {
				l = withoutRead{l}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tt.fn(t, ctx, l)
		})
	}
}

func mustCreate(t *testing.T, ctx context.Context, l backlog.Log, cfg backlog.ChannelConfig) string {
	t.Helper()
	ch := channel(t)
	created, err := l.Create(ctx, ch, cfg)
	if err != nil || !created {
		t.Fatalf("Create(%q) = %v, %v; want true, nil", ch, created, err)
	}
	return ch
}

func mustAppend(t *testing.T, ctx context.Context, l backlog.Log, ch string, n int) []backlog.ID {
	t.Helper()
	ids := make([]backlog.ID, n)
	for i := range ids {
		id, err := l.Append(ctx, ch, fmt.Appendf(nil, "%d", i))
		if err != nil {
			t.Fatalf("Append #%d: %v", i, err)
		}
		ids[i] = id
	}
	return ids
}

func idsOf(msgs []backlog.Message) []backlog.ID {
	ids := make([]backlog.ID, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

func sameIDs(t *testing.T, what string, got, want []backlog.ID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d ids %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: id #%d = %v, want %v", what, i, got[i], want[i])
		}
	}
}

func testCreate(t *testing.T, ctx context.Context, l backlog.Log) {
	cfg := backlog.ChannelConfig{MaxLen: 7, Retention: time.Hour}
	ch := mustCreate(t, ctx, l, cfg)
	created, err := l.Create(ctx, ch, backlog.ChannelConfig{MaxLen: 99})
	if err != nil || created {
		t.Fatalf("second Create = %v, %v; want false, nil", created, err)
	}
	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config != cfg {
		t.Errorf("config = %+v, want the first one %+v", info.Config, cfg)
	}
	if info.Length != 0 || !info.FirstID.IsZero() || !info.LastID.IsZero() {
		t.Errorf("new channel info = %+v, want empty with zero ids", info)
	}
	if time.Since(info.Created) > time.Minute || time.Until(info.Created) > time.Minute {
		t.Errorf("created = %v, want about now", info.Created)
	}
}

func testMissing(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := channel(t)
	if _, err := l.Info(ctx, ch); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Info: %v, want ErrNotFound", err)
	}
	if _, err := l.Append(ctx, ch, []byte("1")); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Append: %v, want ErrNotFound", err)
	}
	if _, err := l.Range(ctx, ch, backlog.Zero, 10); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Range: %v, want ErrNotFound", err)
	}
	if _, err := l.TailStart(ctx, ch, 10); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("TailStart: %v, want ErrNotFound", err)
	}
}

func testAppendIDs(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	ids := mustAppend(t, ctx, l, ch, 200)
	for i := 1; i < len(ids); i++ {
		if !ids[i-1].Less(ids[i]) {
			t.Fatalf("id #%d %v not after #%d %v", i, ids[i], i-1, ids[i-1])
		}
	}
	now := uint64(time.Now().UnixMilli())
	if ids[0].Ms+60_000 < now || ids[0].Ms > now+60_000 {
		t.Errorf("id %v is not a millisecond timestamp near %d", ids[0], now)
	}
	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != 200 || info.FirstID != ids[0] || info.LastID != ids[199] {
		t.Errorf("info = %+v, want length 200 first %v last %v", info, ids[0], ids[199])
	}
}

func testRange(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	ids := mustAppend(t, ctx, l, ch, 10)
	cases := []struct {
		name           string
		after          backlog.ID
		limit          int
		want           []backlog.ID
		wantContinuous bool
	}{
		{"from zero", backlog.Zero, 100, ids, true},
		{"limited", backlog.Zero, 3, ids[:3], true},
		{"after a held id", ids[4], 100, ids[5:], true},
		{"after the head", ids[9], 100, nil, true},
		{"after an id never held", backlog.ID{Ms: ids[0].Ms - 1, Seq: 7}, 100, ids, false},
		{"beyond the head", backlog.ID{Ms: ids[9].Ms + 1000}, 100, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			page, err := l.Range(ctx, ch, c.after, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			sameIDs(t, "range", idsOf(page.Messages), c.want)
			if page.Continuous != c.wantContinuous {
				t.Errorf("continuous = %v, want %v", page.Continuous, c.wantContinuous)
			}
		})
	}
	// A channel that never had a message (in Redis: no stream key yet)
	// proves continuity from zero, and from nothing else.
	empty := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	for _, after := range []backlog.ID{backlog.Zero, ids[0]} {
		page, err := l.Range(ctx, empty, after, 100)
		if err != nil {
			t.Fatalf("range of an empty channel after %v: %v", after, err)
		}
		if len(page.Messages) != 0 || page.Continuous != after.IsZero() {
			t.Errorf("range of an empty channel after %v = %+v, want no messages, continuous %v", after, page, after.IsZero())
		}
	}
	page, err := l.Range(ctx, ch, ids[2], 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(page.Messages[0].Data) != "3" {
		t.Errorf("data = %q, want %q", page.Messages[0].Data, "3")
	}
}

func testMaxLen(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{MaxLen: 5})
	ids := mustAppend(t, ctx, l, ch, 12)
	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != 5 || info.FirstID != ids[7] || info.LastID != ids[11] {
		t.Errorf("info = %+v, want length 5 first %v last %v", info, ids[7], ids[11])
	}
	page, err := l.Range(ctx, ch, backlog.Zero, 100)
	if err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "range from zero after trimming", idsOf(page.Messages), ids[7:])
	if page.Continuous {
		t.Error("range from zero after trimming claims continuity")
	}
	page, err = l.Range(ctx, ch, ids[3], 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.Continuous {
		t.Error("range after a trimmed id claims continuity")
	}
	sameIDs(t, "range after a trimmed id", idsOf(page.Messages), ids[7:])
	page, err = l.Range(ctx, ch, ids[7], 100)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Continuous {
		t.Error("range after the oldest held id denies continuity")
	}
}

// testTailStart needs more entries than one step of the Redis script reads
// (64), so that walking back across steps is covered.
func testTailStart(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{MaxLen: 150})
	if id, err := l.TailStart(ctx, ch, 5); err != nil || !id.IsZero() {
		t.Fatalf("TailStart of empty = %v, %v; want 0-0", id, err)
	}
	ids := mustAppend(t, ctx, l, ch, 160)[10:] // the 10 oldest are trimmed
	for _, c := range []struct {
		n    int
		want backlog.ID
	}{{1, ids[149]}, {3, ids[147]}, {64, ids[86]}, {65, ids[85]}, {128, ids[22]}, {130, ids[20]}, {150, ids[0]}, {1000, ids[0]}, {0, backlog.Zero}} {
		id, err := l.TailStart(ctx, ch, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if id != c.want {
			t.Errorf("TailStart(%d) = %v, want %v", c.n, id, c.want)
		}
		if c.n == 0 {
			continue
		}
		// What a replay of the newest n does: Range after its Prev.
		page, err := l.Range(ctx, ch, id.Prev(), c.n)
		if err != nil {
			t.Fatal(err)
		}
		sameIDs(t, fmt.Sprintf("Range after TailStart(%d).Prev()", c.n), idsOf(page.Messages), ids[max(len(ids)-c.n, 0):])
	}
}

func testBefore(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{MaxLen: 3})
	if _, held, err := l.Before(ctx, ch, backlog.ID{Ms: 1}); err != nil || held {
		t.Fatalf("Before on an empty channel = held %v, %v; want false, nil", held, err)
	}
	ids := mustAppend(t, ctx, l, ch, 5) // the 2 oldest are trimmed
	for _, c := range []struct {
		id, prev backlog.ID
		held     bool
	}{
		{ids[4], ids[3], true},
		{ids[3], ids[2], true},
		{ids[2], backlog.Zero, true}, // the oldest held
		{ids[1], backlog.Zero, false},
		{ids[4].Next(), backlog.Zero, false},
		{backlog.Zero, backlog.Zero, false},
	} {
		prev, held, err := l.Before(ctx, ch, c.id)
		if err != nil || prev != c.prev || held != c.held {
			t.Errorf("Before(%v) = %v, %v, %v; want %v, %v, nil", c.id, prev, held, err, c.prev, c.held)
		}
	}
	if _, _, err := l.Before(ctx, channel(t), ids[4]); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Before on a missing channel: %v, want ErrNotFound", err)
	}
}

func testRetention(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{Retention: 200 * time.Millisecond})
	keep := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	ids := mustAppend(t, ctx, l, ch, 3)
	mustAppend(t, ctx, l, keep, 3)
	time.Sleep(250 * time.Millisecond) // retention is judged by wall-clock IDs
	fresh := mustAppend(t, ctx, l, ch, 1)
	if err := l.TrimExpired(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != 1 || info.FirstID != fresh[0] || info.LastID != fresh[0] {
		t.Errorf("after trim info = %+v, want just %v", info, fresh[0])
	}
	page, err := l.Range(ctx, ch, ids[0], 10)
	if err != nil {
		t.Fatal(err)
	}
	if page.Continuous {
		t.Error("range after an expired id claims continuity")
	}
	if info, err := l.Info(ctx, keep); err != nil || info.Length != 3 {
		t.Errorf("channel without retention: %+v, %v; want 3 messages kept", info, err)
	}
	// Everything expired: retention keeps the newest message, so a client
	// that saw it can still prove it resumes right after it.
	time.Sleep(250 * time.Millisecond)
	if err := l.TrimExpired(ctx); err != nil {
		t.Fatal(err)
	}
	info, err = l.Info(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != 1 || info.FirstID != fresh[0] || info.LastID != fresh[0] {
		t.Errorf("expired channel info = %+v, want length 1, first and last %v", info, fresh[0])
	}
	page, err = l.Range(ctx, ch, fresh[0], 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Continuous || len(page.Messages) != 0 {
		t.Errorf("range after the kept newest message = %+v, want empty and continuous", page)
	}
}

func testRead(t *testing.T, ctx context.Context, l backlog.Log) {
	a := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	b := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	idsA := mustAppend(t, ctx, l, a, 5)
	never := channel(t)
	batches, err := l.Read(ctx, []backlog.Cursor{{Channel: a, After: idsA[1]}, {Channel: b}, {Channel: never}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	// A channel that never existed is ignored or reported deleted.
	batches = slices.DeleteFunc(batches, func(b backlog.Batch) bool {
		if b.Channel != never {
			return false
		}
		if !b.Deleted || len(b.Messages) > 0 {
			t.Fatalf("batch for a channel that never existed: %+v, want none or Deleted", b)
		}
		return true
	})
	if len(batches) != 1 || batches[0].Channel != a || batches[0].Gap {
		t.Fatalf("batches = %+v, want one for %s without gap", batches, a)
	}
	sameIDs(t, "read limited to 2", idsOf(batches[0].Messages), idsA[2:4])
}

func testReadBlocks(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	head := mustAppend(t, ctx, l, ch, 1)[0]
	got := make(chan []backlog.Batch, 1)
	go func() {
		for {
			batches, err := l.Read(ctx, []backlog.Cursor{{Channel: ch, After: head}}, 10)
			if err != nil || len(batches) > 0 {
				got <- batches
				return
			}
		}
	}()
	select {
	case b := <-got:
		t.Fatalf("Read returned %+v before anything was appended", b)
	case <-time.After(100 * time.Millisecond):
	}
	id := mustAppend(t, ctx, l, ch, 1)[0]
	select {
	case b := <-got:
		if len(b) != 1 {
			t.Fatalf("batches = %+v", b)
		}
		sameIDs(t, "woken read", idsOf(b[0].Messages), []backlog.ID{id})
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not wake on append")
	}
}

func testReadGap(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{MaxLen: 3})
	ids := mustAppend(t, ctx, l, ch, 10)
	batches, err := l.Read(ctx, []backlog.Cursor{{Channel: ch, After: ids[2]}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) != 1 || !batches[0].Gap {
		t.Fatalf("batches = %+v, want one with Gap", batches)
	}
	sameIDs(t, "after gap", idsOf(batches[0].Messages), ids[7:])
	batches, err = l.Read(ctx, []backlog.Cursor{{Channel: ch, After: ids[7]}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) != 1 || batches[0].Gap {
		t.Fatalf("batches = %+v, want one without Gap", batches)
	}
}

// testReadGapWaits: the cursor is not held and nothing after it is, so
// there is nothing to return yet. Read must block (a message-less gap
// batch would leave the caller's cursor in place and make every Read
// return at once), then report the gap with the next message. As neither
// retention nor MaxLen removes a channel's newest message, such a cursor
// lies past the head, as one from before the log was reset would.
func testReadGapWaits(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{Retention: 100 * time.Millisecond})
	head := mustAppend(t, ctx, l, ch, 2)[1]
	time.Sleep(150 * time.Millisecond) // retention is judged by wall-clock IDs
	if err := l.TrimExpired(ctx); err != nil {
		t.Fatal(err)
	}
	// The next append comes at least 100ms later, so after this cursor.
	expectGapWithNext(t, ctx, l, ch, backlog.ID{Ms: head.Ms + 1})
}

// expectGapWithNext checks that a Read after cursor blocks while nothing
// after it is held, then returns the next append alone, with Gap.
func expectGapWithNext(t *testing.T, ctx context.Context, l backlog.Log, ch string, cursor backlog.ID) {
	t.Helper()
	got := make(chan []backlog.Batch, 1)
	errs := make(chan error, 1)
	go func() {
		for {
			batches, err := l.Read(ctx, []backlog.Cursor{{Channel: ch, After: cursor}}, 10)
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
	select {
	case b := <-got:
		t.Fatalf("Read returned %+v before anything was appended", b)
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(100 * time.Millisecond):
	}
	id := mustAppend(t, ctx, l, ch, 1)[0]
	select {
	case b := <-got:
		if len(b) != 1 || !b[0].Gap {
			t.Fatalf("batches = %+v, want one with Gap", b)
		}
		sameIDs(t, "read after the loss", idsOf(b[0].Messages), []backlog.ID{id})
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not wake on append")
	}
}

func testReadCancels(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	readCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		for {
			batches, err := l.Read(readCtx, []backlog.Cursor{{Channel: ch}}, 10)
			if err != nil || len(batches) > 0 {
				done <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Read after cancel: %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Read took %v to notice cancellation", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read ignored cancellation")
	}
}

func testConcurrentAppends(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	const writers, each = 4, 100
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := l.Append(ctx, ch, []byte(`{}`)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var all []backlog.Message
	after := backlog.Zero
	for {
		page, err := l.Range(ctx, ch, after, 64)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Messages) == 0 {
			break
		}
		all = append(all, page.Messages...)
		after = page.Messages[len(page.Messages)-1].ID
	}
	if len(all) != writers*each {
		t.Fatalf("paged %d messages, want %d", len(all), writers*each)
	}
	for i := 1; i < len(all); i++ {
		if !all[i-1].ID.Less(all[i].ID) {
			t.Fatalf("ids out of order at %d: %v then %v", i, all[i-1].ID, all[i].ID)
		}
	}
}

func testDataOpaque(t *testing.T, ctx context.Context, l backlog.Log) {
	ch := mustCreate(t, ctx, l, backlog.ChannelConfig{})
	payloads := []string{`{"a":[1,2,{"b":null}]}`, `"text"`, `12.5`, "{\"u\":\"\u00e9\u2603\"}"}
	for _, p := range payloads {
		if _, err := l.Append(ctx, ch, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	page, err := l.Range(ctx, ch, backlog.Zero, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range page.Messages {
		if string(m.Data) != payloads[i] {
			t.Errorf("payload #%d = %q, want %q", i, m.Data, payloads[i])
		}
	}
}
