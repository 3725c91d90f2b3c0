package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/bearer"
	"github.com/tslm/tslm/internal/histogram"
)

// Server-Sent Events, docs/protocol.md "Server-Sent Events (fallback)": a
// subscribe-only transport for clients behind proxies that break
// WebSockets. A stream is a connection like any other of its Server: it
// takes a slot (and one of its address's), passes the origin check, the
// credentials and the policy, has a send queue counted against the shared
// budget, and Shutdown ends it. The handler's goroutine writes; another
// runs the replays, one channel after the other, while the hub delivers
// live messages to the queue.

// sseRetry asks EventSource to reconnect after 1s, not its default 3s: a
// stream ends on purpose (shutdown, slow consumer) and the client should
// resume at once.
const sseRetry = "retry: 1000\n\n"

// Stream items are whole events, except that the writer prefixes messages
// and subscribed events with the stream's cursor (id:), which only it
// knows in the order the client reads them.
var (
	sseMessagePrefix    = []byte("data: ")
	sseSubscribedPrefix = []byte("event: subscribed\n")
	ssePing             = []byte(": ping\n\n")
	sseShutdown         = []byte("event: shutdown\ndata: {}\n\n")
)

// sseEncoder frames publications as events: data is one line of JSON, as
// the v1 frame minus its type.
var sseEncoder = &broker.Encoder{Encode: func(p *broker.Publication) []byte {
	if p.Deleted {
		return append(append([]byte("event: deleted\ndata: {\"channel\":\""), p.Channel...), "\"}\n\n"...)
	}
	if p.Gap {
		b := append([]byte("event: gap\ndata: {\"channel\":\""), p.Channel...)
		b = append(b, `","after":"`...)
		b = p.ID.AppendTo(b)
		return append(b, "\"}\n\n"...)
	}
	data := p.Data
	if bytes.ContainsAny(data, "\r\n") {
		// Pretty-printed JSON: a line break would end the data line.
		// Inside strings they are escaped, so compacting removes them all.
		var c bytes.Buffer
		if json.Compact(&c, data) == nil {
			data = c.Bytes()
		}
	}
	b := make([]byte, 0, 64+len(p.Channel)+len(data))
	b = append(b, `data: {"channel":"`...)
	b = append(b, p.Channel...)
	b = append(b, `","id":"`...)
	b = p.ID.AppendTo(b)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, "}\n\n"...)
}}

// sseChannel is one channel of a stream request.
type sseChannel struct {
	name string
	from broker.From
	// after is the cursor's position for the channel before any of its
	// messages: since, or the head of a live-only subscription; zero for
	// a last without one (the URL's last applies again).
	after    backlog.ID
	hasAfter bool
}

// sseRequest is a parsed GET /v1/sse.
type sseRequest struct {
	channels []*sseChannel
}

func sseBad(format string, args ...any) *broker.Error { return badRequest(format, args...) }

// parseSSE reads the channels, their since/last and the Last-Event-ID
// cursor. Credentials are read later, after the cheaper checks.
func (s *Server) parseSSE(r *http.Request) (*sseRequest, *broker.Error) {
	q := r.URL.Query()
	names := q["channel"]
	if len(names) == 0 {
		return nil, sseBad("missing parameter \"channel\": name one or more, as ?channel=a&channel=b")
	}
	if len(names) > s.cfg.MaxSubscriptions {
		return nil, broker.ErrLimit.With("too many channels: a stream may have at most %d", s.cfg.MaxSubscriptions)
	}
	req := &sseRequest{}
	byName := make(map[string]*sseChannel, len(names))
	for _, n := range names {
		if !backlog.ValidChannel(n) {
			return nil, broker.ErrBadChannel
		}
		if broker.IsReserved(n) {
			return nil, broker.ErrReserved
		}
		if byName[n] != nil {
			return nil, sseBad("channel %s is named more than once", n)
		}
		c := &sseChannel{name: n}
		byName[n] = c
		req.channels = append(req.channels, c)
	}
	positioned := make(map[string]bool)
	position := func(param, v string) (*sseChannel, string, *broker.Error) {
		i := strings.LastIndexByte(v, ':')
		if i < 0 {
			return nil, "", sseBad("%s must be CHANNEL:%s", param, map[string]string{"since": "ID", "last": "N"}[param])
		}
		c := byName[v[:i]]
		if c == nil {
			return nil, "", sseBad("%s names channel %q, which is not one of the stream's channels", param, truncate(v[:i], 128))
		}
		if positioned[c.name] {
			return nil, "", sseBad("channel %s has more than one since or last", c.name)
		}
		positioned[c.name] = true
		return c, v[i+1:], nil
	}
	for _, v := range q["since"] {
		c, idText, perr := position("since", v)
		if perr != nil {
			return nil, perr
		}
		id, err := backlog.ParseID(idText)
		if err != nil {
			return nil, sseBad("since of %s must be a message id of the form <ms>-<seq>", c.name)
		}
		c.from = broker.From{Since: &id}
		c.after, c.hasAfter = id, true
	}
	for _, v := range q["last"] {
		c, nText, perr := position("last", v)
		if perr != nil {
			return nil, perr
		}
		n, err := strconv.Atoi(nText)
		if err != nil || n < 0 {
			return nil, sseBad("last of %s must be a non-negative integer", c.name)
		}
		c.from = broker.From{Last: n}
	}
	if values := r.Header.Values("Last-Event-ID"); len(values) > 0 {
		cursor, ok := parseCursor(values)
		if !ok {
			return nil, sseBad("malformed Last-Event-ID: send back the id of the last event received, as is")
		}
		for name, id := range cursor {
			// A channel the URL does not name is not this stream's.
			if c := byName[name]; c != nil {
				c.from = broker.From{Since: &id}
				c.after, c.hasAfter = id, true
			}
		}
	}
	return req, nil
}

// parseCursor parses a Last-Event-ID, NAME=ID,NAME=ID…; an empty one is
// no cursor (EventSource sends none until an event had an id).
func parseCursor(values []string) (map[string]backlog.ID, bool) {
	if len(values) > 1 {
		return nil, false
	}
	cursor := make(map[string]backlog.ID)
	if strings.TrimSpace(values[0]) == "" {
		return cursor, true
	}
	for entry := range strings.SplitSeq(values[0], ",") {
		name, idText, ok := strings.Cut(entry, "=")
		if !ok || !backlog.ValidChannel(name) {
			return nil, false
		}
		id, err := backlog.ParseID(idText)
		if err != nil {
			return nil, false
		}
		if _, dup := cursor[name]; dup {
			return nil, false
		}
		cursor[name] = id
	}
	return cursor, true
}

// sseStatus is the HTTP status of an error refusing a stream: the HTTP
// API's, except that a limit the request itself exceeds (too many
// channels) is a bad request, not an entity the server cannot process.
func sseStatus(code broker.Code) int {
	if code == broker.CodeLimitExceeded {
		return http.StatusBadRequest
	}
	return code.HTTPStatus()
}

// sseError answers a refused stream with the HTTP API's error body.
func sseError(w http.ResponseWriter, status int, retryAfter time.Duration, code broker.Code, msg string) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
	}
	w.Header().Set("Cache-Control", "no-cache")
	broker.WriteHTTPError(w, status, code, msg)
}

// sseFail answers err, a hub's or a check's, before the stream.
func (s *Server) sseFail(w http.ResponseWriter, err error) {
	e := broker.ErrorOf(err)
	switch e.Code {
	case broker.CodeInternal, broker.CodeCanceled:
		s.cfg.Logger.Error("event stream refused", "err", err)
		e = broker.ErrInternal
	}
	var retry time.Duration
	if e.Code == broker.CodeUnavailable {
		retry = retryAfterShutdown
	}
	if e.Code == broker.CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", bearer.Challenge(""))
	}
	sseError(w, sseStatus(e.Code), retry, e.Code, e.Message)
}

// ServeSSE serves GET /v1/sse: it checks and subscribes every channel, and
// only then starts the stream, so that every refusal is an HTTP status
// (EventSource gives up for good on one, and retries a stream that ends).
// The checks go in ServeHTTP's order, cheapest first: listener token,
// request, origin, connections, credentials.
func (s *Server) ServeSSE(w http.ResponseWriter, r *http.Request) {
	if !s.streamToken(w, r) {
		return
	}
	req, perr := s.parseSSE(r)
	if perr != nil {
		s.sseFail(w, perr)
		return
	}
	origin := r.Header.Get("Origin")
	if !s.origins.allow(origin, r.Host) {
		s.stats.refused[refusedOrigin].Add(1)
		sseError(w, http.StatusForbidden, 0, broker.CodeForbidden,
			fmt.Sprintf("origin %q not allowed: add it to %s", origin, s.cfg.Names.AllowedOrigins))
		return
	}
	if origin != "" {
		// EventSource is a CORS request: without this a page of another
		// allowed origin could not read the stream, nor its refusals.
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
	}
	ip := s.cfg.ClientIP(r)
	if why, ok := s.reserve(ip); !ok {
		s.stats.refused[why].Add(1)
		switch why {
		case refusedShutdown:
			sseError(w, http.StatusServiceUnavailable, retryAfterShutdown, broker.CodeUnavailable,
				"server shutting down: connect again, to another replica")
		case refusedMaxConnectionsPerIP:
			sseError(w, http.StatusTooManyRequests, retryAfterFull, broker.CodeRateLimited,
				fmt.Sprintf("too many connections from %s: this listener allows %d per client address (%s); close one, or retry later",
					ip, s.cfg.MaxConnectionsPerIP, s.cfg.Names.MaxConnectionsPerIP))
		default:
			sseError(w, http.StatusServiceUnavailable, retryAfterFull, broker.CodeUnavailable,
				fmt.Sprintf("too many connections: this listener is at its limit of %d (%s); retry later, with backoff",
					s.cfg.MaxConnections, s.cfg.Names.MaxConnections))
		}
		return
	}
	st, ok := s.openStream(w, r, req, ip)
	if !ok {
		s.release(ip)
		return
	}
	if !s.admitStream(st) {
		st.closeSubs()
		s.release(ip)
		s.stats.refused[refusedShutdown].Add(1)
		sseError(w, http.StatusServiceUnavailable, retryAfterShutdown, broker.CodeUnavailable,
			"server shutting down: connect again, to another replica")
		return
	}
	defer s.forgetStream(st)
	st.serve(w, http.NewResponseController(w))
}

// sseCredentials reads the stream's credential: the Authorization header,
// or the access_token parameter (EventSource cannot set headers). It
// answers a refusal itself.
func (s *Server) sseCredentials(w http.ResponseWriter, r *http.Request) (*auth.Principal, bool) {
	if s.cfg.AuthMode == auth.ModeOff {
		return nil, true
	}
	cred, present, ok := bearer.FromRequest(r)
	tokens := r.URL.Query()["access_token"]
	switch {
	case present && len(tokens) > 0:
		sseError(w, http.StatusBadRequest, 0, broker.CodeBadRequest,
			"credentials in both the Authorization header and access_token: send one")
		return nil, false
	case len(tokens) > 1:
		sseError(w, http.StatusBadRequest, 0, broker.CodeBadRequest, "access_token appears more than once")
		return nil, false
	case len(tokens) == 1:
		cred, present, ok = tokens[0], true, tokens[0] != ""
	}
	if !present {
		return nil, true
	}
	if !ok {
		s.countAuth(false)
		s.sseUnauthorized(w, "credentials refused: the Authorization header must be \"Bearer <credential>\", or access_token a credential")
		return nil, false
	}
	p, perr := s.verify(r.Context(), cred)
	s.countAuth(perr == nil)
	if perr != nil {
		s.sseUnauthorized(w, perr.Message)
		return nil, false
	}
	return p, true
}

func (s *Server) sseUnauthorized(w http.ResponseWriter, msg string) {
	s.stats.refused[refusedUnauthorized].Add(1)
	w.Header().Set("WWW-Authenticate", bearer.Challenge(msg))
	sseError(w, http.StatusUnauthorized, 0, broker.CodeUnauthorized, msg)
}

// stream is one SSE client.
type stream struct {
	srv      *Server
	client   netip.Addr
	channels []*sseChannel
	subs     []*broker.Subscription // as channels; set before serve
	results  []broker.SubscribeResult
	queue    *sendQueue

	ctx    context.Context // the request's, cancelled when the stream ends
	cancel context.CancelFunc

	principal *auth.Principal
	expiry    *time.Timer

	closeOnce sync.Once
	closing   chan struct{}
	reason    CloseReason
	end       []byte      // the last event, set before closing is closed
	endCode   broker.Code // its error code; empty for shutdown

	// For metrics and the access log (metrics.go): framesOut and
	// writeErr are the writer's, read once it has returned; latency is
	// the writer's, read at scrape.
	remote    string
	opened    time.Time
	framesOut int64
	writeErr  error
	latency   *histogram.Histogram
}

var _ broker.Sink = (*stream)(nil)

// openStream authenticates, decides and subscribes every channel; on
// failure it has answered and holds no subscription.
func (s *Server) openStream(w http.ResponseWriter, r *http.Request, req *sseRequest, ip netip.Addr) (*stream, bool) {
	who, ok := s.sseCredentials(w, r)
	if !ok {
		return nil, false
	}
	if s.cfg.AuthMode == auth.ModeRequired && who == nil {
		s.sseUnauthorized(w, "this listener requires credentials: send Authorization: Bearer, or access_token in the URL")
		return nil, false
	}
	l, now := s.listener(), time.Now()
	for _, c := range req.channels {
		switch v, why := s.cfg.Policy.Decide(l, who, auth.OpSubscribe, c.name, now); v {
		case auth.Allowed:
		case auth.Unauthenticated:
			s.sseUnauthorized(w, why+" (send Authorization: Bearer, or access_token in the URL)")
			return nil, false
		default:
			sseError(w, http.StatusForbidden, 0, broker.CodeForbidden, why)
			return nil, false
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	st := &stream{
		srv: s, client: ip, channels: req.channels, principal: who,
		queue:   newSendQueue(s.cfg.SendQueueFrames, s.cfg.SendQueueBytes, s.cfg.SendBudget),
		ctx:     ctx,
		cancel:  cancel,
		closing: make(chan struct{}),
		remote:  r.RemoteAddr,
		opened:  time.Now(),
		latency: histogram.New(publishToWriteBounds),
	}
	for _, c := range req.channels {
		sub, res, err := s.hub.Subscribe(ctx, c.name, c.from, st)
		if err != nil {
			st.closeSubs()
			cancel()
			s.sseFail(w, err)
			return nil, false
		}
		st.subs = append(st.subs, sub)
		st.results = append(st.results, res)
		if !c.hasAfter && c.from.Last == 0 {
			// Live only: resuming after the head loses nothing.
			c.after, c.hasAfter = res.Head, true
		}
	}
	return st, true
}

func (st *stream) closeSubs() {
	for _, sub := range st.subs {
		sub.Close()
	}
}

// serve writes the stream until it ends.
func (st *stream) serve(w http.ResponseWriter, rc *http.ResponseController) {
	// The server's ReadTimeout bounds reading the request, which is over:
	// its expiry must not cancel the request's context, which would end
	// the stream. net/http clears it itself before it watches an HTTP/1
	// connection for the client's close; this says so for every version
	// and protocol. Ending on a dead client is the writes' deadline's
	// job (it also overrides any server WriteTimeout), and the pings make
	// sure there are writes.
	rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st.logOpen()
	st.startAuth()
	replays := make(chan struct{})
	go func() {
		defer close(replays)
		st.replay()
	}()
	if st.writeRaw(w, rc, []byte(sseRetry)) {
		st.writeLoop(w, rc)
	}
	st.cancel()
	st.queue.close()
	st.closeSubs()
	<-replays
	st.stopAuth()
	st.queue.release()
	// The connection may serve another request: no deadline of this
	// stream's may cut it.
	rc.SetWriteDeadline(time.Time{})
	st.recordEnd(st.ending())
}

// replay announces and replays each channel in turn; live messages of the
// channels whose replay is done flow meanwhile.
func (st *stream) replay() {
	for i, c := range st.channels {
		res := st.results[i]
		ev := subscribedEvent{Channel: c.name, Head: res.Head.String()}
		if c.from.Since != nil {
			ev.Resumed = &res.Resumed
		}
		b, _ := json.Marshal(ev)
		if st.push(append(append(slices.Clip(sseSubscribedPrefix), "data: "...), append(b, "\n\n"...)...)) != nil {
			return
		}
		if c.from.Since != nil && !res.Resumed {
			nr, _ := json.Marshal(struct {
				Channel string `json:"channel"`
				Head    string `json:"head"`
			}{c.name, ev.Head})
			if st.push(append(append([]byte("event: not-resumed\ndata: "), nr...), "\n\n"...)) != nil {
				return
			}
		}
		err := st.subs[i].Replay(st.ctx)
		switch {
		case err == nil:
		case errors.Is(err, broker.ErrSlowConsumer):
			st.close(CloseSlowConsumer)
			return
		case st.ctx.Err() != nil, errors.Is(err, broker.ErrCanceled),
			errors.Is(err, errQueueClosed), errors.Is(err, errQueueStuck), errors.Is(err, errBudget):
			return
		default:
			e := broker.ErrorOf(err)
			if e.Code == broker.CodeInternal {
				st.srv.cfg.Logger.Error("replay failed", "channel", c.name, "err", err)
				e = broker.ErrInternal
			}
			st.closeWith(CloseInternal, e.Code, errorEvent(e.Code, e.Message, c.name))
			return
		}
	}
}

type subscribedEvent struct {
	Channel string `json:"channel"`
	Head    string `json:"head"`
	Resumed *bool  `json:"resumed,omitempty"`
}

func errorEvent(code broker.Code, msg, channel string) []byte {
	b, _ := json.Marshal(struct {
		Code    broker.Code `json:"code"`
		Message string      `json:"message"`
		Channel string      `json:"channel,omitempty"`
	}{code, msg, channel})
	return append(append([]byte("event: error\ndata: "), b...), "\n\n"...)
}

// endEvent is the last event of a stream the server ends for reason.
func endEvent(reason CloseReason) (broker.Code, []byte) {
	switch reason {
	case CloseShutdown:
		return "", sseShutdown
	case CloseSlowConsumer:
		return broker.CodeLimitExceeded, errorEvent(broker.CodeLimitExceeded, "slow consumer: reconnect and resume", "")
	case CloseBudget:
		return broker.CodeUnavailable, errorEvent(broker.CodeUnavailable, reason.String(), "")
	case CloseExpired:
		return broker.CodeUnauthorized, errorEvent(broker.CodeUnauthorized, "credentials expired: reconnect with fresh credentials", "")
	}
	return broker.CodeInternal, errorEvent(broker.CodeInternal, "internal error", "")
}

// Deliver implements broker.Sink for live publications.
func (st *stream) Deliver(p *broker.Publication) bool {
	switch err := st.queue.offerLive(p.Frame(sseEncoder), publishedMs(p)); {
	case err == nil:
		return true
	case errors.Is(err, errBudget):
		st.close(CloseBudget)
	default:
		st.close(CloseSlowConsumer)
	}
	return false
}

// Replay implements broker.Sink for replayed publications.
func (st *stream) Replay(ctx context.Context, p *broker.Publication) error {
	return st.pushCtx(ctx, p.Frame(sseEncoder))
}

func (st *stream) push(item []byte) error { return st.pushCtx(st.ctx, item) }

func (st *stream) pushCtx(ctx context.Context, item []byte) error {
	err := st.queue.push(ctx, item, st.srv.cfg.WriteTimeout)
	switch {
	case errors.Is(err, errQueueStuck):
		st.close(CloseSlowConsumer)
	case errors.Is(err, errBudget):
		st.close(CloseBudget)
	}
	return err
}

// close ends the stream for reason; like conn.close, it neither blocks nor
// logs.
func (st *stream) close(reason CloseReason) {
	code, ev := endEvent(reason)
	st.closeWith(reason, code, ev)
}

func (st *stream) closeWith(reason CloseReason, code broker.Code, end []byte) {
	st.closeOnce.Do(func() {
		st.reason, st.end, st.endCode = reason, end, code
		st.srv.stats.closes[reason].Add(1)
		st.queue.close()
		close(st.closing)
	})
}

// writeLoop is the stream's writer: it alone writes, from the queue, with
// a ping comment every PingInterval.
func (st *stream) writeLoop(w http.ResponseWriter, rc *http.ResponseController) {
	cfg := &st.srv.cfg
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	cursor := newCursor(st.channels)
	var batch []queued
	for {
		select {
		case <-st.queue.ready:
			batch = st.queue.take(batch)
			if !st.write(w, rc, cursor, batch) {
				return
			}
			batch = recycled(batch)
		case <-ping.C:
			if !st.writeRaw(w, rc, ssePing) {
				return
			}
		case <-st.closing:
			if st.reason != CloseShutdown && !cfg.AccessLog {
				st.srv.cfg.Logger.Info("closing event stream", "reason", st.reason.String(), "client", st.client.String())
			}
			if st.reason.dropsQueue() {
				st.drop(st.queue.take(batch))
			} else if !st.write(w, rc, cursor, st.queue.take(batch)) {
				return
			}
			if st.endCode != "" {
				st.srv.countError(st.endCode)
			}
			st.writeRaw(w, rc, st.end)
			return
		case <-st.ctx.Done():
			return
		}
	}
}

// write writes items and flushes; false when the client is gone.
func (st *stream) write(w http.ResponseWriter, rc *http.ResponseController, cursor *sseCursor, items []queued) bool {
	for i, it := range items {
		item := it.frame
		select {
		case <-st.closing:
			if st.reason.dropsQueue() {
				st.drop(items[i:])
				return true
			}
		default:
		}
		rc.SetWriteDeadline(time.Now().Add(st.srv.cfg.WriteTimeout))
		var err error
		switch {
		case bytes.HasPrefix(item, sseMessagePrefix):
			channel, id := messageOf(item)
			cursor.set(channel, id)
			_, err = w.Write(cursor.line())
		case bytes.HasPrefix(item, sseSubscribedPrefix):
			_, err = w.Write(cursor.line())
		}
		if err == nil {
			_, err = w.Write(item)
		}
		if err != nil {
			st.failWrite(err)
			return false
		}
		items[i].frame = nil // its published time stays, for below
		st.framesOut++
		st.queue.done(1, len(item))
	}
	now := time.Now()
	rc.SetWriteDeadline(now.Add(st.srv.cfg.WriteTimeout))
	if err := rc.Flush(); err != nil {
		st.failWrite(err)
		return false
	}
	// Live messages are timed to the flush that puts them on the socket.
	for i, it := range items {
		if it.published > 0 {
			st.latency.Observe(secondsFrom(it.published, now))
		}
		items[i] = queued{}
	}
	return true
}

func (st *stream) writeRaw(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	rc.SetWriteDeadline(time.Now().Add(st.srv.cfg.WriteTimeout))
	_, err := w.Write(b)
	if err == nil {
		err = rc.Flush()
	}
	if err != nil {
		st.failWrite(err)
		return false
	}
	return true
}

func (st *stream) drop(items []queued) {
	n := 0
	for _, it := range items {
		n += len(it.frame)
	}
	clear(items)
	st.queue.done(len(items), n)
}

// failWrite is fail for a write that failed with err. Writer only.
func (st *stream) failWrite(err error) {
	st.writeErr = err
	st.fail()
}

func (st *stream) fail() {
	st.queue.close()
	st.cancel()
}

// messageOf reads the channel and ID back from a message event, which
// sseEncoder starts with data: {"channel":"NAME","id":"ID" (channel names
// and IDs need no escaping).
func messageOf(item []byte) (channel, id string) {
	rest := item[len(`data: {"channel":"`):]
	i := bytes.IndexByte(rest, '"')
	channel, rest = string(rest[:i]), rest[i+len(`","id":"`):]
	j := bytes.IndexByte(rest, '"')
	return channel, string(rest[:j])
}

// sseCursor is the writer's position in every channel, as the id: of the
// events that carry it: NAME=ID,… in the URL's order, each channel that has
// one (a delivered message, a since, or a live-only subscription's head).
type sseCursor struct {
	names []string
	ids   map[string]string
	buf   []byte
}

func newCursor(channels []*sseChannel) *sseCursor {
	c := &sseCursor{ids: make(map[string]string, len(channels))}
	for _, ch := range channels {
		c.names = append(c.names, ch.name)
		if ch.hasAfter {
			c.ids[ch.name] = ch.after.String()
		}
	}
	return c
}

func (c *sseCursor) set(channel, id string) { c.ids[channel] = id }

// line returns "id: CURSOR\n", valid until the next call.
func (c *sseCursor) line() []byte {
	b := append(c.buf[:0], "id: "...)
	first := true
	for _, n := range c.names {
		id, ok := c.ids[n]
		if !ok {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(append(append(b, n...), '='), id...)
	}
	c.buf = append(b, '\n')
	return c.buf
}

// startAuth closes the stream when its principal expires: SSE has no auth
// frame to renew it with, so the client reconnects with a fresh one.
func (st *stream) startAuth() {
	if st.principal == nil || st.principal.Expires.IsZero() {
		return
	}
	st.expiry = time.AfterFunc(time.Until(st.principal.Expires), func() { st.close(CloseExpired) })
}

func (st *stream) stopAuth() {
	if st.expiry != nil {
		st.expiry.Stop()
	}
}

// admitStream registers a stream in its reserved slot; false when shutdown
// began meanwhile.
func (s *Server) admitStream(st *stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.streams[st] = struct{}{}
	s.stats.streams.Add(1)
	s.stats.streamsAccepted.Add(1)
	return true
}

func (s *Server) forgetStream(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, st)
	st.latency.AddTo(&s.closedLatency)
	s.stats.streams.Add(-1)
	s.unreserve(st.client)
}
