// Package responder answers TSLM requests: an internal app registers a
// Handler for some channels and serves their requests, either straight
// from Redis (ServeRedis: the request streams and reply inboxes of
// docs/redis.md) or through the gateway's internal listener (ServeWebSocket:
// the serve, request and reply frames of docs/protocol.md).
//
// It stands on those documented contracts only, as an app in any other
// language would, and imports nothing of the gateway: it is both a library
// and a worked example of the contracts.
//
// A request is answered at least once, not exactly once: a worker that
// stops after it took a request but before its reply was written leaves the
// request to another worker (at once when it stops because its context
// ended or its WebSocket closed; after RedisConfig.ReclaimAfter when it
// crashed while serving from Redis). The requester receives only the first
// answer, so a handler whose effects must not repeat has to recognise a
// request it already handled by its ID (Request.Deliveries > 1 says that it
// may have been handed out before).
//
//	err := responder.ServeRedis(ctx, responder.RedisConfig{Client: rdb},
//		func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
//			var q Query
//			if err := json.Unmarshal(r.Data, &q); err != nil {
//				return nil, &responder.Refusal{Code: "bad_query", Message: err.Error()}
//			}
//			return answer(ctx, q)
//		}, "orders")
package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Request is one request to answer.
type Request struct {
	// Channel is the channel the request was sent to.
	Channel string
	// ID is the request's ID, unique within the channel.
	ID string
	// Data is the requester's JSON.
	Data json.RawMessage
	// Deadline is when the requester stops waiting; the handler's context
	// ends then. Zero when the request named none.
	Deadline time.Time
	// Deliveries is how many times the request was handed out, this time
	// included: more than 1 means that another worker (or this one, before
	// a restart) may have handled it already.
	Deliveries int64
}

// Handler answers a request with the reply's data (any JSON; nil is
// null), or refuses it by returning a *Refusal, which reaches the requester
// as the reply's error field. Any other error is logged and answered with
// the code "internal" and a generic message, so that internal details do
// not leak to clients. Its context ends at the request's deadline or when
// serving stops; a handler that returns an error after serving stopped
// leaves its request to another worker. Handlers run concurrently.
type Handler func(ctx context.Context, r Request) (json.RawMessage, error)

// Refusal is an answer that is an error for the requester, such as a
// request the app does not understand or cannot grant.
type Refusal struct {
	// Code is 1–64 bytes of [a-z0-9_.-], for programs.
	Code string `json:"code"`
	// Message is for humans; at most 1024 bytes are sent.
	Message string `json:"message"`
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Message }

// Limits the gateway puts on a refusal (docs/protocol.md).
const (
	maxCodeBytes    = 64
	maxMessageBytes = 1024
)

// CodeInternal is the code of the answer to a handler that failed with an
// error other than a *Refusal, or that panicked.
const CodeInternal = "internal"

// internalRefusal is sent instead of an unexpected handler error.
var internalRefusal = &Refusal{Code: CodeInternal, Message: "the responder failed to handle the request"}

// answer is a handler's outcome in wire form: exactly one of data and
// refusal is set.
type answer struct {
	data    json.RawMessage
	refusal *Refusal
}

// envelope is a reply as both transports carry it: the reply entry of an
// inbox (docs/redis.md), and the fields of a reply frame besides type and
// ref.
type envelope struct {
	Channel string          `json:"channel"`
	ID      string          `json:"id"`
	Data    json.RawMessage `json:"data,omitempty"`
	Error   *Refusal        `json:"error,omitempty"`
}

func (a answer) envelope(r Request) envelope {
	return envelope{Channel: r.Channel, ID: r.ID, Data: a.data, Error: a.refusal}
}

// handle runs h and turns its outcome into an answer. err is the
// handler's error when it was neither a refusal nor a panic, so that the
// caller can tell a handler cut short by shutdown from an answer.
func handle(ctx context.Context, log *slog.Logger, h Handler, r Request) (a answer, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("responder: handler panicked", "id", r.ID, "panic", p, "stack", string(debug.Stack()))
			a, err = answer{refusal: internalRefusal}, nil
		}
	}()
	data, err := h(ctx, r)
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) && ref != nil {
			return answer{refusal: checkRefusal(log, r, ref)}, nil
		}
		return answer{refusal: internalRefusal}, err
	}
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	if !json.Valid(data) {
		log.Error("responder: handler returned data that is not JSON; answering internal", "id", r.ID)
		return answer{refusal: internalRefusal}, nil
	}
	return answer{data: data}, nil
}

// checkRefusal makes ref acceptable to the gateway: a code it would reject
// would leave the requester with no answer until its timeout, so it becomes
// internal, and an overlong message is cut.
func checkRefusal(log *slog.Logger, r Request, ref *Refusal) *Refusal {
	if !validCode(ref.Code) {
		log.Error("responder: handler refused with an invalid code (want 1-64 bytes of [a-z0-9_.-]); answering internal",
			"id", r.ID, "code", ref.Code)
		return internalRefusal
	}
	if len(ref.Message) <= maxMessageBytes {
		return ref
	}
	msg := ref.Message[:maxMessageBytes]
	for len(msg) > 0 && !utf8.ValidString(msg) {
		msg = msg[:len(msg)-1]
	}
	return &Refusal{Code: ref.Code, Message: msg}
}

func validCode(code string) bool {
	if len(code) == 0 || len(code) > maxCodeBytes {
		return false
	}
	for i := 0; i < len(code); i++ {
		switch c := code[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// maxChannelBytes and the characters below are the gateway's channel
// names (docs/protocol.md).
const maxChannelBytes = 128

// reservedPrefix starts the names of session inboxes, which nobody serves.
const reservedPrefix = "_inbox."

func checkChannels(channels []string) error {
	if len(channels) == 0 {
		return errors.New("responder: no channel to serve")
	}
	seen := make(map[string]bool, len(channels))
	for _, c := range channels {
		if !validChannel(c) {
			return fmt.Errorf("responder: channel name %q must be 1-%d bytes of [A-Za-z0-9._:-]", c, maxChannelBytes)
		}
		if strings.HasPrefix(c, reservedPrefix) {
			return fmt.Errorf("responder: channel %q: names starting with %s are reserved for request sessions", c, reservedPrefix)
		}
		if seen[c] {
			return fmt.Errorf("responder: channel %q given twice", c)
		}
		seen[c] = true
	}
	return nil
}

func validChannel(name string) bool {
	if len(name) == 0 || len(name) > maxChannelBytes {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// jsonData returns b as JSON: the gateway enqueues JSON, but a foreign
// writer of the request stream may not have; such bytes become a JSON
// string, as the gateway does for messages, so that Request.Data is always
// JSON.
func jsonData(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(strings.ToValidUTF8(string(b), "\uFFFD"))
	return s
}

// slots bounds the handlers running at once across all channels.
type slots struct {
	mu    sync.Mutex
	free  int
	freed chan struct{} // closed, and replaced, whenever a slot is freed
}

func newSlots(n int) *slots { return &slots{free: n, freed: make(chan struct{})} }

// available is how many slots are free now.
func (s *slots) available() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.free
}

// wait waits until a slot is free, without taking it.
func (s *slots) wait(ctx context.Context) error {
	for {
		s.mu.Lock()
		free, freed := s.free, s.freed
		s.mu.Unlock()
		if free > 0 {
			return nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// acquire takes a slot, waiting for one until ctx is done.
func (s *slots) acquire(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.free > 0 {
			s.free--
			s.mu.Unlock()
			return nil
		}
		freed := s.freed
		s.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *slots) release() {
	s.mu.Lock()
	s.free++
	close(s.freed)
	s.freed = make(chan struct{})
	s.mu.Unlock()
}

// backoff is an exponential delay with jitter, for retrying a connection
// or a failing command without hammering the server, nor having many
// workers retry in step.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

// delay returns the next wait: a random duration in [d/2, d], d doubling
// from min to max.
func (b *backoff) delay() time.Duration {
	if b.next < b.min {
		b.next = b.min
	}
	d := b.next
	b.next = min(2*b.next, b.max)
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.next = 0 }

// sleep waits d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
