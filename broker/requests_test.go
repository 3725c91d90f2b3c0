package broker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/redistest"
)

// backend makes logs that share one store, as replicas share Redis.
type backend struct {
	name string
	open func(t *testing.T) func() backlog.Log
}

var backends = []backend{
	{"memory", func(t *testing.T) func() backlog.Log {
		m := backlog.NewMemory(backlog.MemoryConfig{})
		t.Cleanup(func() { m.Close() })
		return func() backlog.Log { return m }
	}},
	{"redis", func(t *testing.T) func() backlog.Log {
		srv := redistest.Start(t, redistest.Options{})
		return func() backlog.Log {
			l := backlog.NewRedis(srv.Client(), backlog.RedisConfig{})
			t.Cleanup(func() { l.Close() })
			return l
		}
	}},
}

// forBackends runs test on each backend.
func forBackends(t *testing.T, test func(t *testing.T, logs func() backlog.Log)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			checkNoLeaks(t)
			test(t, b.open(t))
		})
	}
}

// hubOn starts a hub over log, closed before it.
func hubOn(t *testing.T, log backlog.Log, cfg broker.Config) *broker.Hub {
	t.Helper()
	h := broker.New(log, cfg)
	t.Cleanup(func() { h.Close() })
	return h
}

// checkNoLeaks fails t if goroutines of the broker outlive it (its
// cleanups, hubs' Close included, run first).
func checkNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			leaked := brokerGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d broker goroutines left running:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func brokerGoroutines() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/tslm/tslm/broker.") {
			out = append(out, g)
		}
	}
	return out
}

// answers is a ReplySink that keeps what it receives and checks that each
// answer to a Request came after its ack. refuse makes Answer fail.
type answers struct {
	mu         sync.Mutex
	got        []broker.Answer
	acked      map[backlog.ID]string // id → token
	refuse     bool
	violations []string
	wake       chan struct{}
}

func newAnswers() *answers {
	return &answers{acked: make(map[backlog.ID]string), wake: make(chan struct{}, 1)}
}

func (a *answers) Answer(x broker.Answer) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refuse {
		return false
	}
	if _, ok := a.acked[x.ID]; !ok && !strings.HasPrefix(x.Tag, "resumed") {
		a.violations = append(a.violations, fmt.Sprintf("answer %+v before its ack", x))
	}
	a.got = append(a.got, x)
	select {
	case a.wake <- struct{}{}:
	default:
	}
	return true
}

func (a *answers) ack(id backlog.ID, token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acked[id] = token
}

func (a *answers) snapshot() []broker.Answer {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]broker.Answer(nil), a.got...)
}

// waitFor polls until a holds n answers, and checks none came early.
func (a *answers) waitFor(t *testing.T, n int) []broker.Answer {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := a.snapshot(); len(got) >= n {
			a.mu.Lock()
			defer a.mu.Unlock()
			if len(a.violations) > 0 {
				t.Fatalf("ordering violated: %v", a.violations)
			}
			return got
		}
		select {
		case <-a.wake:
		case <-deadline:
			t.Fatalf("received %d answers, want %d: %+v", len(a.snapshot()), n, a.snapshot())
		}
	}
}

// request sends one request and returns its ID.
func request(t *testing.T, s *broker.Session, a *answers, ch, data string, timeout time.Duration, tag string) backlog.ID {
	t.Helper()
	var id backlog.ID
	var called int
	err := s.Request(t.Context(), ch, []byte(data), timeout, tag, func(i backlog.ID, token string) {
		id, called = i, called+1
		a.ack(i, token)
	})
	if err != nil {
		t.Fatalf("Request(%s): %v", ch, err)
	}
	if called != 1 {
		t.Fatalf("acked called %d times", called)
	}
	return id
}

// served is a RequestSink that queues what it is handed.
type served chan broker.ServedRequest

func (s served) Serve(ctx context.Context, r broker.ServedRequest) error {
	select {
	case s <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s served) next(t *testing.T) broker.ServedRequest {
	t.Helper()
	select {
	case r := <-s:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request served")
	}
	panic("unreachable")
}

func serve(t *testing.T, h *broker.Hub, ch string) (*broker.Serving, served) {
	t.Helper()
	sink := make(served, 1000)
	sv, err := h.Serve(t.Context(), ch, sink)
	if err != nil {
		t.Fatalf("Serve(%s): %v", ch, err)
	}
	t.Cleanup(sv.Close)
	return sv, sink
}

func session(t *testing.T, h *broker.Hub, a *answers) *broker.Session {
	s := h.NewSession("", a)
	t.Cleanup(s.Close)
	return s
}

// barrier sends a request on s and answers it through sv: once its
// answer arrives, every reply written before it was read by s.
func barrier(t *testing.T, s *broker.Session, a *answers, sv *broker.Serving, sink served, ch string, want int) {
	t.Helper()
	request(t, s, a, ch, `"barrier"`, 0, "barrier")
	r := sink.next(t)
	if err := sv.Reply(t.Context(), r.ID, []byte(`"barrier"`), nil); err != nil {
		t.Fatal(err)
	}
	got := a.waitFor(t, want)
	if last := got[len(got)-1]; last.Tag != "barrier" {
		t.Fatalf("last answer %+v, want the barrier", last)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		h := hubOn(t, logs(), broker.Config{})
		create(t, h, "orders", 100)
		sv, sink := serve(t, h, "orders")
		a := newAnswers()
		s := session(t, h, a)
		if s.Token() != "" {
			t.Fatalf("token %q before any request", s.Token())
		}
		before := time.Now()
		id := request(t, s, a, "orders", `{"n":1}`, 2*time.Second, "r1")
		token := s.Token()
		if len(token) != 43 || a.acked[id] != token {
			t.Fatalf("token %q (acked with %q), want 43 chars", token, a.acked[id])
		}

		r := sink.next(t)
		if r.ID != id || r.Channel != "orders" || string(r.Data) != `{"n":1}` || r.Deliveries != 1 {
			t.Fatalf("served %+v, want request %v", r, id)
		}
		if r.Deadline.Before(before.Add(2*time.Second-time.Millisecond)) || r.Deadline.After(time.Now().Add(2*time.Second)) {
			t.Errorf("deadline %v, want about 2s after %v", r.Deadline, before)
		}
		if st := h.Stats(); st.RequestsPending != 1 || st.Sessions != 1 || st.Servings != 1 {
			t.Errorf("stats while pending: %+v", st)
		}
		if err := sv.Reply(t.Context(), id, []byte(`{"ok": true}`), nil); err != nil {
			t.Fatal(err)
		}
		got := a.waitFor(t, 1)
		if x := got[0]; x.Tag != "r1" || x.ID != id || x.Channel != "orders" || string(x.Data) != `{"ok":true}` || x.Refusal != nil || x.Timeout {
			t.Fatalf("answer %+v", x)
		}
		if err := sv.Reply(t.Context(), id, []byte(`1`), nil); !errors.Is(err, broker.ErrRequestGone) {
			t.Errorf("second reply: %v, want ErrRequestGone", err)
		}
		if st := h.Stats(); st.Replies != 1 || st.RequestsPending != 0 || st.RepliesDropped != 0 {
			t.Errorf("stats after the reply: %+v", st)
		}
		s.Close()
		sv.Close()
		if st := h.Stats(); st.Sessions != 0 || st.Servings != 0 {
			t.Errorf("stats after close: %+v", st)
		}
	})
}

func TestRequestRefused(t *testing.T) {
	checkNoLeaks(t)
	h, _ := newHub(t, broker.Config{})
	create(t, h, "orders", 100)
	sv, sink := serve(t, h, "orders")
	a := newAnswers()
	s := session(t, h, a)
	id := request(t, s, a, "orders", `1`, 0, "r1")
	r := sink.next(t)
	for _, bad := range []*broker.Refusal{{Code: ""}, {Code: "Upper"}, {Code: strings.Repeat("x", 65)}, {Code: "x", Message: strings.Repeat("m", 1025)}} {
		if err := sv.Reply(t.Context(), r.ID, nil, bad); !errors.Is(err, broker.ErrBadRefusal) {
			t.Errorf("refusal %+v: %v, want ErrBadRefusal", bad, err)
		}
	}
	if err := sv.Reply(t.Context(), r.ID, []byte("1"), &broker.Refusal{Code: "x"}); !errors.Is(err, broker.ErrBadRequest) {
		t.Errorf("data and refusal: %v, want ErrBadRequest", err)
	}
	if err := sv.Reply(t.Context(), r.ID, []byte("{not json"), nil); !errors.Is(err, broker.ErrBadRequest) {
		t.Errorf("non-JSON data: %v, want ErrBadRequest", err)
	}
	if err := sv.Reply(t.Context(), r.ID, nil, &broker.Refusal{Code: "out_of_stock", Message: "none left"}); err != nil {
		t.Fatal(err)
	}
	x := a.waitFor(t, 1)[0]
	if x.ID != id || x.Data != nil || x.Refusal == nil || *x.Refusal != (broker.Refusal{Code: "out_of_stock", Message: "none left"}) {
		t.Fatalf("answer %+v", x)
	}
	if st := h.Stats(); st.Refusals != 1 || st.Replies != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestRequestTimeoutEdge: a reply written just after the deadline finds the
// request answered with a timeout, and is dropped.
func TestRequestTimeoutEdge(t *testing.T) {
	checkNoLeaks(t)
	h, _ := newHub(t, broker.Config{})
	create(t, h, "slow", 100)
	sv, sink := serve(t, h, "slow")
	a := newAnswers()
	s := session(t, h, a)
	id := request(t, s, a, "slow", `1`, 50*time.Millisecond, "r1")
	r := sink.next(t)
	x := a.waitFor(t, 1)[0]
	if !x.Timeout || x.ID != id || x.Tag != "r1" || x.Data != nil {
		t.Fatalf("answer %+v, want a timeout", x)
	}
	// The server still holds it: its reply reaches the inbox, too late.
	if err := sv.Reply(t.Context(), r.ID, []byte(`"late"`), nil); err != nil {
		t.Fatal(err)
	}
	barrier(t, s, a, sv, sink, "slow", 2)
	got := a.snapshot()
	if len(got) != 2 {
		t.Fatalf("answers %+v, want the timeout and the barrier", got)
	}
	if st := h.Stats(); st.Timeouts != 1 || st.RepliesDropped != 1 || st.Replies != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// TestManyRequestsInFlight: replies in another order than the requests
// are matched by ID.
func TestManyRequestsInFlight(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		h := hubOn(t, logs(), broker.Config{})
		create(t, h, "many", 1000)
		sv, sink := serve(t, h, "many")
		a := newAnswers()
		s := session(t, h, a)
		const n = 60
		for i := range n {
			request(t, s, a, "many", fmt.Sprint(i), 0, fmt.Sprintf("r%d", i))
		}
		reqs := make([]broker.ServedRequest, n)
		for i := range reqs {
			reqs[i] = sink.next(t)
		}
		// Reply from the last to the first, two at a time concurrently.
		var wg sync.WaitGroup
		for i := n - 1; i >= 0; i -= 2 {
			for _, r := range reqs[max(i-1, 0) : i+1] {
				wg.Go(func() {
					if err := sv.Reply(context.Background(), r.ID, r.Data, nil); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
		}
		got := a.waitFor(t, n)
		seen := make(map[string]bool)
		for _, x := range got {
			if seen[x.Tag] {
				t.Fatalf("tag %s answered twice", x.Tag)
			}
			seen[x.Tag] = true
			if "r"+string(x.Data) != x.Tag {
				t.Errorf("answer %s carries data %s", x.Tag, x.Data)
			}
		}
		if len(got) != n {
			t.Errorf("%d answers, want %d", len(got), n)
		}
	})
}

// gatedLog holds each Enqueue after it stored the request, until the test
// lets it return.
type gatedLog struct {
	*backlog.Memory
	enqueued chan backlog.ID
	release  chan struct{}
}

func (l *gatedLog) Enqueue(ctx context.Context, channel string, req backlog.Request) (backlog.ID, error) {
	id, err := l.Memory.Enqueue(ctx, channel, req)
	if err == nil {
		l.enqueued <- id
		<-l.release
	}
	return id, err
}

// TestEarlyReply: a reply read before Request registered its ID is kept
// for it, and answered after the ack.
func TestEarlyReply(t *testing.T) {
	checkNoLeaks(t)
	log := &gatedLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), enqueued: make(chan backlog.ID, 1), release: make(chan struct{})}
	t.Cleanup(func() { log.Close() })
	h := hubOn(t, log, broker.Config{})
	create(t, h, "fast", 100)
	sv, sink := serve(t, h, "fast")
	a := newAnswers()
	s := session(t, h, a)
	done := make(chan backlog.ID, 1)
	go func() {
		var id backlog.ID
		err := s.Request(context.Background(), "fast", []byte(`1`), 0, "r1", func(i backlog.ID, token string) {
			id = i
			a.ack(i, token)
		})
		if err != nil {
			t.Error(err)
		}
		done <- id
	}()
	id := <-log.enqueued
	r := sink.next(t)
	if err := sv.Reply(t.Context(), r.ID, []byte(`"quick"`), nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for broker.EarlyReplies(s) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the reply was never read")
		}
		time.Sleep(time.Millisecond)
	}
	if n := len(a.snapshot()); n != 0 {
		t.Fatalf("%d answers before Enqueue returned", n)
	}
	close(log.release)
	if got := <-done; got != id {
		t.Fatalf("Request acked %v, want %v", got, id)
	}
	x := a.waitFor(t, 1)[0]
	if x.ID != id || string(x.Data) != `"quick"` {
		t.Fatalf("answer %+v", x)
	}
	if n := broker.EarlyReplies(s); n != 0 {
		t.Errorf("%d early replies left", n)
	}
}

// TestResumeOnAnotherReplica: a client's connection to replica A ends
// before its reply is written; it resumes on replica B and gets the reply
// exactly once, whether it was written before or after the resume.
func TestResumeOnAnotherReplica(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		a, b := hubOn(t, logs(), broker.Config{}), hubOn(t, logs(), broker.Config{})
		create(t, a, "orders", 100)
		sv, sink := serve(t, a, "orders")
		for _, replyFirst := range []bool{true, false} {
			t.Run(fmt.Sprintf("reply first %v", replyFirst), func(t *testing.T) {
				onA := newAnswers()
				sa := a.NewSession("", onA)
				id := request(t, sa, onA, "orders", `1`, 10*time.Second, "r1")
				token := sa.Token()
				sa.Close()
				r := sink.next(t)
				reply := func() {
					if err := sv.Reply(t.Context(), r.ID, []byte(`"done"`), nil); err != nil {
						t.Fatal(err)
					}
				}
				if replyFirst {
					reply()
				}
				onB := newAnswers()
				sb, err := b.ResumeSession(t.Context(), "", token, []broker.Pending{{Channel: "orders", ID: id, Tag: "resumed-r1", Timeout: 5 * time.Second}}, onB)
				if err != nil {
					t.Fatal(err)
				}
				defer sb.Close()
				if sb.Token() != token {
					t.Errorf("resumed token %q, want the same", sb.Token())
				}
				if !replyFirst {
					reply()
				}
				x := onB.waitFor(t, 1)[0]
				if x.Tag != "resumed-r1" || x.ID != id || string(x.Data) != `"done"` {
					t.Fatalf("answer %+v", x)
				}
				// A later request on the resumed session, answered: by then
				// the inbox was read past the first reply.
				barrier(t, sb, onB, sv, sink, "orders", 2)
				if got := onB.snapshot(); len(got) != 2 {
					t.Fatalf("answers %+v, want the reply once and the barrier", got)
				}
				if n := len(onA.snapshot()); n != 0 {
					t.Errorf("the closed session got %d answers", n)
				}
			})
		}
	})
}

// TestSessionOwner: a session belongs to the owner that started it. Its
// token resolves to no session for another owner (or for nobody), and to
// the same session for its owner on any replica, whose reply arrives.
func TestSessionOwner(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		a, b := hubOn(t, logs(), broker.Config{}), hubOn(t, logs(), broker.Config{})
		create(t, a, "orders", 100)
		sv, sink := serve(t, a, "orders")
		const alice, mallory = "https://sso.example\x00alice", "https://sso.example\x00mallory"
		onA := newAnswers()
		sa := a.NewSession(alice, onA)
		id := request(t, sa, onA, "orders", `1`, 10*time.Second, "r1")
		token := sa.Token()
		sa.Close()
		pending := []broker.Pending{{Channel: "orders", ID: id, Tag: "resumed-r1", Timeout: 5 * time.Second}}
		for _, other := range []string{mallory, ""} {
			for _, h := range []*broker.Hub{a, b} {
				if _, err := h.ResumeSession(t.Context(), other, token, pending, newAnswers()); !errors.Is(err, broker.ErrSessionExpired) ||
					broker.ErrorOf(err).Code != broker.CodeNotFound {
					t.Errorf("resumed by owner %q: %v, want ErrSessionExpired (not_found)", other, err)
				}
			}
		}
		onB := newAnswers()
		sb, err := b.ResumeSession(t.Context(), alice, token, pending, onB)
		if err != nil {
			t.Fatalf("resumed by its owner on another replica: %v", err)
		}
		defer sb.Close()
		r := sink.next(t)
		if err := sv.Reply(t.Context(), r.ID, []byte(`"done"`), nil); err != nil {
			t.Fatal(err)
		}
		if x := onB.waitFor(t, 1)[0]; x.Tag != "resumed-r1" || x.ID != id || string(x.Data) != `"done"` {
			t.Fatalf("answer %+v", x)
		}
	})
}

// TestInboxDerivation holds the inbox names to docs/redis.md: without an
// owner, the first 128 bits of SHA-256(token) as before owners existed;
// with one, of SHA-256(owner NUL token).
func TestInboxDerivation(t *testing.T) {
	token := strings.Repeat("A", 43)
	hexOf := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:16])
	}
	if got, want := broker.InboxOf(token), "_inbox."+hexOf(token); got != want {
		t.Errorf("inbox without owner %s, want %s", got, want)
	}
	owner := "tslm:api-key\x00billing"
	if got, want := broker.InboxOfOwner(owner, token), "_inbox."+hexOf(owner+"\x00"+token); got != want {
		t.Errorf("inbox of %q %s, want %s", owner, got, want)
	}
	if broker.InboxOfOwner("", token) != broker.InboxOf(token) {
		t.Error("the empty owner changes the derivation")
	}
}

// TestDuplicateReplies: whatever the inbox holds twice, or holds that is
// no reply, the request is answered once.
func TestDuplicateReplies(t *testing.T) {
	checkNoLeaks(t)
	h, log := newHub(t, broker.Config{})
	create(t, h, "dup", 100)
	sv, sink := serve(t, h, "dup")
	a := newAnswers()
	s := session(t, h, a)
	id := request(t, s, a, "dup", `1`, 0, "r1")
	inbox := broker.InboxOf(s.Token())
	junk := []string{
		`not json`,
		`{"channel":"dup","id":"` + id.String() + `"}`,
		`{"channel":"dup","id":"` + id.String() + `","data":1,"error":{"code":"x"}}`,
		`{"channel":"dup","id":"` + id.String() + `","error":{"code":"BAD"}}`,
		`{"channel":"dup","id":"01-1","data":1}`,
		`{"channel":"_inbox.x","id":"` + id.String() + `","data":1}`,
		`{"channel":"other","id":"` + id.String() + `","data":1}`,
	}
	for _, j := range junk {
		if _, err := log.Append(t.Context(), inbox, []byte(j)); err != nil {
			t.Fatal(err)
		}
	}
	r := sink.next(t)
	if err := sv.Reply(t.Context(), r.ID, []byte(`"first"`), nil); err != nil {
		t.Fatal(err)
	}
	// As a Redis app retrying its XADD would.
	if _, err := log.Append(t.Context(), inbox, []byte(`{"channel":"dup","id":"`+id.String()+`","data":"second"}`)); err != nil {
		t.Fatal(err)
	}
	barrier(t, s, a, sv, sink, "dup", 2)
	got := a.snapshot()
	if len(got) != 2 || got[0].ID != id || string(got[0].Data) != `"first"` {
		t.Fatalf("answers %+v, want the first reply once, then the barrier", got)
	}
	if st := h.Stats(); st.RepliesDropped != int64(len(junk))+1 {
		t.Errorf("dropped %d, want %d", st.RepliesDropped, len(junk)+1)
	}
}

// TestInboxExpiredWhileOpen: an inbox gone under an open session is made
// again and followed, so that replies written after reach the session.
func TestInboxExpiredWhileOpen(t *testing.T) {
	checkNoLeaks(t)
	h, log := newHub(t, broker.Config{})
	create(t, h, "orders", 100)
	sv, sink := serve(t, h, "orders")
	a := newAnswers()
	s := session(t, h, a)
	id := request(t, s, a, "orders", `1`, 10*time.Second, "r1")
	inbox := broker.InboxOf(s.Token())
	if err := log.Delete(t.Context(), inbox); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := log.Info(t.Context(), inbox); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the inbox was not made again")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := sink.next(t)
	if err := sv.Reply(t.Context(), r.ID, []byte(`"after"`), nil); err != nil {
		t.Fatal(err)
	}
	if x := a.waitFor(t, 1)[0]; x.ID != id || string(x.Data) != `"after"` {
		t.Fatalf("answer %+v", x)
	}
}

// TestServingFullStopsClaiming: a Serving holding ServeInflight requests
// leaves the next ones to other servers.
func TestServingFullStopsClaiming(t *testing.T) {
	checkNoLeaks(t)
	h, _ := newHub(t, broker.Config{ServeInflight: 2})
	create(t, h, "busy", 100)
	full, fullSink := serve(t, h, "busy")
	a := newAnswers()
	s := session(t, h, a)
	request(t, s, a, "busy", `1`, 0, "r1")
	request(t, s, a, "busy", `2`, 0, "r2")
	first := []broker.ServedRequest{fullSink.next(t), fullSink.next(t)}
	_, otherSink := serve(t, h, "busy")
	third := request(t, s, a, "busy", `3`, 0, "r3")
	if r := otherSink.next(t); r.ID != third {
		t.Fatalf("the other server got %v, want %v", r.ID, third)
	}
	// Room again: the full one takes the next request, or the other does.
	if err := full.Reply(t.Context(), first[0].ID, []byte(`1`), nil); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, 1)
}

// TestServingCloseReleases: requests held by a Serving that closes go at
// once to another Serving of the replica, with no reclaim delay.
func TestServingCloseReleases(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		// Neither the reclaim delay nor the claim wait can explain a
		// prompt hand-over.
		h := hubOn(t, logs(), broker.Config{ReclaimAfter: time.Hour, ServeBlock: time.Hour})
		create(t, h, "orders", 100)
		first, firstSink := serve(t, h, "orders")
		a := newAnswers()
		s := session(t, h, a)
		ids := []backlog.ID{
			request(t, s, a, "orders", `1`, 0, "r1"),
			request(t, s, a, "orders", `2`, 0, "r2"),
		}
		held := []broker.ServedRequest{firstSink.next(t), firstSink.next(t)}
		if err := first.Reply(t.Context(), held[0].ID, []byte(`"one"`), nil); err != nil {
			t.Fatal(err)
		}
		second, secondSink := serve(t, h, "orders")
		first.Close()
		r := secondSink.next(t)
		if r.ID != ids[1] || r.Deliveries != 2 {
			t.Fatalf("second server got %+v, want %v delivered a second time", r, ids[1])
		}
		if err := first.Reply(t.Context(), held[1].ID, []byte(`"late"`), nil); !errors.Is(err, broker.ErrRequestGone) {
			t.Errorf("reply on the closed serving: %v, want ErrRequestGone", err)
		}
		if err := second.Reply(t.Context(), r.ID, []byte(`"two"`), nil); err != nil {
			t.Fatal(err)
		}
		got := a.waitFor(t, 2)
		if got[1].ID != ids[1] || string(got[1].Data) != `"two"` {
			t.Fatalf("answers %+v", got)
		}
	})
}

// TestServingCloseReleasesAcrossReplicas: a Serving on another replica is
// not poked, and takes released requests at its next reclaim.
func TestServingCloseReleasesAcrossReplicas(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		cfg := broker.Config{ReclaimAfter: time.Hour, ServeBlock: 50 * time.Millisecond}
		a, b := hubOn(t, logs(), cfg), hubOn(t, logs(), cfg)
		create(t, a, "orders", 100)
		onA, sinkA := serve(t, a, "orders")
		ans := newAnswers()
		s := session(t, a, ans)
		id := request(t, s, ans, "orders", `1`, 0, "r1")
		sinkA.next(t)
		onB, sinkB := serve(t, b, "orders")
		onA.Close()
		r := sinkB.next(t)
		if r.ID != id || r.Deliveries != 2 {
			t.Fatalf("replica B got %+v", r)
		}
		if err := onB.Reply(t.Context(), id, []byte(`2`), nil); err != nil {
			t.Fatal(err)
		}
		ans.waitFor(t, 1)
	})
}

// TestSlowServerKeepsItsRequest: an app may take longer than ReclaimAfter
// to answer: while its Serving lives, the request goes to no other
// Serving, of another replica or its own, and is answered once.
func TestSlowServerKeepsItsRequest(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		const reclaimAfter = 300 * time.Millisecond
		// Both loops reclaim every 50ms.
		cfg := broker.Config{ReclaimAfter: reclaimAfter, ServeBlock: 50 * time.Millisecond}
		a, b := hubOn(t, logs(), cfg), hubOn(t, logs(), cfg)
		create(t, a, "orders", 100)
		slow, slowSink := serve(t, a, "orders")
		ans := newAnswers()
		s := session(t, a, ans)
		id := request(t, s, ans, "orders", `1`, 10*time.Second, "r1")
		if r := slowSink.next(t); r.ID != id || r.Deliveries != 1 {
			t.Fatalf("served %+v, want %v", r, id)
		}
		other, otherSink := serve(t, b, "orders")
		select {
		case r := <-otherSink:
			t.Fatalf("the other server got %+v while the slow one worked on it", r)
		case r := <-slowSink:
			t.Fatalf("the slow server got %+v again", r)
		case <-time.After(4 * reclaimAfter):
		}
		if err := slow.Reply(t.Context(), id, []byte(`"slow"`), nil); err != nil {
			t.Fatalf("reply after %v: %v", 4*reclaimAfter, err)
		}
		if got := ans.waitFor(t, 1); got[0].ID != id || string(got[0].Data) != `"slow"` {
			t.Fatalf("answers %+v", got)
		}
		// No second answer is on its way: the other server held nothing
		// to release, and a barrier through the slow one comes next.
		other.Close()
		if n := len(otherSink); n != 0 {
			t.Fatalf("the other server got %d requests", n)
		}
		barrier(t, s, ans, slow, slowSink, "orders", 2)
	})
}

// TestHubCloseReleases: a replica shutting down releases what its
// Servings hold.
func TestHubCloseReleases(t *testing.T) {
	checkNoLeaks(t)
	log := backlog.NewMemory(backlog.MemoryConfig{})
	t.Cleanup(func() { log.Close() })
	cfg := broker.Config{ReclaimAfter: time.Hour, ServeBlock: 50 * time.Millisecond}
	a := broker.New(log, cfg)
	b := hubOn(t, log, cfg)
	create(t, b, "orders", 100)
	sinkA := make(served, 10)
	if _, err := a.Serve(t.Context(), "orders", sinkA); err != nil {
		t.Fatal(err)
	}
	ans := newAnswers()
	s := session(t, b, ans)
	id := request(t, s, ans, "orders", `1`, 0, "r1")
	sinkA.next(t)
	_, sinkB := serve(t, b, "orders")
	a.Close()
	if r := sinkB.next(t); r.ID != id {
		t.Fatalf("got %v, want %v", r.ID, id)
	}
}

func TestReservedNames(t *testing.T) {
	checkNoLeaks(t)
	h, _ := newHub(t, broker.Config{})
	create(t, h, "orders", 100)
	a := newAnswers()
	s := session(t, h, a)
	request(t, s, a, "orders", `1`, time.Second, "r1")
	inbox := broker.InboxOf(s.Token())
	ctx := t.Context()
	ops := map[string]func(ch string) error{
		"create":  func(ch string) error { _, err := h.Create(ctx, ch, broker.ChannelOptions{}); return err },
		"publish": func(ch string) error { _, err := h.Publish(ctx, ch, []byte(`1`)); return err },
		"publish idempotent": func(ch string) error {
			_, _, err := h.PublishIdempotent(ctx, ch, []byte(`1`), "k")
			return err
		},
		"delete":   func(ch string) error { return h.Delete(ctx, ch) },
		"info":     func(ch string) error { _, err := h.Info(ctx, ch); return err },
		"messages": func(ch string) error { _, _, err := h.Messages(ctx, ch, backlog.Zero, 10); return err },
		"subscribe": func(ch string) error {
			sub, _, err := h.Subscribe(ctx, ch, broker.From{}, newRecorder())
			if sub != nil {
				sub.Close()
			}
			return err
		},
		"request": func(ch string) error { return s.Request(ctx, ch, []byte(`1`), 0, "x", func(backlog.ID, string) {}) },
		"serve": func(ch string) error {
			sv, err := h.Serve(ctx, ch, make(served, 1))
			if sv != nil {
				sv.Close()
			}
			return err
		},
		"resume pending": func(ch string) error {
			rs, err := h.ResumeSession(ctx, "", s.Token(), []broker.Pending{{Channel: ch, ID: backlog.ID{Ms: 1}}}, newAnswers())
			if rs != nil {
				rs.Close()
			}
			return err
		},
	}
	for name, op := range ops {
		for _, ch := range []string{inbox, "_inbox.unknown"} {
			err := op(ch)
			if !errors.Is(err, broker.ErrReserved) || broker.ErrorOf(err).Code != broker.CodeForbidden {
				t.Errorf("%s %s: %v, want ErrReserved (forbidden)", name, ch, err)
			}
		}
	}
	if _, err := h.Info(ctx, "orders"); err != nil {
		t.Errorf("info of an ordinary channel: %v", err)
	}
	names, next, err := h.List(ctx, "", "", 100)
	if err != nil || next != "" || strings.Join(names, ",") != "orders" {
		t.Errorf("List = %v, %q, %v; want only orders", names, next, err)
	}
	if names, next, err := h.List(ctx, "_inbox.", "", 100); err != nil || next != "" || len(names) != 0 {
		t.Errorf("List(_inbox.) = %v, %q, %v; want nothing", names, next, err)
	}
	if names, _, err := h.List(ctx, "_", "", 100); err != nil || len(names) != 0 {
		t.Errorf("List(_) = %v, %v; want nothing", names, err)
	}
}

func TestRequestErrors(t *testing.T) {
	mem := backlog.NewMemory(backlog.MemoryConfig{MaxRequests: 1})
	t.Cleanup(func() { mem.Close() })
	checkNoLeaks(t)
	h := hubOn(t, mem, broker.Config{MaxRequestTimeout: time.Second, MaxInflight: 2})
	create(t, h, "orders", 100)
	create(t, h, "other", 100)
	a := newAnswers()
	s := session(t, h, a)
	nop := func(backlog.ID, string) { t.Error("acked called for a failed request") }
	cases := []struct {
		name    string
		channel string
		timeout time.Duration
		want    *broker.Error
	}{
		{"bad channel", "a b", 0, broker.ErrBadChannel},
		{"empty channel", "", 0, broker.ErrBadChannel},
		{"missing channel", "missing", 0, broker.ErrNotFound},
		{"negative timeout", "orders", -time.Millisecond, broker.ErrBadRequest},
		{"sub-millisecond timeout", "orders", time.Microsecond, broker.ErrBadRequest},
		{"timeout over the maximum", "orders", time.Second + time.Millisecond, broker.ErrBadRequest},
	}
	for _, c := range cases {
		err := s.Request(t.Context(), c.channel, []byte(`1`), c.timeout, "x", nop)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	err := s.Request(t.Context(), "orders", []byte(`1`), 2*time.Second, "x", nop)
	if e := broker.ErrorOf(err); e == nil || !strings.Contains(e.Message, "1000 ms") {
		t.Errorf("timeout over the maximum: %v, want the bound named", err)
	}
	request(t, s, a, "orders", `1`, time.Second, "r1") // at the maximum
	// The queue holds one request: full.
	err = s.Request(t.Context(), "orders", []byte(`2`), 0, "x", nop)
	if !errors.Is(err, broker.ErrLimit) || !strings.Contains(broker.ErrorOf(err).Message, "orders") {
		t.Errorf("full queue: %v, want ErrLimit naming the channel", err)
	}
	request(t, s, a, "other", `1`, time.Second, "r2")
	err = s.Request(t.Context(), "orders", []byte(`3`), 0, "x", nop)
	if !errors.Is(err, broker.ErrLimit) || !strings.Contains(broker.ErrorOf(err).Message, "2") {
		t.Errorf("over MaxInflight: %v, want ErrLimit", err)
	}
	// The requests time out (nobody serves): room again.
	a.waitFor(t, 2)
	request(t, s, a, "other", `4`, time.Second, "r4")
	if st := h.Stats(); st.Timeouts != 2 || st.RequestsPending != 1 {
		t.Errorf("stats: %+v", st)
	}
	if _, err := h.Serve(t.Context(), "missing", make(served, 1)); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("serve a missing channel: %v, want ErrNotFound", err)
	}
	if _, err := h.Serve(t.Context(), "a b", make(served, 1)); !errors.Is(err, broker.ErrBadChannel) {
		t.Errorf("serve a bad channel: %v, want ErrBadChannel", err)
	}
}

func TestResumeErrors(t *testing.T) {
	checkNoLeaks(t)
	h, log := newHub(t, broker.Config{MaxInflight: 2, MaxRequestTimeout: time.Second})
	create(t, h, "orders", 100)
	a := newAnswers()
	s := session(t, h, a)
	request(t, s, a, "orders", `1`, time.Second, "r1")
	token := s.Token()
	ctx := t.Context()
	for _, bad := range []string{"", "short", token + "A", token[:42] + "=", token[:42] + "+", strings.Repeat("A", 42) + "B", " " + token[1:]} {
		if _, err := h.ResumeSession(ctx, "", bad, nil, newAnswers()); !errors.Is(err, broker.ErrBadSession) || broker.ErrorOf(err).Code != broker.CodeBadRequest {
			t.Errorf("token %q: %v, want ErrBadSession", bad, err)
		}
	}
	unknown := strings.Repeat("A", 43)
	if _, err := h.ResumeSession(ctx, "", unknown, nil, newAnswers()); !errors.Is(err, broker.ErrSessionExpired) || broker.ErrorOf(err).Code != broker.CodeNotFound {
		t.Errorf("unknown token: %v, want ErrSessionExpired", err)
	}
	id := backlog.ID{Ms: 1}
	cases := []struct {
		name    string
		pending []broker.Pending
		want    *broker.Error
	}{
		{"too many", []broker.Pending{{Channel: "orders", ID: id}, {Channel: "orders", ID: id.Next()}, {Channel: "orders", ID: id.Next().Next()}}, broker.ErrLimit},
		{"twice", []broker.Pending{{Channel: "orders", ID: id}, {Channel: "orders", ID: id}}, broker.ErrBadRequest},
		{"bad channel", []broker.Pending{{Channel: "a b", ID: id}}, broker.ErrBadChannel},
		{"negative timeout", []broker.Pending{{Channel: "orders", ID: id, Timeout: -1}}, broker.ErrBadRequest},
		{"timeout over the maximum", []broker.Pending{{Channel: "orders", ID: id, Timeout: 2 * time.Second}}, broker.ErrBadRequest},
	}
	for _, c := range cases {
		if _, err := h.ResumeSession(ctx, "", token, c.pending, newAnswers()); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if st := h.Stats(); st.Sessions != 1 || st.RequestsPending != 1 {
		t.Errorf("failed resumes left %+v", st)
	}
	// The inbox expired (as Expiry would delete it).
	s.Close()
	if err := log.Delete(ctx, broker.InboxOf(token)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ResumeSession(ctx, "", token, nil, newAnswers()); !errors.Is(err, broker.ErrSessionExpired) {
		t.Errorf("expired inbox: %v, want ErrSessionExpired", err)
	}
}

// TestResumedRequestTimesOut: a declared request whose reply never comes
// is answered with a timeout after the declared time.
func TestResumedRequestTimesOut(t *testing.T) {
	checkNoLeaks(t)
	h, _ := newHub(t, broker.Config{})
	create(t, h, "orders", 100)
	a := newAnswers()
	s := session(t, h, a)
	id := request(t, s, a, "orders", `1`, 10*time.Second, "r1")
	token := s.Token()
	s.Close()
	b := newAnswers()
	rs, err := h.ResumeSession(t.Context(), "", token, []broker.Pending{{Channel: "orders", ID: id, Tag: "resumed-1", Timeout: 20 * time.Millisecond}}, b)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if x := b.waitFor(t, 1)[0]; !x.Timeout || x.Tag != "resumed-1" || x.ID != id {
		t.Fatalf("answer %+v, want a timeout", x)
	}
}

// TestSinkRefusalStopsSession: a sink that refuses an answer is closing
// its connection: the session answers nothing more.
func TestSinkRefusalStopsSession(t *testing.T) {
	checkNoLeaks(t)
	h, _ := newHub(t, broker.Config{})
	create(t, h, "orders", 100)
	sv, sink := serve(t, h, "orders")
	a := newAnswers()
	s := session(t, h, a)
	request(t, s, a, "orders", `1`, 0, "r1")
	request(t, s, a, "orders", `2`, 0, "r2")
	a.mu.Lock()
	a.refuse = true
	a.mu.Unlock()
	r := sink.next(t)
	if err := sv.Reply(t.Context(), r.ID, []byte(`1`), nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.Stats().RequestsPending != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the refused session still awaits its requests")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Request(t.Context(), "orders", []byte(`3`), 0, "r3", func(backlog.ID, string) {}); !errors.Is(err, broker.ErrCanceled) {
		t.Errorf("request after the refusal: %v, want ErrCanceled", err)
	}
}

// TestCloseIsFinal: after Close no answer comes, deadline or reply.
func TestCloseIsFinal(t *testing.T) {
	checkNoLeaks(t)
	h, _ := newHub(t, broker.Config{})
	create(t, h, "orders", 100)
	sv, sink := serve(t, h, "orders")
	a := newAnswers()
	s := h.NewSession("", a)
	request(t, s, a, "orders", `1`, 30*time.Millisecond, "r1")
	request(t, s, a, "orders", `2`, 0, "r2")
	deadline := time.Now().Add(30 * time.Millisecond)
	s.Close()
	s.Close()
	if st := h.Stats(); st.RequestsPending != 0 || st.Sessions != 0 {
		t.Errorf("stats after close: %+v", st)
	}
	for range 2 {
		r := sink.next(t)
		if err := sv.Reply(t.Context(), r.ID, []byte(`1`), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Past the first deadline: its timer would have fired by now.
	time.Sleep(time.Until(deadline) + 20*time.Millisecond)
	if got := a.snapshot(); len(got) != 0 {
		t.Errorf("answers after Close: %+v", got)
	}
	if err := s.Request(t.Context(), "orders", []byte(`3`), 0, "r3", func(backlog.ID, string) {}); !errors.Is(err, broker.ErrCanceled) {
		t.Errorf("request after Close: %v, want ErrCanceled", err)
	}
}

// logOnly hides the Memory's request queues.
type logOnly struct{ backlog.Log }

func TestRequestsUnsupported(t *testing.T) {
	checkNoLeaks(t)
	mem := backlog.NewMemory(backlog.MemoryConfig{})
	t.Cleanup(func() { mem.Close() })
	h := hubOn(t, logOnly{mem}, broker.Config{})
	create(t, h, "orders", 100)
	s := session(t, h, newAnswers())
	if err := s.Request(t.Context(), "orders", []byte(`1`), 0, "x", func(backlog.ID, string) {}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Request: %v, want ErrUnavailable", err)
	}
	if _, err := h.Serve(t.Context(), "orders", make(served, 1)); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Serve: %v, want ErrUnavailable", err)
	}
	if _, err := h.ResumeSession(t.Context(), "", strings.Repeat("A", 43), nil, newAnswers()); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("ResumeSession: %v, want ErrUnavailable", err)
	}
}

// TestReplyEnvelope pins what a Redis app must write (docs/redis.md).
func TestReplyEnvelope(t *testing.T) {
	checkNoLeaks(t)
	h, log := newHub(t, broker.Config{})
	create(t, h, "orders", 100)
	sv, sink := serve(t, h, "orders")
	a := newAnswers()
	s := session(t, h, a)
	id := request(t, s, a, "orders", `1`, 0, "r1")
	r := sink.next(t)
	if err := sv.Reply(t.Context(), r.ID, []byte(`{"a": [1, 2]}`), nil); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, 1)
	page, err := log.Range(t.Context(), broker.InboxOf(s.Token()), backlog.Zero, 10)
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("inbox holds %+v, %v", page, err)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(page.Messages[0].Data, &env); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"channel": `"orders"`, "id": `"` + id.String() + `"`, "data": `{"a":[1,2]}`}
	if len(env) != len(want) {
		t.Errorf("envelope %s", page.Messages[0].Data)
	}
	for k, v := range want {
		if string(env[k]) != v {
			t.Errorf("envelope %s: %s = %s, want %s", page.Messages[0].Data, k, env[k], v)
		}
	}
	info, err := log.Info(t.Context(), broker.InboxOf(s.Token()))
	if err != nil || info.Config.MaxLen != 1000 || info.Config.Retention != 0 || info.Config.Expiry != 5*time.Minute {
		t.Errorf("inbox config %+v, %v", info.Config, err)
	}
}

// TestSessionInboxExpiry: an open session keeps its inbox from expiring;
// once closed, the inbox expires after SessionTTL and the token is then
// refused.
func TestSessionInboxExpiry(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		const ttl = 300 * time.Millisecond
		log := logs()
		h := hubOn(t, log, broker.Config{SessionTTL: ttl})
		create(t, h, "orders", 100)
		sv, sink := serve(t, h, "orders")
		a := newAnswers()
		s := session(t, h, a)
		id := request(t, s, a, "orders", `1`, 5*time.Second, "r1")
		inbox := broker.InboxOf(s.Token())
		r := sink.next(t)
		// Several TTLs, during which only the session's refreshes keep
		// the inbox.
		time.Sleep(4 * ttl)
		if err := sv.Reply(t.Context(), r.ID, []byte(`"kept"`), nil); err != nil {
			t.Fatalf("reply after %v: %v", 4*ttl, err)
		}
		if x := a.waitFor(t, 1)[0]; x.ID != id || string(x.Data) != `"kept"` {
			t.Fatalf("answer %+v", x)
		}
		token := s.Token()
		s.Close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := log.Info(t.Context(), inbox)
			if errors.Is(err, backlog.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the inbox of a closed session did not expire: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := h.ResumeSession(t.Context(), "", token, nil, newAnswers()); !errors.Is(err, broker.ErrSessionExpired) {
			t.Errorf("resume after expiry: %v, want ErrSessionExpired", err)
		}
	})
}

// TestReclaimFromDeadConsumer: a request claimed by a consumer that went
// away without a word (a crashed replica or Redis app) is served again
// once idle for ReclaimAfter.
func TestReclaimFromDeadConsumer(t *testing.T) {
	forBackends(t, func(t *testing.T, logs func() backlog.Log) {
		log := logs()
		h := hubOn(t, log, broker.Config{ReclaimAfter: 100 * time.Millisecond, ServeBlock: 20 * time.Millisecond})
		create(t, h, "orders", 100)
		a := newAnswers()
		s := session(t, h, a)
		id := request(t, s, a, "orders", `1`, 10*time.Second, "r1")
		dead, err := log.(backlog.Requests).Claim(t.Context(), "orders", broker.ServeGroup, "dead.1", 10, 0)
		if err != nil || len(dead) != 1 || dead[0].ID != id {
			t.Fatalf("the dead consumer claimed %+v, %v", dead, err)
		}
		sv, sink := serve(t, h, "orders")
		r := sink.next(t)
		if r.ID != id || r.Deliveries != 2 {
			t.Fatalf("served %+v, want %v a second time", r, id)
		}
		if err := sv.Reply(t.Context(), r.ID, []byte(`1`), nil); err != nil {
			t.Fatal(err)
		}
		a.waitFor(t, 1)
	})
}

// TestReplyToExpiredInbox: the requester's session is gone for good; the
// reply is refused as gone and the request acked all the same.
func TestReplyToExpiredInbox(t *testing.T) {
	checkNoLeaks(t)
	h, log := newHub(t, broker.Config{})
	create(t, h, "orders", 100)
	sv, sink := serve(t, h, "orders")
	a := newAnswers()
	s := session(t, h, a)
	request(t, s, a, "orders", `1`, 10*time.Second, "r1")
	inbox := broker.InboxOf(s.Token())
	s.Close()
	if err := log.Delete(t.Context(), inbox); err != nil {
		t.Fatal(err)
	}
	r := sink.next(t)
	if err := sv.Reply(t.Context(), r.ID, []byte(`1`), nil); !errors.Is(err, broker.ErrRequestGone) {
		t.Fatalf("reply to an expired inbox: %v, want ErrRequestGone", err)
	}
	if _, err := log.Info(t.Context(), inbox); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("the reply made the inbox again: %v", err)
	}
	if n, err := log.Ack(t.Context(), "orders", broker.ServeGroup, r.ID); err != nil || n != 0 {
		t.Errorf("the request was still pending (%d, %v): not acked", n, err)
	}
	if err := sv.Reply(t.Context(), r.ID, []byte(`1`), nil); !errors.Is(err, broker.ErrRequestGone) {
		t.Errorf("second reply: %v, want ErrRequestGone", err)
	}
}
