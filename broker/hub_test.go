package broker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// recorder is a Sink that keeps what it receives; full makes Deliver refuse.
type recorder struct {
	mu   sync.Mutex
	pubs []*broker.Publication
	full bool
	got  chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 1)} }

func (r *recorder) Deliver(p *broker.Publication) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.full {
		return false
	}
	r.pubs = append(r.pubs, p)
	select {
	case r.got <- struct{}{}:
	default:
	}
	return true
}

func (r *recorder) Replay(_ context.Context, p *broker.Publication) error {
	if !r.Deliver(p) {
		return errors.New("full")
	}
	return nil
}

func (r *recorder) snapshot() []*broker.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*broker.Publication(nil), r.pubs...)
}

// waitFor polls until r holds n publications.
func (r *recorder) waitFor(t *testing.T, n int) []*broker.Publication {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := r.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("received %d publications, want %d", len(r.snapshot()), n)
		}
	}
}

func newHub(t *testing.T, cfg broker.Config) (*broker.Hub, *backlog.Memory) {
	t.Helper()
	log := backlog.NewMemory(backlog.MemoryConfig{})
	h := broker.New(log, cfg)
	t.Cleanup(func() { h.Close(); log.Close() })
	return h, log
}

func create(t *testing.T, h *broker.Hub, ch string, maxLen int64) {
	t.Helper()
	if _, err := h.Create(t.Context(), ch, broker.ChannelOptions{MaxLen: &maxLen}); err != nil {
		t.Fatal(err)
	}
}

func publish(t *testing.T, h *broker.Hub, ch string, n int) []backlog.ID {
	t.Helper()
	ids := make([]backlog.ID, n)
	for i := range ids {
		id, err := h.Publish(t.Context(), ch, fmt.Appendf(nil, "%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

func subscribe(t *testing.T, h *broker.Hub, ch string, from broker.From, sink broker.Sink) (*broker.Subscription, broker.SubscribeResult) {
	t.Helper()
	sub, res, err := h.Subscribe(t.Context(), ch, from, sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Replay(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return sub, res
}

// checkSequence asserts that got holds exactly want's IDs, in order.
func checkSequence(t *testing.T, got []*broker.Publication, want []backlog.ID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d publications, want %d", len(got), len(want))
	}
	for i, p := range got {
		if p.Gap || p.ID != want[i] {
			t.Fatalf("publication #%d = %v (gap %v), want %v", i, p.ID, p.Gap, want[i])
		}
	}
}

func TestSubscribePositions(t *testing.T) {
	h, _ := newHub(t, broker.Config{ReplayPage: 3})
	ptr := func(id backlog.ID) *backlog.ID { return &id }
	// Each case gets a channel of 8 messages, the first 3 trimmed away, and
	// picks its starting point among old.
	cases := []struct {
		name        string
		from        func(old []backlog.ID) broker.From
		want        func(old []backlog.ID) []backlog.ID
		wantResumed bool
	}{
		{"live only", func([]backlog.ID) broker.From { return broker.From{} }, func([]backlog.ID) []backlog.ID { return nil }, false},
		{"since a held id", func(o []backlog.ID) broker.From { return broker.From{Since: &o[4]} }, func(o []backlog.ID) []backlog.ID { return o[5:] }, true},
		{"since the head", func(o []backlog.ID) broker.From { return broker.From{Since: &o[7]} }, func([]backlog.ID) []backlog.ID { return nil }, true},
		{"since a trimmed id", func(o []backlog.ID) broker.From { return broker.From{Since: &o[1]} }, func(o []backlog.ID) []backlog.ID { return o[3:] }, false},
		{"since zero after trimming", func([]backlog.ID) broker.From { return broker.From{Since: ptr(backlog.Zero)} }, func(o []backlog.ID) []backlog.ID { return o[3:] }, false},
		{"since an id beyond the head", func(o []backlog.ID) broker.From { return broker.From{Since: ptr(backlog.ID{Ms: o[7].Ms + 9999})} }, func(o []backlog.ID) []backlog.ID { return o[3:] }, false},
		{"last 2", func([]backlog.ID) broker.From { return broker.From{Last: 2} }, func(o []backlog.ID) []backlog.ID { return o[6:] }, false},
		{"last more than held", func([]backlog.ID) broker.From { return broker.From{Last: 50} }, func(o []backlog.ID) []backlog.ID { return o[3:] }, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := fmt.Sprintf("pos%d", i)
			create(t, h, ch, 5)
			old := publish(t, h, ch, 8)
			c := struct {
				from        broker.From
				wantReplay  []backlog.ID
				wantResumed bool
			}{tc.from(old), tc.want(old), tc.wantResumed}
			rec := newRecorder()
			sub, res := subscribe(t, h, ch, c.from, rec)
			defer sub.Close()
			if res.Head != old[7] {
				t.Errorf("head = %v, want %v", res.Head, old[7])
			}
			if res.Resumed != c.wantResumed {
				t.Errorf("resumed = %v, want %v", res.Resumed, c.wantResumed)
			}
			checkSequence(t, rec.snapshot(), c.wantReplay)
			live := publish(t, h, ch, 2)
			checkSequence(t, rec.waitFor(t, len(c.wantReplay)+2), append(append([]backlog.ID(nil), c.wantReplay...), live...))
		})
	}
}

func TestSubscribeErrors(t *testing.T) {
	h, _ := newHub(t, broker.Config{})
	if _, _, err := h.Subscribe(t.Context(), "missing", broker.From{}, newRecorder()); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("missing channel: %v, want ErrNotFound", err)
	}
	if _, _, err := h.Subscribe(t.Context(), "bad name", broker.From{}, newRecorder()); !errors.Is(err, broker.ErrBadChannel) {
		t.Errorf("bad name: %v, want ErrBadChannel", err)
	}
	if st := h.Stats(); st.Channels != 0 || st.Subscriptions != 0 {
		t.Errorf("failed subscribes left %+v", st)
	}
}

// TestReplayLiveMergeUnderLoad subscribes many times, from many positions,
// while a publisher runs, with a replay buffer small enough to overflow: each
// subscriber must see exactly the IDs after its start, in order. Replays
// are never given up on here (ReplayOvertakes is out of reach): this test
// is about re-reading after an overflow, however often it takes.
func TestReplayLiveMergeUnderLoad(t *testing.T) {
	h, _ := newHub(t, broker.Config{ReplayPage: 7, ReplayBuffer: 5, ReplayOvertakes: 1 << 30})
	create(t, h, "load", 1_000_000)
	const total = 3000
	ids := make(chan backlog.ID, total)
	published := make([]backlog.ID, 0, total)
	publisherDone := make(chan struct{})
	defer func() { <-publisherDone }() // no t.Error after the test ends
	go func() {
		defer close(publisherDone)
		defer close(ids)
		for i := range total {
			id, err := h.Publish(context.Background(), "load", fmt.Appendf(nil, "%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			ids <- id
		}
	}()
	type run struct {
		rec   *recorder
		since backlog.ID
	}
	var runs []run
	for id := range ids {
		published = append(published, id)
		if len(published)%150 == 0 {
			// Resume from an ID seen a while ago, while publishing goes on.
			since := published[len(published)/2]
			rec := newRecorder()
			subscribe(t, h, "load", broker.From{Since: &since}, rec)
			runs = append(runs, run{rec, since})
		}
	}
	for i, r := range runs {
		var want []backlog.ID
		for _, id := range published {
			if r.since.Less(id) {
				want = append(want, id)
			}
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			checkSequence(t, r.rec.waitFor(t, len(want)), want)
		})
	}
}

func TestSlowSinkIsDropped(t *testing.T) {
	h, _ := newHub(t, broker.Config{})
	create(t, h, "slow", 100)
	slow, fast := newRecorder(), newRecorder()
	subscribe(t, h, "slow", broker.From{}, slow)
	subscribe(t, h, "slow", broker.From{}, fast)
	publish(t, h, "slow", 1)
	slow.waitFor(t, 1)
	slow.mu.Lock()
	slow.full = true
	slow.mu.Unlock()
	publish(t, h, "slow", 2)
	fast.waitFor(t, 3)
	slow.mu.Lock()
	slow.full = false
	slow.mu.Unlock()
	ids := publish(t, h, "slow", 1)
	got := fast.waitFor(t, 4)
	if got[3].ID != ids[0] {
		t.Fatalf("fast sink got %v last, want %v", got[3].ID, ids[0])
	}
	if n := len(slow.snapshot()); n != 1 {
		t.Errorf("a sink that refused a delivery got %d publications, want it cut off after 1", n)
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	h, _ := newHub(t, broker.Config{})
	create(t, h, "unsub", 100)
	rec := newRecorder()
	sub, _ := subscribe(t, h, "unsub", broker.From{}, rec)
	publish(t, h, "unsub", 1)
	rec.waitFor(t, 1)
	sub.Close()
	sub.Close()
	other := newRecorder()
	subscribe(t, h, "unsub", broker.From{}, other)
	publish(t, h, "unsub", 3)
	other.waitFor(t, 3)
	if n := len(rec.snapshot()); n != 1 {
		t.Errorf("closed subscription got %d publications, want 1", n)
	}
	if st := h.Stats(); st.Subscriptions != 1 || st.Channels != 1 {
		t.Errorf("stats = %+v, want 1 subscription on 1 channel", st)
	}
}

func TestLiveGapIsReported(t *testing.T) {
	// A channel trimmed faster than the reader follows it: the hub's reader
	// is held back by a follower that only the test releases.
	log := &pausedLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), release: make(chan struct{})}
	h := broker.New(log, broker.Config{})
	defer h.Close()
	create(t, h, "gappy", 2)
	rec := newRecorder()
	sub, res, err := h.Subscribe(t.Context(), "gappy", broker.From{}, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Replay(t.Context()); err != nil {
		t.Fatal(err)
	}
	ids := publish(t, h, "gappy", 5)
	close(log.release)
	got := rec.waitFor(t, 3)
	if !got[0].Gap || got[0].ID != res.Head {
		t.Fatalf("first publication = %+v, want a gap after %v", got[0], res.Head)
	}
	checkSequence(t, got[1:], ids[3:])
}

type pausedLog struct {
	*backlog.Memory
	release chan struct{}
}

func (l *pausedLog) NewFollower() backlog.Follower {
	return &pausedFollower{Follower: l.Memory.NewFollower(), release: l.release}
}

type pausedFollower struct {
	backlog.Follower
	release chan struct{}
}

func (f *pausedFollower) Next(ctx context.Context, limit int) ([]backlog.Batch, error) {
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return f.Follower.Next(ctx, limit)
}

func TestNonJSONPayloadBecomesString(t *testing.T) {
	log := backlog.NewMemory(backlog.MemoryConfig{})
	h := broker.New(log, broker.Config{})
	defer h.Close()
	create(t, h, "raw", 10)
	cases := []struct{ stored, want string }{
		{"not json \xff", `"not json \ufffd"`},
		{"\"valid JSON, invalid UTF-8 \xff\"", `"\"valid JSON, invalid UTF-8 \ufffd\""`},
		{`{"ok":true}`, `{"ok":true}`},
	}
	// As a direct XADD of arbitrary bytes would leave them.
	for _, c := range cases {
		if _, err := log.Append(t.Context(), "raw", []byte(c.stored)); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder()
	subscribe(t, h, "raw", broker.From{Last: len(cases)}, rec)
	got := rec.waitFor(t, len(cases))
	for i, c := range cases {
		if string(got[i].Data) != c.want {
			t.Errorf("stored %q delivered as %s, want %s", c.stored, got[i].Data, c.want)
		}
	}
}

func TestCreateValidation(t *testing.T) {
	h, _ := newHub(t, broker.Config{MaxMaxLen: 100, MaxRetention: time.Hour})
	i64 := func(v int64) *int64 { return &v }
	dur := func(d time.Duration) *time.Duration { return &d }
	cases := []struct {
		name    string
		channel string
		opts    broker.ChannelOptions
		want    error
	}{
		{"defaults", "ok1", broker.ChannelOptions{}, nil},
		{"at the limits", "ok2", broker.ChannelOptions{MaxLen: i64(100), Retention: dur(time.Hour)}, nil},
		{"max_len over", "x", broker.ChannelOptions{MaxLen: i64(101)}, broker.ErrLimit},
		{"max_len zero", "x", broker.ChannelOptions{MaxLen: i64(0)}, broker.ErrBadConfig},
		{"retention over", "x", broker.ChannelOptions{Retention: dur(time.Hour + 1)}, broker.ErrLimit},
		{"retention zero", "x", broker.ChannelOptions{Retention: dur(0)}, broker.ErrBadConfig},
		{"bad name", "a b", broker.ChannelOptions{}, broker.ErrBadChannel},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.Create(t.Context(), c.channel, c.opts)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Errorf("Create = %v, want %v", err, c.want)
			}
		})
	}
}

func TestEveryChannelIsFollowed(t *testing.T) {
	h, _ := newHub(t, broker.Config{})
	var recs []*recorder
	for i := range 7 {
		ch := fmt.Sprintf("grow%d", i)
		create(t, h, ch, 10)
		rec := newRecorder()
		subscribe(t, h, ch, broker.From{}, rec)
		recs = append(recs, rec)
	}
	for i, rec := range recs {
		ids := publish(t, h, fmt.Sprintf("grow%d", i), 1)
		checkSequence(t, rec.waitFor(t, 1), ids)
	}
}

// TestGapReachesSubscribersAheadOfTheReader: a resuming subscriber reads the
// backlog past the reader's cursor; when trimming then removes messages it
// has not seen before the reader gets to them, the reader's gap (after its
// own cursor) starts before the subscriber's last message, yet the
// subscriber lost messages too and must be told, after its own last ID.
func TestGapReachesSubscribersAheadOfTheReader(t *testing.T) {
	log := &pausedLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), release: make(chan struct{})}
	h := broker.New(log, broker.Config{})
	defer h.Close()
	create(t, h, "ahead", 3)
	live := newRecorder()
	subscribe(t, h, "ahead", broker.From{}, live) // the reader starts at 0-0, held back
	ids := publish(t, h, "ahead", 3)

	resumed := newRecorder()
	_, res := subscribe(t, h, "ahead", broker.From{Since: &ids[0]}, resumed)
	if !res.Resumed {
		t.Fatalf("resume since a held id: %+v", res)
	}
	checkSequence(t, resumed.snapshot(), ids[1:3])

	more := publish(t, h, "ahead", 4) // trims ids and more[0], unseen by the resumed subscriber
	close(log.release)

	got := resumed.waitFor(t, 2+1+3)[2:]
	if !got[0].Gap || got[0].ID != ids[2] {
		t.Fatalf("after its replay the resumed subscriber got %+v, want a gap after its last id %v", got[0], ids[2])
	}
	checkSequence(t, got[1:], more[1:])

	gotLive := live.waitFor(t, 1+3)
	if !gotLive[0].Gap || !gotLive[0].ID.IsZero() {
		t.Fatalf("live subscriber got %+v first, want a gap after 0-0", gotLive[0])
	}
	checkSequence(t, gotLive[1:], more[1:])
}

// TestNoGapForSubscribersPastTheLoss: a subscriber that already has every
// message up to the first one held after the loss lost nothing.
func TestNoGapForSubscribersPastTheLoss(t *testing.T) {
	log := &pausedLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), release: make(chan struct{})}
	h := broker.New(log, broker.Config{})
	defer h.Close()
	create(t, h, "past", 2)
	subscribe(t, h, "past", broker.From{}, newRecorder()) // the reader starts at 0-0, held back
	ids := publish(t, h, "past", 4)                       // ids[2:] held
	caughtUp := newRecorder()
	_, res := subscribe(t, h, "past", broker.From{Since: &ids[2]}, caughtUp)
	if !res.Resumed {
		t.Fatalf("resume since a held id: %+v", res)
	}
	close(log.release)
	next := publish(t, h, "past", 1)
	checkSequence(t, caughtUp.waitFor(t, 2), []backlog.ID{ids[3], next[0]})
}

func TestLastIsBounded(t *testing.T) {
	h, _ := newHub(t, broker.Config{MaxLast: 5})
	create(t, h, "bounded", 100)
	ids := publish(t, h, "bounded", 8)
	rec := newRecorder()
	subscribe(t, h, "bounded", broker.From{Last: 5}, rec) // at the limit
	checkSequence(t, rec.snapshot(), ids[3:])
	if _, _, err := h.Subscribe(t.Context(), "bounded", broker.From{Last: 6}, newRecorder()); !errors.Is(err, broker.ErrLimit) {
		t.Errorf("last over the limit: %v, want ErrLimit", err)
	}
}

// infoLog counts Info calls, and appends a message to the channel right
// after an Info has read it when appendAfterInfo is set: a publish that
// lands between the Info a subscribe starts from and its registration.
type infoLog struct {
	*backlog.Memory
	infos           atomic.Int64
	appendAfterInfo atomic.Bool
	appended        chan backlog.ID
}

func (l *infoLog) Info(ctx context.Context, channel string) (backlog.Info, error) {
	l.infos.Add(1)
	info, err := l.Memory.Info(ctx, channel)
	if err == nil && l.appendAfterInfo.CompareAndSwap(true, false) {
		id, err := l.Memory.Append(ctx, channel, []byte(`"raced"`))
		if err != nil {
			return info, err
		}
		l.appended <- id
	}
	return info, err
}

// TestSubscribeAsksInfoOnce: a subscribe reads the channel's Info once,
// whether it starts following the channel or joins a channel already
// followed, since on Redis each Info is a round trip of every subscribe.
func TestSubscribeAsksInfoOnce(t *testing.T) {
	log := &infoLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), appended: make(chan backlog.ID, 1)}
	h := broker.New(log, broker.Config{})
	t.Cleanup(func() { h.Close(); log.Close() })
	create(t, h, "once", 10)
	ids := publish(t, h, "once", 3)
	since := ids[0]
	for _, from := range []broker.From{{}, {Since: &since}, {Last: 2}} {
		first, _ := subscribe(t, h, "once", from, newRecorder())
		second, _ := subscribe(t, h, "once", from, newRecorder())
		first.Close()
		second.Close()
		if n := log.infos.Swap(0); n != 2 {
			t.Errorf("two subscribes from %+v read Info %d times, want 2", from, n)
		}
	}
}

// TestSubscribeGetsWhatFollowsItsHead: the first subscriber of a channel
// takes its head from the Info its reader starts from; a message appended
// right after that Info is delivered to it live, nothing is skipped.
func TestSubscribeGetsWhatFollowsItsHead(t *testing.T) {
	log := &infoLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), appended: make(chan backlog.ID, 1)}
	h := broker.New(log, broker.Config{})
	t.Cleanup(func() { h.Close(); log.Close() })
	create(t, h, "raced", 10)
	publish(t, h, "raced", 2)
	log.appendAfterInfo.Store(true)
	rec := newRecorder()
	_, res := subscribe(t, h, "raced", broker.From{}, rec)
	raced := <-log.appended
	if !res.Head.Less(raced) {
		t.Fatalf("head %v is not before the message appended after its Info, %v", res.Head, raced)
	}
	checkSequence(t, rec.waitFor(t, 1), []backlog.ID{raced})
}
