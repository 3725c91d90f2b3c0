package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

// publisher publishes one message at a time, waiting for each to be
// acknowledged, to every channel in turn. Its fields belong to its
// goroutine until the run's publishers have stopped.
type publisher struct {
	idx   int
	seq   []uint64 // per channel: the last sequence number sent
	acked []uint64 // per channel: the highest acknowledged
	send  func(ctx context.Context, channel string, payload []byte) error
	close func()
}

// newPublishers connects spec.publishers publishers by spec.publish.
func (r *bench) newPublishers(ctx context.Context) error {
	var rdb *redis.Client
	if r.spec.publish == "xadd" || r.spec.publish == "fcall" {
		opts, err := redis.ParseURL(r.tgt.redisURL)
		if err != nil {
			return fmt.Errorf("redis URL: %w", err)
		}
		opts.PoolSize = r.spec.publishers
		rdb = redis.NewClient(opts)
		r.xadd = rdb
		if err := rdb.Ping(ctx).Err(); err != nil {
			rdb.Close()
			return fmt.Errorf("redis: %w", err)
		}
	}
	var closeOnce sync.Once
	for i := range r.spec.publishers {
		p := &publisher{idx: i, seq: make([]uint64, r.spec.channels), acked: make([]uint64, r.spec.channels), close: func() {}}
		switch r.spec.publish {
		case "api":
			p.send = r.publishAPI
		case "ws":
			send, closeWS, err := r.wsPublisher(ctx)
			if err != nil {
				return fmt.Errorf("publisher %d: %w", i, err)
			}
			p.send, p.close = send, closeWS
		case "xadd":
			prefix := r.spec.redisPrefix
			maxLen := int64(r.spec.maxLen)
			p.send = func(ctx context.Context, channel string, payload []byte) error {
				return rdb.XAdd(ctx, &redis.XAddArgs{Stream: prefix + "ch:{" + channel + "}", MaxLen: maxLen, Approx: true,
					Values: []string{"data", string(payload)}}).Err()
			}
			p.close = func() { closeOnce.Do(func() { rdb.Close() }) }
		case "fcall":
			// The documented way for direct publishers: the gateway's
			// own append, with the notification that feeds followers
			// at once (docs/redis.md, "Publishing directly").
			prefix := r.spec.redisPrefix
			p.send = func(ctx context.Context, channel string, payload []byte) error {
				tag := "{" + channel + "}"
				return rdb.FCall(ctx, "tslm_publish", []string{prefix + "meta:" + tag, prefix + "ch:" + tag, prefix + "req:" + tag}, string(payload)).Err()
			}
			p.close = func() { closeOnce.Do(func() { rdb.Close() }) }
		}
		r.pubs = append(r.pubs, p)
	}
	return nil
}

func (r *bench) publishAPI(ctx context.Context, channel string, payload []byte) error {
	return r.call(ctx, http.MethodPost, r.tgt.api+"/v1/channels/"+channel+"/messages", payload, http.StatusCreated)
}

// wsPublisher connects one WebSocket publisher to the internal listener.
func (r *bench) wsPublisher(ctx context.Context) (func(context.Context, string, []byte) error, func(), error) {
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 30 * time.Second}
	ws, _, err := d.DialContext(ctx, r.tgt.internalWS, nil)
	if err != nil {
		return nil, nil, err
	}
	var frame []byte
	send := func(_ context.Context, channel string, payload []byte) error {
		frame = append(frame[:0], `{"type":"publish","channel":"`...)
		frame = append(frame, channel...)
		frame = append(frame, `","data":`...)
		frame = append(frame, payload...)
		frame = append(frame, '}')
		ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			return err
		}
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			var ans struct{ Type, Code, Message string }
			if err := ws.ReadJSON(&ans); err != nil {
				return err
			}
			switch ans.Type {
			case "ack":
				return nil
			case "error":
				return fmt.Errorf("%s: %s", ans.Code, ans.Message)
			}
		}
	}
	closeWS := func() {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		ws.Close()
	}
	return send, closeWS, nil
}

// publish runs every publisher until stop is set, at spec.rate if set.
// A publish in flight when stop is set completes: cancelling it would
// leave unknown whether it was stored.
func (r *bench) publish(stop *atomic.Bool) {
	var wg sync.WaitGroup
	var interval time.Duration
	if r.spec.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(r.spec.publishers) / r.spec.rate)
	}
	for _, p := range r.pubs {
		wg.Go(func() { r.publishLoop(p, stop, interval) })
	}
	wg.Wait()
}

// openSchedule paces sends every interval from start on an open schedule:
// a sender that fell behind sends at once, but never more than a second's
// worth in a burst.
type openSchedule struct {
	start    time.Time
	interval time.Duration
	n        int
}

// wait sleeps until the next send is due; false once stop is set.
func (o *openSchedule) wait(stop *atomic.Bool) bool {
	next := o.start.Add(time.Duration(o.n) * o.interval)
	if wait := time.Until(next); wait > 0 {
		time.Sleep(wait)
	} else if -wait > time.Second {
		o.start, o.n = time.Now(), 0
	}
	o.n++
	return !stop.Load()
}

func (r *bench) publishLoop(p *publisher, stop *atomic.Bool, interval time.Duration) {
	c := p.idx * r.spec.channels / r.spec.publishers // publishers start spread over the channels
	var buf []byte
	sched := openSchedule{start: time.Now(), interval: interval}
	for !stop.Load() {
		if interval > 0 && !sched.wait(stop) {
			return
		}
		p.seq[c]++
		buf = payload(buf, time.Now().UnixNano(), p.idx, p.seq[c], r.spec.size)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := p.send(ctx, r.names[c], buf)
		cancel()
		if err != nil {
			if r.pubErrors.Add(1) == 1 {
				r.errMu.Lock()
				r.pubErrMsg = fmt.Sprintf("publisher %d on %s: %v", p.idx, r.names[c], err)
				r.errMu.Unlock()
			}
		} else {
			p.acked[c] = p.seq[c]
			r.published.Add(1)
		}
		if c++; c == r.spec.channels {
			c = 0
		}
	}
}

// payload is a message's data: the publisher's clock (for the latency),
// the publisher and its sequence number on the channel (for the
// verification), padded with "x" to size bytes.
func payload(buf []byte, nanos int64, publisher int, seq uint64, size int) []byte {
	buf = append(buf[:0], `{"t":`...)
	buf = strconv.AppendInt(buf, nanos, 10)
	buf = append(buf, `,"p":`...)
	buf = strconv.AppendInt(buf, int64(publisher), 10)
	buf = append(buf, `,"s":`...)
	buf = strconv.AppendUint(buf, seq, 10)
	buf = append(buf, `,"x":"`...)
	for len(buf)+2 < size {
		buf = append(buf, 'x')
	}
	return append(buf, `"}`...)
}
