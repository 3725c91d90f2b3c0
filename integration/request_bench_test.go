package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/redistest"
)

// BenchmarkRequestReply measures correlated replies through Redis, answered
// by the example echo responder (a separate process consuming the request
// stream with a consumer group), against the baseline of the same gateway
// and Redis: a plain publish→receive round trip, each client publishing to
// a channel it subscribes to. 100 clients; at rate=1000 each sends one op
// every 100ms (staggered), 1000 ops/s in all; at rate=max each keeps one op
// in flight. One op is one round trip: request→reply, or publish→message.
//
//	go test -run '^$' -bench RequestReply -benchtime 5000x -count 5 ./integration/
func BenchmarkRequestReply(b *testing.B) {
	const clients = 100
	srv := redistest.Start(b, redistest.Options{})
	r := startReplica(b, map[string]string{
		"TSLM_REDIS_URL":    srv.URL(),
		"TSLM_PUBLIC_ALLOW": "subscribe,publish,request",
		"TSLM_PUBLIC_RATE":  "0",
	})
	r.create(b, "orders", nil)
	for i := range clients {
		r.create(b, fmt.Sprintf("echo-%d", i), nil)
	}
	startEchoResponder(b, map[string]string{"TSLM_REDIS_URL": srv.URL()}, "orders")

	for _, rate := range []string{"1000", "max"} {
		for _, path := range []string{"publish", "request"} {
			b.Run("path="+path+"/rate="+rate, func(b *testing.B) {
				srv.Client().ConfigResetStat(b.Context())
				benchmarkRoundTrips(b, r, clients, path, rate == "max")
				if os.Getenv("TSLM_BENCH_COMMANDSTATS") != "" {
					info, _ := srv.Client().Info(b.Context(), "commandstats").Result()
					os.WriteFile(os.Getenv("TSLM_BENCH_COMMANDSTATS"), []byte(info), 0o644)
				}
			})
		}
	}
}

func benchmarkRoundTrips(b *testing.B, r *replica, clients int, path string, closedLoop bool) {
	perClient := max(1, b.N/clients)
	const interval = 100 * time.Millisecond // per client: 1000/s from 100 clients
	conns := make([]*client, clients)
	for i := range conns {
		conns[i] = dial(b, r.publicURL)
		if path == "publish" {
			conns[i].subscribe(fmt.Sprintf("echo-%d", i), nil)
		}
	}
	var mu sync.Mutex
	latencies := make([]time.Duration, 0, perClient*clients)
	errs := make(chan error, clients)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, cl := range conns {
		wg.Go(func() {
			sent := make([]time.Time, perClient)
			var sentMu sync.Mutex
			next := make(chan struct{}, 1)
			done := make(chan error, 1)
			go func() { // the reader
				got := 0
				for got < perClient {
					f, err := cl.next(30 * time.Second)
					if err != nil {
						done <- err
						return
					}
					var seq int
					switch {
					case path == "request" && f["type"] == "reply":
						fmt.Sscanf(f["ref"].(string), "r%d", &seq)
					case path == "publish" && f["type"] == "message":
						seq = int(f["data"].(map[string]any)["seq"].(float64))
					case f["type"] == "ack":
						continue
					default:
						done <- fmt.Errorf("unexpected frame %v", f)
						return
					}
					sentMu.Lock()
					d := time.Since(sent[seq])
					sentMu.Unlock()
					mu.Lock()
					latencies = append(latencies, d)
					mu.Unlock()
					got++
					if closedLoop {
						next <- struct{}{}
					}
				}
				done <- nil
			}()
			time.Sleep(time.Duration(i) * interval / time.Duration(clients))
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for seq := range perClient {
				var frame map[string]any
				if path == "request" {
					frame = map[string]any{"type": "request", "ref": fmt.Sprintf("r%d", seq), "channel": "orders", "data": map[string]any{"seq": seq}, "timeout_ms": 10000}
				} else {
					frame = map[string]any{"type": "publish", "channel": fmt.Sprintf("echo-%d", i), "data": map[string]any{"seq": seq}}
				}
				msg, _ := json.Marshal(frame)
				sentMu.Lock()
				sent[seq] = time.Now()
				sentMu.Unlock()
				if err := cl.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
					errs <- err
					return
				}
				if closedLoop {
					<-next
				} else {
					<-tick.C
				}
			}
			if err := <-done; err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "roundtrips/s")
	b.ReportMetric(0, "ns/op")
}
