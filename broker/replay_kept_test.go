package broker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// pageCountingLog counts page reads.
type pageCountingLog struct {
	*backlog.Memory
	ranges atomic.Int64
}

func (l *pageCountingLog) Range(ctx context.Context, channel string, after backlog.ID, limit int) (backlog.Page, error) {
	l.ranges.Add(1)
	return l.Memory.Range(ctx, channel, after, limit)
}

func newPageCountingHub(t *testing.T) (*broker.Hub, *pageCountingLog) {
	t.Helper()
	log := &pageCountingLog{Memory: backlog.NewMemory(backlog.MemoryConfig{})}
	h := broker.New(log, broker.Config{})
	t.Cleanup(func() { h.Close(); log.Close() })
	return h, log
}

// TestResumesReuseTheKeptPage: subscribers resuming from the same ID, one
// after the other as in a reconnect storm, read the backlog once while
// the channel does not move, and each gets every message.
func TestResumesReuseTheKeptPage(t *testing.T) {
	h, log := newPageCountingHub(t)
	create(t, h, "storm", 100)
	ids := publish(t, h, "storm", 5)
	first := newRecorder()
	subscribe(t, h, "storm", broker.From{Since: &ids[1]}, first) // keeps the channel followed
	checkSequence(t, first.waitFor(t, 3), ids[2:])
	// The first page read sizes the next ones (the channel's message
	// size): a second resume asks for another count, and keeps that page.
	second := newRecorder()
	subscribe(t, h, "storm", broker.From{Since: &ids[1]}, second)
	checkSequence(t, second.waitFor(t, 3), ids[2:])
	before := log.ranges.Load()
	for range 10 {
		rec := newRecorder()
		sub, _ := subscribe(t, h, "storm", broker.From{Since: &ids[1]}, rec)
		checkSequence(t, rec.waitFor(t, 3), ids[2:])
		sub.Close()
	}
	if got := log.ranges.Load() - before; got != 0 {
		t.Errorf("10 more resumes from the same ID read the backlog %d times, want 0 (the kept page)", got)
	}
}

// TestResumeAfterAFanoutReadsAgain: a page read before a message was fanned
// out lacks it; a subscription registered after that fan-out must read
// again, or it would miss the message.
func TestResumeAfterAFanoutReadsAgain(t *testing.T) {
	h, _ := newPageCountingHub(t)
	create(t, h, "moving", 100)
	ids := publish(t, h, "moving", 3)
	early := newRecorder()
	subscribe(t, h, "moving", broker.From{Since: &ids[2]}, early) // reads, and keeps, an empty page
	m := publish(t, h, "moving", 1)[0]
	checkSequence(t, early.waitFor(t, 1), []backlog.ID{m}) // fanned out
	late := newRecorder()
	subscribe(t, h, "moving", broker.From{Since: &ids[2]}, late)
	checkSequence(t, late.waitFor(t, 1), []backlog.ID{m})
}

// TestKeptPageExpires: a channel that went quiet after a storm lets its
// kept page go.
func TestKeptPageExpires(t *testing.T) {
	broker.SetKeptPageTTL(t, 50*time.Millisecond)
	h, _ := newPageCountingHub(t)
	create(t, h, "quiet", 100)
	ids := publish(t, h, "quiet", 3)
	rec := newRecorder()
	subscribe(t, h, "quiet", broker.From{Since: &ids[0]}, rec)
	checkSequence(t, rec.waitFor(t, 2), ids[1:])
	if h.KeptPageBytes() == 0 {
		t.Fatal("no page kept after a resume")
	}
	waitUntil(t, "the kept page to expire", func() bool { return h.KeptPageBytes() == 0 })
}
