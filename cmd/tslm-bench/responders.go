package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/responder"
)

// The responders of -scenario reqreply: internal apps serving every
// channel of the run, over the internal WebSocket (-serve ws) or straight
// from Redis (-serve redis), each answering a request with deriveReply.

// wsResponder is an internal app serving every channel over the internal
// listener's WebSocket, with plain frames (docs/protocol.md, "Serving
// requests"): it answers each request at once, from its reader.
type wsResponder struct {
	ws      *websocket.Conn
	closing atomic.Bool
	done    chan struct{}

	fault      string // a test fault, every faultEvery-th request
	faultEvery int

	replied atomic.Uint64 // replies acknowledged
	refused atomic.Uint64 // replies answered with an error
	example atomic.Pointer[string]
	ended   atomic.Pointer[string]
}

// connectResponder connects responder i to the internal listener and
// serves every channel with it.
func (r *bench) connectResponder(ctx context.Context, i int) (*wsResponder, error) {
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 30 * time.Second}
	ws, _, err := d.DialContext(ctx, r.tgt.internalWS, nil)
	if err != nil {
		return nil, err
	}
	ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	for c, name := range r.names {
		frame, _ := json.Marshal(map[string]string{"type": "serve", "ref": strconv.Itoa(c), "channel": name})
		if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			ws.Close()
			return nil, err
		}
	}
	// No request can come before every channel is served: the
	// requesters connect after the responders.
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for range r.names {
		var ack rrFrame
		if err := ws.ReadJSON(&ack); err != nil {
			ws.Close()
			return nil, fmt.Errorf("waiting for the serve acks: %w", err)
		}
		if ack.Type != "ack" {
			ws.Close()
			return nil, fmt.Errorf("serve answered %s %s %s", ack.Type, ack.Code, ack.Message)
		}
	}
	ws.SetReadDeadline(time.Time{})
	w := &wsResponder{ws: ws, done: make(chan struct{}), fault: r.spec.replyFault, faultEvery: r.spec.faultEvery}
	go w.serve()
	return w, nil
}

// serve answers every request frame with a reply derived from it.
func (w *wsResponder) serve() {
	defer close(w.done)
	var buf bytes.Buffer
	var reply, data, prevData []byte
	handed := 0
	for {
		_, rd, err := w.ws.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(rd)
		}
		if err != nil {
			if !w.closing.Load() {
				msg := err.Error()
				w.ended.Store(&msg)
			}
			return
		}
		var f rrFrame
		if err := json.Unmarshal(buf.Bytes(), &f); err != nil {
			w.refusal(buf.Bytes())
			continue
		}
		switch f.Type {
		case "ack":
			w.replied.Add(1)
			continue
		case "request":
		default:
			w.refusal(buf.Bytes())
			continue
		}
		handed++
		data = deriveReply(data, f.Data)
		answer := data
		if w.faultEvery > 0 && handed%w.faultEvery == 0 {
			switch w.fault {
			case faultDrop:
				continue
			case faultMisroute:
				if prevData != nil {
					answer = prevData
				}
			}
		}
		reply = append(reply[:0], `{"type":"reply","channel":`...)
		reply = strconv.AppendQuote(reply, f.Channel)
		reply = append(reply, `,"id":`...)
		reply = strconv.AppendQuote(reply, f.ID)
		reply = append(reply, `,"data":`...)
		reply = append(reply, answer...)
		reply = append(reply, '}')
		prevData = append(prevData[:0], data...)
		times := 1
		if w.fault == faultDuplicate && w.faultEvery > 0 && handed%w.faultEvery == 0 {
			times = 2
		}
		for range times {
			w.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if err := w.ws.WriteMessage(websocket.TextMessage, reply); err != nil {
				w.ws.Close() // the next read ends the loop, and says why
			}
		}
	}
}

func (w *wsResponder) refusal(frame []byte) {
	w.refused.Add(1)
	s := string(frame[:min(len(frame), 300)])
	w.example.CompareAndSwap(nil, &s)
}

func (w *wsResponder) close() {
	w.closing.Store(true)
	w.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	w.ws.Close()
	<-w.done
}

// serveRedis starts spec.responders workers of package responder
// serving every channel straight from Redis, in the gateway's consumer
// group (docs/redis.md, "Consuming requests"), and returns what stops
// them.
func (r *bench) serveRedis(ctx context.Context) (func(), error) {
	opts, err := redis.ParseURL(r.tgt.redisURL)
	if err != nil {
		return func() {}, fmt.Errorf("redis URL: %w", err)
	}
	// Each worker blocks one connection per channel, besides its replies.
	opts.PoolSize = r.spec.responders * (len(r.names) + responder.DefaultConcurrency)
	rdb := redis.NewClient(opts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return func() {}, fmt.Errorf("redis: %w", err)
	}
	r.xadd = rdb // not the gateway's connections
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	handler := func(_ context.Context, q responder.Request) (json.RawMessage, error) {
		return deriveReply(nil, q.Data), nil
	}
	run := newRunID()
	var wg sync.WaitGroup
	for i := range r.spec.responders {
		cfg := responder.RedisConfig{Client: rdb, Prefix: r.spec.redisPrefix, Consumer: fmt.Sprintf("tslm-bench-%s-%d", run, i)}
		wg.Go(func() {
			if err := responder.ServeRedis(sctx, cfg, handler, r.names...); err != nil {
				msg := err.Error()
				r.serveErr.CompareAndSwap(nil, &msg)
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
		rdb.Close()
	}, nil
}
