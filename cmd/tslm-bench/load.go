package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// spec is one run's load: a scenario's flags.
type spec struct {
	scenario    string
	channels    int
	subscribers int // per channel
	publishers  int
	publish     string  // api, ws or xadd
	rate        float64 // messages per second from all publishers; 0 as fast as they go
	size        int     // payload bytes
	duration    time.Duration
	drain       time.Duration // the longest wait for deliveries after publishing stops
	maxLen      int
	allowGaps   bool
	redisPrefix string
	dialers     int // connections opened at a time

	// idle and storm only (conns.go)
	conns      int           // subscribers in all, subscriber i on channel i % channels
	messages   int           // storm: messages published per channel while the subscribers are down
	settle     time.Duration // the wait before reading the gateway's memory
	localAddrs int           // subscribers dial from 127.0.0.1 … 127.0.0.<localAddrs> in turn
	gc         bool          // a started server collects its garbage before each memory reading

	// reqreply only (reqreply.go)
	requesters int           // public connections sending requests, requester i on channel i % channels
	inflight   int           // requests each keeps unanswered, without a rate
	responders int           // internal apps, each serving every channel
	serve      string        // how they serve: ws (the internal listener) or redis (consumer group tslm)
	timeout    time.Duration // each request's timeout_ms
	// Tests only: the WebSocket responders answer every faultEvery-th
	// request wrongly (faultDrop, faultMisroute).
	replyFault string
	faultEvery int
}

// subscriptions is the run's subscribers, one connection each.
func (s spec) subscriptions() int {
	if s.conns > 0 {
		return s.conns
	}
	return s.channels * s.subscribers
}

func (s spec) connections() int {
	if s.scenario == "reqreply" {
		if s.serve == "redis" {
			return s.requesters
		}
		return s.requesters + s.responders
	}
	n := s.subscriptions()
	if s.publish == "ws" {
		n += s.publishers
	}
	return n
}

// bench is one run against one target.
type bench struct {
	spec       spec
	tgt        *target
	progress   io.Writer
	cpuprofile string        // where the server's CPU profile goes, "" for none
	xadd       *redis.Client // -publish xadd's connections, nil otherwise
	names      []string
	subs       []*subscriber
	pubs       []*publisher
	httpc      *http.Client
	hist       histogram

	delivered atomic.Uint64 // message frames received
	accepted  atomic.Uint64 // of which new and in order
	published atomic.Uint64 // acknowledged publishes
	pubErrors atomic.Uint64
	connected atomic.Int64 // connections subscribed (idle and storm's progress)

	// reqreply: delivered counts verified replies, published acked
	// requests.
	reqs         []*requester
	resps        []*wsResponder
	requested    atomic.Uint64 // request frames sent
	stopRequests atomic.Bool
	serveErr     atomic.Pointer[string] // why serving from Redis failed

	errMu     sync.Mutex
	pubErrMsg string // the first publish error
}

// subscriber is one connection subscribed to one channel. Its fields
// other than ws and closing belong to its reader until done closes.
type subscriber struct {
	ws      *websocket.Conn
	channel int
	st      *stream
	closing atomic.Bool
	done    chan struct{}

	ended   error // why the connection ended before the run did
	errors  uint64
	example string // the first unexpected frame
}

// inFrame is what a subscriber reads of a server frame.
type inFrame struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	ID      string `json:"id"`
	Data    struct {
		T int64  `json:"t"` // the publisher's clock, Unix nanoseconds
		P int    `json:"p"` // the publisher
		S uint64 `json:"s"` // its sequence number on the channel
	} `json:"data"`
}

func newRunID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// setUp creates the channels and connects and subscribes the subscribers.
func (r *bench) setUp(ctx context.Context) error {
	if err := r.createChannels(ctx); err != nil {
		return err
	}
	return r.connectAll(ctx)
}

// createChannels names and creates the run's channels.
func (r *bench) createChannels(ctx context.Context) error {
	id := newRunID()
	r.names = make([]string, r.spec.channels)
	for i := range r.names {
		r.names[i] = fmt.Sprintf("bench-%s-%d", id, i)
	}
	r.httpc = &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: r.spec.publishers + r.spec.dialers, IdleConnTimeout: time.Minute},
	}
	body := fmt.Sprintf(`{"max_len":%d}`, r.spec.maxLen)
	err := r.each(ctx, len(r.names), func(ctx context.Context, i int) error {
		return r.call(ctx, http.MethodPut, r.tgt.api+"/v1/channels/"+r.names[i], []byte(body), http.StatusCreated)
	})
	if err != nil {
		return fmt.Errorf("creating channels: %w", err)
	}
	return nil
}

// connectAll connects and subscribes the subscribers.
func (r *bench) connectAll(ctx context.Context) error {
	r.subs = make([]*subscriber, r.spec.subscriptions())
	return r.each(ctx, len(r.subs), func(ctx context.Context, i int) error {
		s := &subscriber{channel: i % r.spec.channels, st: newStream(r.spec.publishers)}
		if _, err := r.connect(ctx, i, s, ""); err != nil {
			return err
		}
		r.subs[i] = s // a subscriber in r.subs has its reader
		return nil
	})
}

// connect dials subscriber i's connection, subscribes it to its channel
// (after ID since, unless ""), and starts its reader. It returns whether
// the ack said resumed (with since).
func (r *bench) connect(ctx context.Context, i int, s *subscriber, since string) (resumed bool, err error) {
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 30 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 1024}
	if n := r.spec.localAddrs; n > 1 {
		// Past about 28 000 (the ephemeral ports) connections to one
		// address and port need more source addresses.
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i%n+1))}}
		d.NetDialContext = nd.DialContext
	}
	ws, resp, err := d.DialContext(ctx, r.tgt.publicWS, nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
			return false, fmt.Errorf("subscriber %d: %v: HTTP %d %s", i, err, resp.StatusCode, strings.TrimSpace(string(b)))
		}
		return false, fmt.Errorf("subscriber %d: %w", i, err)
	}
	answerPingsPatiently(ws)
	if resumed, err = subscribe(ws, r.names[s.channel], since); err != nil {
		ws.Close()
		return false, fmt.Errorf("subscriber %d: %w", i, err)
	}
	s.ws, s.done = ws, make(chan struct{})
	s.closing.Store(false)
	r.connected.Add(1)
	go r.read(s)
	return resumed, nil
}

// answerPingsPatiently answers the server's pings as gorilla does, but
// with a pong that may wait 30 seconds for the socket rather than one: a
// load generator driving tens of thousands of connections on the same
// machine as the gateway (or in an emulated VM, vm.sh) is itself slow to
// get to a write, and a pong that misses gorilla's second breaks the
// connection on the tool's side, which is not what a run measures.
func answerPingsPatiently(ws *websocket.Conn) {
	ws.SetPingHandler(func(data string) error {
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(30*time.Second))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil
		}
		return err
	})
}

// subscribe subscribes ws to channel, after ID since unless "", and waits
// for the ack; it returns the ack's resumed.
func subscribe(ws *websocket.Conn, channel, since string) (resumed bool, err error) {
	cmd := map[string]string{"type": "subscribe", "ref": "s", "channel": channel}
	if since != "" {
		cmd["since"] = since
	}
	frame, _ := json.Marshal(cmd)
	ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return false, err
	}
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	var ack struct {
		Type, Ref, Code, Message string
		Resumed                  bool
	}
	if err := ws.ReadJSON(&ack); err != nil {
		return false, fmt.Errorf("waiting for the subscribe's ack: %w", err)
	}
	if ack.Type != "ack" || ack.Ref != "s" {
		return false, fmt.Errorf("subscribe answered %s %s %s", ack.Type, ack.Code, ack.Message)
	}
	ws.SetReadDeadline(time.Time{})
	return ack.Resumed, nil
}

// each runs f for 0..n-1, spec.dialers at a time, stopping at the first
// error.
func (r *bench) each(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.spec.dialers)
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error { return f(ctx, i) })
	}
	return g.Wait()
}

// call makes one HTTP request of the API and expects status want (or 200).
func (r *bench) call(ctx context.Context, method, url string, body []byte, want int) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := r.httpc.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != want && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d %s", method, url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// read is a subscriber's reader: it checks and counts every frame.
func (r *bench) read(s *subscriber) {
	defer close(s.done)
	name := r.names[s.channel]
	var buf bytes.Buffer
	for {
		_, rd, err := s.ws.NextReader()
		if err != nil {
			if !s.closing.Load() {
				s.ended = err
			}
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(rd); err != nil {
			if !s.closing.Load() {
				s.ended = err
			}
			return
		}
		now := time.Now()
		var f inFrame
		if err := json.Unmarshal(buf.Bytes(), &f); err != nil || f.Channel != name {
			s.unexpected(buf.Bytes())
			continue
		}
		switch f.Type {
		case "message":
			r.delivered.Add(1)
			r.hist.record(now.Sub(time.Unix(0, f.Data.T)))
			if s.st.message(f.ID, f.Data.P, f.Data.S) {
				r.accepted.Add(1)
			}
		case "gap":
			s.st.gaps++
		default:
			s.unexpected(buf.Bytes())
		}
	}
}

func (s *subscriber) unexpected(frame []byte) {
	s.errors++
	if s.example == "" {
		s.example = string(frame[:min(len(frame), 200)])
	}
}

// tearDown closes the subscribers and, on a target that outlives the
// run, deletes the channels.
func (r *bench) tearDown(ctx context.Context) {
	r.each(context.WithoutCancel(ctx), len(r.subs), func(ctx context.Context, i int) error {
		s := r.subs[i]
		if s == nil {
			return nil
		}
		s.closing.Store(true)
		s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		s.ws.Close()
		<-s.done
		return nil
	})
	for _, p := range r.pubs {
		p.close()
	}
	if r.tgt.outlives {
		r.each(context.WithoutCancel(ctx), len(r.names), func(ctx context.Context, i int) error {
			r.call(ctx, http.MethodDelete, r.tgt.api+"/v1/channels/"+r.names[i], nil, http.StatusNoContent)
			return nil
		})
	}
	r.httpc.CloseIdleConnections()
}

// verify decides the run's correctness from what every subscriber got.
func (r *bench) verify() Verdict {
	var v Verdict
	ackedTo := make([][]uint64, r.spec.channels)
	for c := range ackedTo {
		ackedTo[c] = make([]uint64, r.spec.publishers)
		for p, pub := range r.pubs {
			ackedTo[c][p] = pub.acked[c]
		}
	}
	for i, s := range r.subs {
		<-s.done
		v.add(s.st, ackedTo[s.channel], r.spec.allowGaps)
		v.Errors += s.errors
		if s.example != "" {
			v.problem(fmt.Sprintf("subscriber %d got an unexpected frame: %s", i, s.example))
		}
		if s.ended != nil {
			v.Disconnects++
			v.problem(fmt.Sprintf("subscriber %d of %s disconnected: %v", i, r.names[s.channel], s.ended))
		}
		if n := s.st.lost(ackedTo[s.channel]); n > 0 {
			v.problem(fmt.Sprintf("subscriber %d of %s missed %d messages", i, r.names[s.channel], n))
		}
		if s.st.duplicates > 0 || s.st.misordered > 0 {
			v.problem(fmt.Sprintf("subscriber %d of %s: %d duplicated or late, %d IDs out of order", i, r.names[s.channel], s.st.duplicates, s.st.misordered))
		}
	}
	v.PublishErrors = r.pubErrors.Load()
	if v.PublishErrors > 0 {
		v.problem(fmt.Sprintf("%d publishes failed, the first: %s", v.PublishErrors, r.pubErrMsg))
	}
	v.decide(r.spec.allowGaps)
	return v
}
