package integration

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/redistest"
)

// BenchmarkInternalPublish measures a trusted publisher on the internal
// listener: one WebSocket connection sending publish commands back to back
// while a second goroutine reads the acks, as a pipelining client does. One
// op is one publish, acknowledged. The in-memory backlog is the baseline
// for the Redis one, in the same run.
func BenchmarkInternalPublish(b *testing.B) {
	b.Run("backlog=memory", func(b *testing.B) {
		benchmarkInternalPublish(b, startReplica(b, nil))
	})
	b.Run("backlog=redis", func(b *testing.B) {
		srv := redistest.Start(b, redistest.Options{})
		benchmarkInternalPublish(b, startReplica(b, map[string]string{"TSLM_REDIS_URL": srv.URL()}))
	})
}

func benchmarkInternalPublish(b *testing.B, r *replica) {
	r.create(b, "bench", map[string]any{"max_len": 100000})
	pub := dial(b, r.internalURL)
	frame, err := json.Marshal(map[string]any{"type": "publish", "channel": "bench", "data": map[string]any{"bid": 1.08512, "ask": 1.08519}})
	if err != nil {
		b.Fatal(err)
	}
	acks := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() {
		for range b.N {
			f, err := pub.next(30 * time.Second)
			if err == nil && f["type"] != "ack" {
				err = &websocket.CloseError{Text: "not an ack"}
			}
			if err != nil {
				acks <- err
				return
			}
		}
		acks <- nil
	}()
	for range b.N {
		if err := pub.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-acks; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "publishes/s")
}
