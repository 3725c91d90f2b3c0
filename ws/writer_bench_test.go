package ws

import (
	"fmt"
	"io"
	"net"
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

// BenchmarkWriteBurst is a connection's writer delivering bursts of live
// frames to a real client over loopback, which reads and discards them:
// one op is one burst, delivered and read. frames/write is how many frames
// share a write syscall; batching makes it grow with the burst, and a
// writer that writes each frame on its own shows 1 at every burst size.
func BenchmarkWriteBurst(b *testing.B) {
	for _, burst := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("burst=%d", burst), func(b *testing.B) {
			socks := make(chan *countingConn, 1)
			ts := startServerWith(b, Config{SendQueueFrames: 4096}, serverOptions{conn: func(c net.Conn) net.Conn {
				cc := &countingConn{Conn: c}
				socks <- cc
				return cc
			}})
			c := ts.dial(b)
			cc := <-socks
			conn := ts.onlyConn(b)
			got := make(chan struct{}, 4096)
			go func() {
				for {
					_, r, err := c.ws.NextReader()
					if err != nil {
						return
					}
					io.Copy(io.Discard, r)
					got <- struct{}{}
				}
			}()
			p := publication(0, `{"bid":1.5}`)
			p.Frame(v1Encoder)
			before := cc.count()
			frames := 0
			b.ReportAllocs()
			for b.Loop() {
				for range burst {
					if !conn.Deliver(p) {
						b.Fatal("Deliver refused a frame")
					}
				}
				for range burst {
					<-got
				}
				frames += burst
			}
			b.ReportMetric(float64(frames)/float64(cc.count()-before), "frames/write")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(frames), "ns/frame")
		})
	}
}
