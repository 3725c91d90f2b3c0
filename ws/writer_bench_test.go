package ws

import (
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/histogram"
)

// BenchmarkLiveFrame is one live message's way through a connection, its
// socket aside: Deliver (the hub's side: the cached frame into the send
// queue) and the writer's take and bookkeeping of the written frame, on
// one connection per goroutine. It is the per-delivery path that metrics
// must not slow down: compare runs with benchstat.
func BenchmarkLiveFrame(b *testing.B) {
	p := &broker.Publication{Channel: "prices", ID: backlog.ID{Ms: uint64(time.Now().UnixMilli())}, Data: []byte(`{"bid":1.5}`)}
	p.Frame(v1Encoder)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c := benchConn()
		var batch []queued
		for pb.Next() {
			if !c.Deliver(p) {
				b.Fatal("Deliver refused a frame into an empty queue")
			}
			batch = c.queue.take(batch)
			for _, it := range batch {
				// The writer reads the clock for each frame's write
				// deadline, and times live messages with it.
				now := time.Now()
				c.wrote(it, now)
				c.queue.done(1, len(it.frame))
			}
		}
	})
}

// benchConn is a connection with nothing but what the live path touches.
func benchConn() *conn {
	return &conn{enc: v1Encoder, queue: newSendQueue(1024, 4<<20, nil), latency: histogram.New(publishToWriteBounds)}
}
