package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/tslm/tslm/backlog"
)

// InboxPrefix starts the name of every session inbox: a hidden channel of
// the log that holds one session's replies. Names with it are reserved.
const InboxPrefix = "_inbox."

// IsReserved reports whether channel is a session inbox, which clients may
// not touch by name.
func IsReserved(channel string) bool { return strings.HasPrefix(channel, InboxPrefix) }

// ReplySink receives a session's answers. Transports implement it.
type ReplySink interface {
	// Answer queues a without waiting. It returns false when the queue is
	// full: the transport then closes the connection as a slow consumer
	// and the client resumes its session elsewhere. It is called with the
	// session's lock held, so it must not call the session's methods.
	Answer(a Answer) bool
}

// Answer is the one outcome of a request.
type Answer struct {
	// Tag is what the request was sent or declared with (the ref).
	Tag     string
	Channel string
	// ID is the request's ID.
	ID backlog.ID
	// Data is the reply's JSON; nil with Refusal or Timeout.
	Data []byte
	// Refusal is set when the responder refused the request.
	Refusal *Refusal
	// Timeout is set when no reply came before the deadline.
	Timeout bool
}

// Refusal is a responder's reasoned "no", passed to the requester as is.
type Refusal struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Pending is a request a resuming client still awaits.
type Pending struct {
	Channel string
	ID      backlog.ID
	Tag     string
	// Timeout is how much longer to wait; 0 means Config.RequestTimeout.
	Timeout time.Duration
}

const (
	tokenBytes = 32
	// earlyReplyTTL bounds how long a reply read before its Request
	// registered the ID is kept for it.
	earlyReplyTTL = 10 * time.Second
)

// tokenEncoding is strict so that a token has exactly one spelling, and so
// one inbox.
var tokenEncoding = base64.RawURLEncoding.Strict()

// errSessionClosed answers a Request on a closed session: its transport is
// going away, so nobody reads it.
var errSessionClosed = ErrCanceled.With("session closed")

// Session is a requester's session: its inbox, the requests it awaits and
// their deadlines.
//
// Once its inbox exists, a follower goroutine reads it through an ordinary
// subscription (from the oldest reply held, then live), matches each reply
// to the request it answers, and keeps the inbox from expiring. Answers
// reach the sink from that goroutine, from the hub's readers, from
// deadline timers, and from Request, always under mu: one lock decides
// which of a reply and a deadline comes first, and Close stops them all.
type Session struct {
	hub   *Hub
	sink  ReplySink
	owner string // who the session belongs to: part of its inbox's name

	// opening serializes making the inbox: a one-slot semaphore rather
	// than a mutex, so that a Request waiting for another's backlog calls
	// gives up with its ctx.
	opening chan struct{}

	mu        sync.Mutex
	token     string // never logged
	inbox     string
	issued    bool // a Request succeeded, or the session was resumed
	following bool // the inbox exists and the follower runs
	closed    bool
	stopped   bool // no more answers: closed, or the sink refused one
	deleted   bool // the inbox was deleted (expired) under the follower
	lastSeen  backlog.ID
	pending   map[requestKey]*awaited
	enqueuing int          // Requests between taking a slot and registering their ID
	early     []earlyReply // oldest first
	quit      context.CancelFunc
	done      chan struct{} // closed when the follower returns; nil before it starts
	ended     chan struct{} // cap 1: the follower's subscription ended
}

type requestKey struct {
	channel string
	id      backlog.ID
}

type awaited struct {
	tag   string
	timer *time.Timer
}

type earlyReply struct {
	reply
	at time.Time
}

// NewSession starts a session of owner for sink. It does no I/O: the inbox
// is made by the first Request.
//
// owner names whoever the transport authenticated (auth.Principal.Owner),
// "" when nobody: the inbox is derived from owner and token together, so
// that a token presented by anyone else leads to another inbox, which does
// not exist. A token that leaks is then no use without its owner's
// credentials.
func (h *Hub) NewSession(owner string, sink ReplySink) *Session {
	h.stats.sessions.Add(1)
	return &Session{
		hub: h, sink: sink, owner: owner, opening: make(chan struct{}, 1),
		pending: make(map[requestKey]*awaited), ended: make(chan struct{}, 1),
	}
}

// ResumeSession reopens the session of token on this replica, awaiting
// pending, for owner (see NewSession): a session is found only by the
// owner that started it. the first reply its inbox holds or receives for each is
// answered, and the others time out after their Timeout.
//
// Answers may reach the sink before ResumeSession returns, from other
// goroutines (never from the caller's): a transport that must tell the
// client the session resumed before any answer does so under the lock its
// Answer takes.
//
// Errors: ErrBadSession for a token the gateway could not have issued,
// ErrSessionExpired when its inbox does not exist (expired, or never
// made, or started by another owner), ErrLimit for more than Config.MaxInflight pending, ErrBadChannel,
// ErrReserved or ErrBadRequest for a bad pending entry, ErrUnavailable.
func (h *Hub) ResumeSession(ctx context.Context, owner, token string, pending []Pending, sink ReplySink) (*Session, error) {
	if !validToken(token) {
		return nil, ErrBadSession
	}
	if err := h.requests(); err != nil {
		return nil, err
	}
	if len(pending) > h.cfg.MaxInflight {
		return nil, ErrLimit.With("at most %d requests may await a reply per session", h.cfg.MaxInflight)
	}
	timeouts := make([]time.Duration, len(pending))
	seen := make(map[requestKey]bool, len(pending))
	for i, p := range pending {
		if err := checkChannel(p.Channel); err != nil {
			return nil, err
		}
		t, err := h.requestTimeout(p.Timeout)
		if err != nil {
			return nil, err
		}
		key := requestKey{p.Channel, p.ID}
		if seen[key] {
			return nil, ErrBadRequest.With("request %s on channel %q is pending twice", p.ID, p.Channel)
		}
		seen[key], timeouts[i] = true, t
	}
	inbox := inboxName(owner, token)
	if _, err := h.log.Info(ctx, inbox); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrSessionExpired
		}
		return nil, err
	}

	s := h.NewSession(owner, sink)
	s.mu.Lock()
	s.token, s.inbox, s.issued = token, inbox, true
	// Awaited before the inbox is read, so that every reply it holds
	// finds its request.
	now := time.Now()
	for i, p := range pending {
		s.awaitLocked(requestKey{p.Channel, p.ID}, p.Tag, now.Add(timeouts[i]))
	}
	s.mu.Unlock()
	if err := s.follow(ctx, inbox); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Token is the session's token: "" until a Request succeeded or the
// session was resumed.
func (s *Session) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.issued {
		return ""
	}
	return s.token
}

// Request enqueues data, which must be JSON, for channel's responders; the
// answer goes to the sink with tag. acked is called with the request's ID
// and the session token before any answer for it can reach the sink, with
// the session's lock held (it must not call the session's methods).
// timeout 0 means Config.RequestTimeout.
//
// Errors: ErrBadChannel, ErrReserved, ErrBadRequest (timeout out of
// bounds), ErrLimit (Config.MaxInflight requests awaited, or the channel's
// request queue is full), ErrNotFound (no such channel), ErrUnavailable.
func (s *Session) Request(ctx context.Context, channel string, data []byte, timeout time.Duration, tag string, acked func(id backlog.ID, token string)) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	if err := s.hub.requests(); err != nil {
		return err
	}
	timeout, err := s.hub.requestTimeout(timeout)
	if err != nil {
		return err
	}
	s.mu.Lock()
	switch {
	case s.stopped:
		s.mu.Unlock()
		return errSessionClosed
	case len(s.pending)+s.enqueuing >= s.hub.cfg.MaxInflight:
		s.mu.Unlock()
		return ErrLimit.With("at most %d requests may await a reply per session", s.hub.cfg.MaxInflight)
	}
	// From here until the ID is registered, replies naming an unknown
	// request are kept: this one's may be read before Enqueue returns.
	s.enqueuing++
	s.mu.Unlock()

	id, deadline, err := s.enqueue(ctx, channel, data, timeout)

	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.settleEarlyLocked()
	s.enqueuing--
	switch {
	case err != nil:
		return err
	case s.stopped:
		return errSessionClosed
	}
	acked(id, s.token)
	s.issued = true
	key := requestKey{channel, id}
	if r, ok := s.takeEarlyLocked(key); ok {
		s.answerLocked(tag, r)
		return nil
	}
	s.awaitLocked(key, tag, deadline)
	return nil
}

func (s *Session) enqueue(ctx context.Context, channel string, data []byte, timeout time.Duration) (backlog.ID, time.Time, error) {
	inbox, err := s.openInbox(ctx)
	if err != nil {
		return backlog.ID{}, time.Time{}, err
	}
	deadline := time.Now().Add(timeout)
	id, err := s.hub.log.Enqueue(ctx, channel, backlog.Request{ReplyTo: inbox, Deadline: deadline, Data: data})
	if errors.Is(err, ErrLimit) {
		err = ErrLimit.With("request queue of %q is full", channel).Wrap(err)
	}
	return id, deadline, err
}

// openInbox makes the session's inbox and starts following it, once.
func (s *Session) openInbox(ctx context.Context) (string, error) {
	select {
	case s.opening <- struct{}{}:
	case <-ctx.Done():
		return "", fromBacklog(ctx, "", ctx.Err())
	}
	defer func() { <-s.opening }()
	s.mu.Lock()
	if s.token == "" {
		s.token = newToken()
		s.inbox = inboxName(s.owner, s.token)
	}
	inbox, following := s.inbox, s.following
	s.mu.Unlock()
	if following {
		return inbox, nil
	}
	return inbox, s.follow(ctx, inbox)
}

// follow makes (or refreshes) the inbox, subscribes to it from its oldest
// reply, and hands the subscription to a new follower goroutine.
func (s *Session) follow(ctx context.Context, inbox string) error {
	if _, err := s.hub.log.Create(ctx, inbox, s.inboxConfig()); err != nil {
		return err
	}
	sub, _, err := s.hub.subscribe(ctx, inbox, From{Since: &backlog.Zero}, inboxSink{s})
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sub.Close()
		return errSessionClosed
	}
	fctx, quit := context.WithCancel(s.hub.ctx)
	done := make(chan struct{})
	s.hub.mu.Lock()
	// The subscription passes to the follower, which replays it: the go
	// statement orders everything Subscribe did before it.
	err = s.hub.goLocked(func(context.Context) { s.run(fctx, sub, done) })
	s.hub.mu.Unlock()
	if err != nil {
		s.mu.Unlock()
		quit()
		sub.Close()
		return err
	}
	s.following, s.quit, s.done = true, quit, done
	s.mu.Unlock()
	return nil
}

func (s *Session) inboxConfig() backlog.ChannelConfig {
	return backlog.ChannelConfig{MaxLen: s.hub.cfg.SessionReplies, Expiry: s.hub.cfg.SessionTTL}
}

// run is the follower: it replays sub, then keeps the inbox alive while
// live replies arrive, and follows the inbox anew when its subscription
// fails or the inbox expired under it.
func (s *Session) run(ctx context.Context, sub *Subscription, done chan struct{}) {
	defer close(done)
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	refresh := time.NewTicker(s.hub.cfg.SessionTTL / 3)
	defer refresh.Stop()
	var backoff time.Duration
	for ctx.Err() == nil {
		if sub == nil {
			var err error
			if sub, err = s.resubscribe(ctx); err != nil {
				sub = nil
				backoff = nextBackoff(backoff)
				s.hub.cfg.Logger.Debug("session inbox subscribe failed; retrying", "err", err, "retry_in", backoff)
				if !s.wait(ctx, nil, time.After(backoff), refresh.C) {
					return
				}
				continue
			}
		}
		if err := sub.Replay(ctx); err != nil {
			sub.Close()
			sub = nil
			if s.isStopped() || ctx.Err() != nil {
				return
			}
			if !s.isDeleted() {
				backoff = nextBackoff(backoff)
				s.hub.cfg.Logger.Debug("session inbox replay failed; retrying", "err", err, "retry_in", backoff)
				if !s.wait(ctx, nil, time.After(backoff), refresh.C) {
					return
				}
			}
			continue
		}
		backoff = 0
		// Live: replies arrive through the hub's reader until the
		// subscription ends.
		if !s.wait(ctx, s.ended, nil, refresh.C) {
			return
		}
		sub.Close()
		sub = nil
		if s.isStopped() {
			return
		}
	}
}

// wait returns true once ended or after fires, refreshing the inbox's
// expiry on every tick meanwhile, and false once ctx is done.
func (s *Session) wait(ctx context.Context, ended <-chan struct{}, after, tick <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-ended:
			return true
		case <-after:
			return true
		case <-tick:
			if _, err := s.hub.log.Create(ctx, s.inbox, s.inboxConfig()); err != nil && ctx.Err() == nil {
				s.hub.cfg.Logger.Warn("session inbox expiry refresh failed; retrying at the next tick", "err", err)
			}
		}
	}
}

// resubscribe follows the inbox again: after the last reply seen, or, when
// it was deleted meanwhile, as a new inbox from its start.
func (s *Session) resubscribe(ctx context.Context) (*Subscription, error) {
	s.mu.Lock()
	deleted, since := s.deleted, s.lastSeen
	if deleted {
		s.deleted, s.lastSeen, since = false, backlog.Zero, backlog.Zero
	}
	s.mu.Unlock()
	select {
	case <-s.ended: // about the subscription that ended
	default:
	}
	if deleted {
		s.hub.cfg.Logger.Info("session inbox expired while the session was open; made again: replies written meanwhile are lost")
	}
	if _, err := s.hub.log.Create(ctx, s.inbox, s.inboxConfig()); err != nil {
		return nil, err
	}
	sub, _, err := s.hub.subscribe(ctx, s.inbox, From{Since: &since}, inboxSink{s})
	return sub, err
}

func (s *Session) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

func (s *Session) isDeleted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleted
}

// Close ends the session on this connection; its inbox is left to expire.
// Once Close returns the sink gets no more answers. It must not be called
// from within the sink's Answer or from Request's acked, nor with a lock
// held that Answer takes: it waits for the follower, which may be
// answering.
func (s *Session) Close() {
	s.mu.Lock()
	if s.closed {
		done := s.done
		s.mu.Unlock()
		if done != nil {
			<-done
		}
		return
	}
	s.closed = true
	s.stopLocked()
	s.dropEarlyLocked(len(s.early))
	quit, done := s.quit, s.done
	s.mu.Unlock()
	s.hub.stats.sessions.Add(-1)
	if quit != nil {
		quit()
		<-done
	}
}

// inboxSink is the session as its inbox subscription's sink.
type inboxSink struct{ s *Session }

func (k inboxSink) Deliver(p *Publication) bool { return k.s.handle(p) }

func (k inboxSink) Replay(_ context.Context, p *Publication) error {
	if !k.s.handle(p) {
		return ErrUnsubscribed
	}
	return nil
}

// handle takes one inbox entry and reports whether the session wants more.
func (s *Session) handle(p *Publication) bool {
	if p.Deleted {
		s.mu.Lock()
		s.deleted = true
		s.mu.Unlock()
		s.signalEnded()
		return false
	}
	if p.Gap {
		// Replies lost to the inbox's MaxLen: their requests time out.
		return true
	}
	r, err := parseReply(p.Data)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.lastSeen = p.ID
	if err != nil {
		s.hub.stats.repliesDropped.Add(1)
		s.hub.cfg.Logger.Debug("malformed reply dropped", "entry", p.ID.String(), "err", err)
		return true
	}
	if a, ok := s.pending[r.key]; ok {
		s.unawaitLocked(r.key, a)
		return s.answerLocked(a.tag, r)
	}
	if s.enqueuing > 0 {
		s.holdEarlyLocked(r)
		return true
	}
	s.hub.stats.repliesDropped.Add(1)
	s.hub.cfg.Logger.Debug("reply to a request not awaited dropped", "channel", r.key.channel, "id", r.key.id.String())
	return true
}

func (s *Session) signalEnded() {
	select {
	case s.ended <- struct{}{}:
	default:
	}
}

// awaitLocked registers a request and its deadline; it expects s.mu held.
func (s *Session) awaitLocked(key requestKey, tag string, deadline time.Time) {
	a := &awaited{tag: tag}
	// The timer cannot beat the registration: it takes s.mu first.
	a.timer = time.AfterFunc(time.Until(deadline), func() { s.expire(key, a) })
	s.pending[key] = a
	s.hub.stats.requestsPending.Add(1)
}

// unawaitLocked expects s.mu held and a to be pending under key.
func (s *Session) unawaitLocked(key requestKey, a *awaited) {
	a.timer.Stop()
	delete(s.pending, key)
	s.hub.stats.requestsPending.Add(-1)
}

func (s *Session) expire(key requestKey, a *awaited) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[key] != a {
		return // answered meanwhile
	}
	s.unawaitLocked(key, a)
	s.hub.stats.timeouts.Add(1)
	s.deliverLocked(Answer{Tag: a.tag, Channel: key.channel, ID: key.id, Timeout: true})
}

// answerLocked hands r to the sink; it expects s.mu held.
func (s *Session) answerLocked(tag string, r reply) bool {
	if r.refusal != nil {
		s.hub.stats.refusals.Add(1)
	} else {
		s.hub.stats.replies.Add(1)
	}
	return s.deliverLocked(Answer{Tag: tag, Channel: r.key.channel, ID: r.key.id, Data: r.data, Refusal: r.refusal})
}

// deliverLocked expects s.mu held. A sink that refuses an answer is
// closing its connection: nothing more is delivered, and the client
// resumes elsewhere with what it still awaits.
func (s *Session) deliverLocked(a Answer) bool {
	if s.stopped {
		return false
	}
	if !s.sink.Answer(a) {
		s.stopLocked()
		s.signalEnded()
		return false
	}
	return true
}

// stopLocked ends every deadline; it expects s.mu held.
func (s *Session) stopLocked() {
	s.stopped = true
	for key, a := range s.pending {
		s.unawaitLocked(key, a)
	}
}

// holdEarlyLocked keeps a reply for a request whose Enqueue has not
// returned yet. The buffer keeps the newest MaxInflight replies for at
// most earlyReplyTTL. It expects s.mu held.
func (s *Session) holdEarlyLocked(r reply) {
	now := time.Now()
	s.pruneEarlyLocked(now)
	if len(s.early) >= s.hub.cfg.MaxInflight {
		s.dropEarlyLocked(1)
	}
	s.early = append(s.early, earlyReply{r, now})
}

// takeEarlyLocked expects s.mu held.
func (s *Session) takeEarlyLocked(key requestKey) (reply, bool) {
	s.pruneEarlyLocked(time.Now())
	for i, e := range s.early {
		if e.key == key {
			s.early = append(s.early[:i], s.early[i+1:]...)
			return e.reply, true
		}
	}
	return reply{}, false
}

// settleEarlyLocked drops the early replies once no Request could claim
// them; it expects s.mu held.
func (s *Session) settleEarlyLocked() {
	if s.enqueuing == 0 {
		s.dropEarlyLocked(len(s.early))
	}
}

func (s *Session) pruneEarlyLocked(now time.Time) {
	n := 0
	for n < len(s.early) && now.Sub(s.early[n].at) >= earlyReplyTTL {
		n++
	}
	s.dropEarlyLocked(n)
}

// dropEarlyLocked drops the n oldest early replies.
func (s *Session) dropEarlyLocked(n int) {
	if n == 0 {
		return
	}
	s.hub.stats.repliesDropped.Add(int64(n))
	clear(s.early[:n])
	s.early = s.early[n:]
	if len(s.early) == 0 {
		s.early = nil
	}
}

// requestTimeout applies the default and bounds to a request's timeout.
func (h *Hub) requestTimeout(d time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		return h.cfg.RequestTimeout, nil
	case d < time.Millisecond || d > h.cfg.MaxRequestTimeout:
		return 0, ErrBadRequest.With("a request's timeout must be 1-%d ms", h.cfg.MaxRequestTimeout.Milliseconds())
	}
	return d, nil
}

// newToken returns a fresh session token: 256 bits from crypto/rand.
func newToken() string {
	b := make([]byte, tokenBytes)
	rand.Read(b) // never fails (crypto/rand)
	return tokenEncoding.EncodeToString(b)
}

// validToken reports whether token is one newToken could have returned.
func validToken(token string) bool {
	if len(token) != tokenEncoding.EncodedLen(tokenBytes) {
		return false
	}
	b, err := tokenEncoding.DecodeString(token)
	return err == nil && len(b) == tokenBytes
}

// inboxName is the inbox of owner's token: 128 bits of a hash, so that the
// name (in Redis keys, in request entries, in logs) gives away neither. A
// session without owner hashes the token alone, as before owners existed,
// so that the inboxes of sessions started then are found again. The NUL
// cannot occur in a token, so no owner and token hash like another pair.
func inboxName(owner, token string) string {
	var sum [sha256.Size]byte
	if owner == "" {
		sum = sha256.Sum256([]byte(token))
	} else {
		sum = sha256.Sum256([]byte(owner + "\x00" + token))
	}
	return InboxPrefix + hex.EncodeToString(sum[:16])
}
