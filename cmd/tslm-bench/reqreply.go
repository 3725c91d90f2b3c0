package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// -scenario reqreply: spec.requesters public connections each send
// request frames on one of spec.channels channels (requester i on channel
// i % channels), keeping spec.inflight unanswered (or at spec.rate in
// all); spec.responders internal apps serve every channel and answer each
// request with its data echoed beside a marker. Every requester checks
// that each of its requests got exactly one answer, the reply derived from
// that very request.

// replyMarker is what the bench's responders put beside the request's
// data, so that a reply the gateway made up (or took from elsewhere) is
// told from one of theirs.
const replyMarker = "tslm-bench"

// Test faults of the WebSocket responders: every n-th request they are
// handed is answered wrongly, so that the verification can be seen to
// catch it.
const (
	faultDrop     = "drop"     // not answered at all: the requester gets a timeout
	faultMisroute = "misroute" // answered with the reply derived from the request before it
	// answered twice: the gateway refuses the second reply (not_found),
	// which the responder counts, and the requester must see one answer
	faultDuplicate = "duplicate"
)

// ReqReplyResult is -scenario reqreply's part of the JSON line. CPU per
// round trip is the same figure as the run's per-delivered one: a
// delivery, in this scenario, is a verified reply.
type ReqReplyResult struct {
	Requesters int    `json:"requesters"`
	InFlight   int    `json:"in_flight"` // per requester, closed loop; with a rate, requests are sent at it whatever is in flight
	Responders int    `json:"responders"`
	Serve      string `json:"serve"` // how responders serve: ws or redis
	TimeoutMS  int64  `json:"timeout_ms"`

	Requests     uint64  `json:"requests"`       // request frames sent
	Acked        uint64  `json:"acked"`          // of which acknowledged
	Answered     uint64  `json:"answered"`       // replies, each verified, each for one request
	AnsweredPerS float64 `json:"answered_per_s"` // while requesting, per second of it
	Timeouts     uint64  `json:"timeouts"`
	Refused      uint64  `json:"refused"` // requests answered with an error frame instead of an ack

	GatewayUSPerRoundTrip *float64 `json:"gateway_cpu_us_per_round_trip"`
	RedisUSPerRoundTrip   *float64 `json:"redis_cpu_us_per_round_trip"`
	ServerUSPerRoundTrip  *float64 `json:"server_cpu_us_per_round_trip"`
	// LoadUSPerRoundTrip includes the responders: they run in the tool.
	LoadUSPerRoundTrip float64 `json:"load_cpu_us_per_round_trip"`
}

// request is what a requester knows of one of its requests.
type request struct {
	sent  time.Time
	id    string // from the ack; "" before it
	state uint8
}

const (
	reqSent uint8 = iota
	reqAcked
	reqAnswered // exactly one answer came
)

// requester is one public connection sending requests on one channel.
// Its requests and counters are guarded by mu; ws is written under wmu
// (by the reader in a closed loop, by its pacer with a rate).
type requester struct {
	idx, channel int
	ws           *websocket.Conn
	wmu          sync.Mutex
	closing      atomic.Bool
	done         chan struct{}

	mu       sync.Mutex
	reqs     []request // request i has ref and sequence number i+1
	inflight int
	frame    []byte // the request frame being written, under wmu
	data     []byte // its data, under wmu

	timeouts, refused, lost uint64
	duplicates, wrong       uint64
	errors                  uint64
	example                 string // the first wrong or unexpected frame
	ended                   error
}

// rrFrame is what a requester reads of a server frame.
type rrFrame struct {
	Type    string          `json:"type"`
	Ref     string          `json:"ref"`
	Channel string          `json:"channel"`
	ID      string          `json:"id"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
	Error   json.RawMessage `json:"error"`
}

// derivedReply is the data of a bench responder's reply.
type derivedReply struct {
	By   string `json:"by"`
	Echo struct {
		T int64  `json:"t"`
		P int    `json:"p"` // the requester
		S uint64 `json:"s"` // its sequence number: the ref
	} `json:"echo"`
}

// deriveReply is the reply a bench responder sends to a request with
// data: the data itself beside the marker.
func deriveReply(buf, data []byte) []byte {
	buf = append(buf[:0], `{"by":"`+replyMarker+`","echo":`...)
	buf = append(buf, data...)
	return append(buf, '}')
}

// measureReqReply runs -scenario reqreply against r.tgt.
func (r *bench) measureReqReply(ctx context.Context) (*Result, error) {
	probe, err := r.openProbe(ctx)
	if err != nil {
		return nil, err
	}
	defer probe.close()
	setUpStart := time.Now()
	stopServing, err := r.setUpReqReply(ctx)
	if err != nil {
		r.tearDownReqReply(ctx, stopServing)
		return nil, err
	}
	connectTime := time.Since(setUpStart)
	mode := fmt.Sprintf("%d in flight each", r.spec.inflight)
	if r.spec.rate > 0 {
		mode = fmt.Sprintf("%g requests/s in all", r.spec.rate)
	}
	fmt.Fprintf(r.progress, "tslm-bench: [%s] %d requesters on %d channels, %d responders (%s) ready in %.1fs; requesting for %s, %s\n",
		r.tgt.name, len(r.reqs), len(r.names), r.spec.responders, r.spec.serve, connectTime.Seconds(), r.spec.duration, mode)

	m, err := r.startMeter(ctx, probe)
	if err != nil {
		r.tearDownReqReply(ctx, stopServing)
		return nil, err
	}
	s0 := m.s0
	var stop atomic.Bool
	var pacers sync.WaitGroup
	for _, q := range r.reqs {
		if r.spec.rate > 0 {
			pacers.Go(func() { r.pace(q, &stop) })
		} else {
			for range r.spec.inflight {
				r.sendRequest(q)
			}
		}
	}
	interrupted := m.window(r.spec.duration)
	r.stopRequests.Store(true)
	stop.Store(true)
	pacers.Wait()
	s1 := m.sample()

	// Drain: every request sent is answered by its deadline at the
	// latest (a reply or a timeout), so wait until none is in flight,
	// or for spec.drain at most.
	m.drainWhile(func() bool { return r.inFlight() > 0 })
	s2 := m.sample()
	m.stop("requesting and draining")
	maxClients, maxPerNode := m.maxClients, m.maxPerNode
	r.tearDownReqReply(ctx, stopServing)
	res := r.result(s0, s1, s2, s1.published, maxClients, maxPerNode)
	res.Publish, res.Publishers, res.SubscribersPerChannel = "", 0, 0
	res.ConnectS = round3(connectTime.Seconds())
	res.Interrupted = interrupted
	rr := &ReqReplyResult{
		Requesters: r.spec.requesters, InFlight: r.spec.inflight, Responders: r.spec.responders, Serve: r.spec.serve,
		TimeoutMS: r.spec.timeout.Milliseconds(), Requests: r.requested.Load(), Acked: s2.published, Answered: s2.delivered,
		AnsweredPerS:          res.DeliveredPerS,
		GatewayUSPerRoundTrip: res.GatewayUSPerDelivered, RedisUSPerRoundTrip: res.RedisUSPerDelivered,
		ServerUSPerRoundTrip: res.ServerUSPerDelivered, LoadUSPerRoundTrip: res.LoadUSPerDelivered,
	}
	res.Expected = rr.Acked // every acknowledged request is due one reply
	res.ReqReply = rr
	res.Verify = r.verifyReqReply()
	rr.Timeouts, rr.Refused = res.Verify.Timeouts, res.Verify.Refused
	return res, nil
}

// setUpReqReply creates the channels, starts the responders, then
// connects the requesters. The returned function stops the responders
// (it is never nil).
func (r *bench) setUpReqReply(ctx context.Context) (stopServing func(), err error) {
	stopServing = func() {}
	if err := r.createChannels(ctx); err != nil {
		return stopServing, err
	}
	switch r.spec.serve {
	case "ws":
		for i := range r.spec.responders {
			w, err := r.connectResponder(ctx, i)
			if err != nil {
				return stopServing, fmt.Errorf("responder %d: %w", i, err)
			}
			r.resps = append(r.resps, w)
		}
		stopServing = func() {
			for _, w := range r.resps {
				w.close()
			}
		}
	case "redis":
		if stopServing, err = r.serveRedis(ctx); err != nil {
			return stopServing, err
		}
	}
	r.reqs = make([]*requester, r.spec.requesters)
	return stopServing, r.each(ctx, len(r.reqs), func(ctx context.Context, i int) error {
		q, err := r.connectRequester(ctx, i)
		if err != nil {
			return fmt.Errorf("requester %d: %w", i, err)
		}
		r.reqs[i] = q // a requester in r.reqs has its reader
		return nil
	})
}

// connectRequester dials requester i on the public listener and starts
// its reader.
func (r *bench) connectRequester(ctx context.Context, i int) (*requester, error) {
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 30 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 4096}
	ws, _, err := d.DialContext(ctx, r.tgt.publicWS, nil)
	if err != nil {
		return nil, err
	}
	answerPingsPatiently(ws)
	q := &requester{idx: i, channel: i % r.spec.channels, ws: ws, done: make(chan struct{})}
	go r.readReplies(q)
	return q, nil
}

// pace sends q's requests at its share of spec.rate until stop is set,
// on an open schedule (as publishLoop does): a requester that fell
// behind sends at once, but never more than a second's worth in a burst.
func (r *bench) pace(q *requester, stop *atomic.Bool) {
	interval := time.Duration(float64(time.Second) * float64(r.spec.requesters) / r.spec.rate)
	// Staggered, so that the requesters do not all send at once.
	sched := openSchedule{start: time.Now().Add(time.Duration(q.idx) * interval / time.Duration(r.spec.requesters)), interval: interval}
	for sched.wait(stop) {
		r.sendRequest(q)
	}
}

// sendRequest sends q's next request.
func (r *bench) sendRequest(q *requester) {
	q.mu.Lock()
	seq := uint64(len(q.reqs) + 1)
	now := time.Now()
	q.reqs = append(q.reqs, request{sent: now})
	q.inflight++
	q.mu.Unlock()
	r.requested.Add(1)

	q.wmu.Lock()
	defer q.wmu.Unlock()
	f := append(q.frame[:0], `{"type":"request","ref":"`...)
	f = strconv.AppendUint(f, seq, 10)
	f = append(f, `","channel":"`...)
	f = append(f, r.names[q.channel]...)
	f = append(f, `","timeout_ms":`...)
	f = strconv.AppendInt(f, r.spec.timeout.Milliseconds(), 10)
	f = append(f, `,"data":`...)
	q.data = payload(q.data, now.UnixNano(), q.idx, seq, r.spec.size)
	f = append(f, q.data...)
	f = append(f, '}')
	q.frame = f
	q.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := q.ws.WriteMessage(websocket.TextMessage, f); err != nil && !q.closing.Load() {
		// The reader sees the connection end too and fails the run.
		q.ws.Close()
	}
}

// readReplies is a requester's reader: it matches every ack and answer
// to the request of its ref and checks it, and in a closed loop sends
// the next request for each answer.
func (r *bench) readReplies(q *requester) {
	defer close(q.done)
	name := r.names[q.channel]
	var buf bytes.Buffer
	for {
		_, rd, err := q.ws.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(rd)
		}
		if err != nil {
			if !q.closing.Load() {
				q.ended = err
			}
			return
		}
		now := time.Now()
		var f rrFrame
		if err := json.Unmarshal(buf.Bytes(), &f); err != nil {
			q.unexpected(&q.errors, buf.Bytes())
			continue
		}
		answered, ok := q.frameIn(&f, name, buf.Bytes(), now, &r.hist)
		if answered {
			r.delivered.Add(1)
		}
		if ok && f.Type == "ack" {
			r.published.Add(1)
		}
		if answered && r.spec.rate == 0 && !r.stopRequests.Load() {
			r.sendRequest(q) // closed loop: one answered, one more
		}
	}
}

// frameIn checks one frame f (raw as received at now) from the gateway
// against q's requests on channel name. It reports whether f was a
// correct answer (then recorded in h), and whether it was expected at
// all.
func (q *requester) frameIn(f *rrFrame, name string, raw []byte, now time.Time, h *histogram) (answered, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	seq, err := strconv.ParseUint(f.Ref, 10, 64)
	if err != nil || seq == 0 || seq > uint64(len(q.reqs)) || f.Channel != "" && f.Channel != name {
		q.unexpected(&q.wrong, raw) // no request of this requester's
		return false, false
	}
	rq := &q.reqs[seq-1]
	if rq.state == reqAnswered {
		q.unexpected(&q.duplicates, raw)
		return false, false
	}
	switch {
	case f.Type == "ack" && rq.state == reqSent && f.ID != "":
		rq.state, rq.id = reqAcked, f.ID
		return false, true
	case f.Type == "error" && f.ID == "" && rq.state == reqSent:
		// Refused: never queued, so never answered.
		rq.state = reqAnswered
		q.inflight--
		q.unexpected(&q.refused, raw)
		return false, true
	case rq.state != reqAcked || f.ID != rq.id:
		// An answer before its ack, or naming another request's ID.
		q.unexpected(&q.wrong, raw)
		return false, false
	case f.Type == "error" && f.Code == "timeout":
		rq.state = reqAnswered
		q.inflight--
		q.unexpected(&q.timeouts, raw)
		return false, true
	case f.Type == "reply" && f.Error == nil:
		rq.state = reqAnswered
		q.inflight--
		var d derivedReply
		if json.Unmarshal(f.Data, &d) != nil || d.By != replyMarker || d.Echo.P != q.idx || d.Echo.S != seq || d.Echo.T != rq.sent.UnixNano() {
			q.unexpected(&q.wrong, raw) // another request's reply, or none of a bench responder's
			return false, false
		}
		h.record(now.Sub(rq.sent))
		return true, true
	}
	// A refusal by the app (the bench's never refuse), or an error that
	// is no timeout: answered, but not as it should have been.
	rq.state = reqAnswered
	q.inflight--
	q.unexpected(&q.errors, raw)
	return false, true
}

// unexpected counts a frame that should not have come in counter, and
// keeps the first such frame; q.mu held unless the reader alone runs.
func (q *requester) unexpected(counter *uint64, frame []byte) {
	*counter++
	if q.example == "" {
		q.example = string(frame[:min(len(frame), 300)])
	}
}

// inFlight is the requests sent and not answered yet, over every
// requester.
func (r *bench) inFlight() int {
	n := 0
	for _, q := range r.reqs {
		q.mu.Lock()
		n += q.inflight
		q.mu.Unlock()
	}
	return n
}

// tearDownReqReply closes the requesters, stops the responders, and, on
// a target that outlives the run, deletes the channels (after the
// responders, which would otherwise wait for the channels to come back).
func (r *bench) tearDownReqReply(ctx context.Context, stopServing func()) {
	for _, q := range r.reqs {
		if q == nil {
			continue
		}
		q.closing.Store(true)
		q.wmu.Lock()
		q.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		q.wmu.Unlock()
		q.ws.Close()
		<-q.done
	}
	stopServing()
	r.tearDown(ctx)
}

// verifyReqReply decides the run's correctness: every request sent got
// exactly one answer, the reply the responders derived from it, and no
// requester got anything else.
func (r *bench) verifyReqReply() Verdict {
	var v Verdict
	for i, q := range r.reqs {
		<-q.done
		var unanswered uint64
		for _, rq := range q.reqs {
			if rq.state != reqAnswered {
				unanswered++
			}
		}
		v.Lost += unanswered
		v.Duplicates += q.duplicates
		v.WrongReplies += q.wrong
		v.Timeouts += q.timeouts
		v.Refused += q.refused
		v.Errors += q.errors
		if unanswered > 0 {
			v.problem(fmt.Sprintf("requester %d: %d requests of %d never answered", i, unanswered, len(q.reqs)))
		}
		if q.example != "" {
			v.problem(fmt.Sprintf("requester %d: %d duplicated, %d wrong, %d timeouts, %d refused, %d other errors; the first: %s",
				i, q.duplicates, q.wrong, q.timeouts, q.refused, q.errors, q.example))
		}
		if q.ended != nil {
			v.Disconnects++
			v.problem(fmt.Sprintf("requester %d disconnected: %v", i, q.ended))
		}
	}
	for i, w := range r.resps {
		v.Errors += w.refused.Load()
		if e := w.example.Load(); e != nil {
			v.problem(fmt.Sprintf("responder %d: %d replies refused; the first: %s", i, w.refused.Load(), *e))
		}
		if e := w.ended.Load(); e != nil {
			v.Disconnects++
			v.problem(fmt.Sprintf("responder %d disconnected: %v", i, *e))
		}
	}
	if e := r.serveErr.Load(); e != nil {
		v.Errors++
		v.problem("serving from Redis: " + *e)
	}
	v.decide(false)
	return v
}

// summarizeReqReply writes a reqreply result for humans.
func summarizeReqReply(w io.Writer, res *Result) {
	rr := res.ReqReply
	fmt.Fprintf(w, "\n== %s: reqreply, %d requesters on %d channels, %d responders (%s), ", res.Target, rr.Requesters, res.Channels, rr.Responders, rr.Serve)
	if res.Rate > 0 {
		fmt.Fprintf(w, "%g requests/s", res.Rate)
	} else {
		fmt.Fprintf(w, "%d in flight each", rr.InFlight)
	}
	fmt.Fprintf(w, ", %d B, %.1fs\n", res.Size, res.DurationS)
	fmt.Fprintf(w, "   answered    %s/s (%d of %d requests, %d acknowledged; %d timeouts, %d refused; drained in %.2fs)\n",
		si(rr.AnsweredPerS), rr.Answered, rr.Requests, rr.Acked, rr.Timeouts, rr.Refused, res.DrainS)
	l := res.LatencyMS
	fmt.Fprintf(w, "   round trip  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n", l.P50, l.P90, l.P99, l.P999, l.Max)
	if res.GatewayCPUS != nil {
		fmt.Fprintf(w, "   gateway     %.2f s CPU, %.2f µs per round trip; RSS %.0f MiB (peak %.0f)\n",
			*res.GatewayCPUS, *rr.GatewayUSPerRoundTrip, *res.GatewayRSSMiB, *res.GatewayPeakRSSMiB)
	} else {
		fmt.Fprintln(w, "   gateway     CPU and memory not measured (give -gateway-pid)")
	}
	if res.RedisCPUS != nil {
		fmt.Fprintf(w, "   redis       %.2f s CPU, %.2f µs per round trip; %d clients at most (%d at the end)\n",
			*res.RedisCPUS, *rr.RedisUSPerRoundTrip, *res.RedisClientsMax, *res.RedisClientsAtEnd)
		if rr.ServerUSPerRoundTrip != nil {
			fmt.Fprintf(w, "   server      %.2f µs CPU per round trip (gateway + Redis)\n", *rr.ServerUSPerRoundTrip)
		}
	}
	fmt.Fprintf(w, "   load tool   %.2f s CPU, %.2f µs per round trip (requesters and responders)\n", res.LoadCPUS, rr.LoadUSPerRoundTrip)
	if vd := res.Verify; vd.OK {
		fmt.Fprintln(w, "   verified    every request answered once, by the reply derived from it")
	} else {
		fmt.Fprintf(w, "   FAILED      unanswered %d, duplicated %d, wrong replies %d, timeouts %d, refused %d, disconnects %d, other errors %d\n",
			vd.Lost, vd.Duplicates, vd.WrongReplies, vd.Timeouts, vd.Refused, vd.Disconnects, vd.Errors)
		for _, p := range vd.Problems {
			fmt.Fprintf(w, "               %s\n", p)
		}
	}
}
