package broker_test

import (
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// TestReadAndReplayStats: the readers count every entry they take and the
// batches that came back full, and time how long each batch's first entry
// waited; a replay is measured in messages when its subscriber asked for
// history, and not when it subscribed live only.
func TestReadAndReplayStats(t *testing.T) {
	// The reader is held back while five entries pile up, so that its
	// first Read comes back full (ReadBatch 2) and its entries have aged.
	log := &pausedLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), release: make(chan struct{})}
	h := broker.New(log, broker.Config{ReadBatch: 2})
	defer h.Close()
	create(t, h, "c", 100)
	older := publish(t, h, "c", 3)

	live := newRecorder()
	subscribe(t, h, "c", broker.From{}, live)
	since := newRecorder()
	subscribe(t, h, "c", broker.From{Since: &older[0]}, since)
	last := newRecorder()
	subscribe(t, h, "c", broker.From{Last: 1}, last)

	st := h.Stats()
	if got := st.ReplayMessages.Count(); got != 2 {
		t.Errorf("%d replays measured, want 2 (since and last; not the live-only one)", got)
	}
	if st.ReplayMessages.Sum != 3 {
		t.Errorf("replays sent %v messages in all, want 3 (2 after since, 1 last)", st.ReplayMessages.Sum)
	}

	publish(t, h, "c", 5)
	time.Sleep(20 * time.Millisecond) // the entries wait in the backlog
	close(log.release)
	live.waitFor(t, 5)
	st = h.Stats()
	if st.MessagesRead != 5 {
		t.Errorf("MessagesRead = %d, want 5", st.MessagesRead)
	}
	if st.FullReads != 2 {
		t.Errorf("FullReads = %d, want 2 (5 entries, 2 at a time)", st.FullReads)
	}
	if n := st.ReaderLag.Count(); n != 3 {
		t.Errorf("ReaderLag holds %d batches, want 3", n)
	}
	if st.ReaderLag.Sum < 3*0.02 {
		t.Errorf("ReaderLag sums %vs over 3 batches that waited 20ms or more", st.ReaderLag.Sum)
	}
}
