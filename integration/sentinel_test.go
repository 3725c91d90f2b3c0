package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// TestSentinelFailoverLosesUnreplicatedWrites runs the gateway binary on a
// Sentinel set and fails the primary over after it acknowledged messages
// its replicas never received: the case the resume proof exists for.
//
// Messages 1..N reach both replicas (WAIT). Then both replicas freeze
// (SIGSTOP) and the primary drops their links (CLIENT KILL TYPE replica),
// so that the kernel holds nothing more for them; messages N+1..N+k are
// acknowledged by the primary alone, and subscribers receive them. The
// primary is killed (SIGKILL), the replicas thawed, and the sentinels
// promote one of them, whose stream ends at N: N+1..N+k are lost. The
// gateway is not restarted. Then, with messages M1.. published after the
// promotion:
//
//   - C, subscribed throughout, gets a gap after the last lost ID it saw,
//     then M1.. once each, in order;
//   - A, which saw the lost IDs and disconnected, resumes after the last
//     one: resumed:false, the replay from the oldest message held, then
//     M1..; D does the same right after the promotion, before M1 exists,
//     and gets no gap for the loss its ack already reported;
//   - B, which disconnected after N, and B2, after an older message,
//     resume with resumed:true and get exactly what followed;
//   - E, subscribed live after the promotion, gets M1.. and no gap.
//
// Meanwhile publishes answer 503 and /readyz 503 until the promotion, and
// succeed after it. That M1 sorts after the lost IDs rests on entry IDs
// being the new primary's clock, here the same host's (docs/redis.md).
func TestSentinelFailoverLosesUnreplicatedWrites(t *testing.T) {
	const channel, replicated, lost, after = "fo", 5, 3, 3
	began := time.Now()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	p := startBinary(t, map[string]string{"TSLM_REDIS_URL": s.URL()})
	r := &replica{publicURL: "ws://" + p.addr(t, "public") + "/v1/ws", apiURL: "http://" + p.addr(t, "internal")}
	checkSentinelLogged(t, p, s)

	r.create(t, channel, nil)
	a, b, b2, c := dial(t, r.publicURL), dial(t, r.publicURL), dial(t, r.publicURL), dial(t, r.publicURL)
	for _, cl := range []*client{a, b, b2, c} {
		cl.subscribe(channel, nil)
	}
	var ids []string
	for i := range replicated {
		ids = append(ids, r.publish(t, channel, fmt.Sprintf(`"replicated %d"`, i)))
	}
	for _, cl := range []*client{a, b, b2, c} {
		sameIDs(t, "before the failover", cl.messages(channel, replicated), ids)
	}
	b.conn.Close()
	b2.conn.Close()
	old := s.Primary()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	if n, err := old.Client().Do(ctx, "WAIT", 2, 5000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT for both replicas: %d, %v", n, err)
	}

	var thaws []func()
	for _, rep := range s.Replicas() {
		thaws = append(thaws, rep.Hang())
	}
	if err := old.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatalf("CLIENT KILL TYPE replica: %v", err)
	}
	var lostIDs []string
	for i := range lost {
		lostIDs = append(lostIDs, r.publish(t, channel, fmt.Sprintf(`"lost %d"`, i)))
	}
	for _, cl := range []*client{a, c} {
		sameIDs(t, "acknowledged by the primary alone", cl.messages(channel, lost), lostIDs)
	}
	a.conn.Close()
	lastLost := lostIDs[lost-1]

	old.Kill()
	// No primary until the promotion: Redis's clients fail fast.
	if s := httpStatus(http.MethodGet, r.apiURL+"/readyz", ""); s != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the primary dead: %d, want 503", s)
	}
	if s := httpStatus(http.MethodPost, r.apiURL+"/v1/channels/"+channel+"/messages", `"nowhere"`); s != http.StatusServiceUnavailable {
		t.Errorf("publish with the primary dead: %d, want 503", s)
	}
	for _, thaw := range thaws {
		thaw()
	}
	promoted := s.WaitPromotion(old)
	promotedAt := time.Now()
	if held := streamIDs(t, promoted.Client(), channel); !slices.Equal(held, ids) {
		t.Fatalf("the promoted replica holds %v, want exactly the replicated %v: the test did not lose what it meant to", held, ids)
	}

	eventually(t, 15*time.Second, "/readyz not 200 after the promotion", func() bool {
		return httpStatus(http.MethodGet, r.apiURL+"/readyz", "") == http.StatusOK
	})
	t.Logf("ready %v after the promotion", time.Since(promotedAt).Round(time.Millisecond))

	// D resumes after the lost IDs before anything new exists; E
	// subscribes live.
	d := dial(t, r.publicURL)
	if ack := d.subscribe(channel, map[string]any{"since": lastLost}); ack["resumed"] != false || ack["head"] != ids[replicated-1] {
		t.Fatalf("D resumes after the lost %s: ack %v, want resumed:false and head %s", lastLost, ack, ids[replicated-1])
	}
	sameIDs(t, "D's replay from the oldest held", d.messages(channel, replicated), ids)
	e := dial(t, r.publicURL)
	e.subscribe(channel, nil)

	var news []string
	for i := range after {
		news = append(news, publishOnce(t, r, channel, fmt.Sprintf(`"after %d"`, i), fmt.Sprintf("after-%d", i)))
	}
	if first, last := parseID(t, news[0]), parseID(t, lastLost); !last.Less(first) {
		t.Fatalf("first ID after the promotion %s is not after the lost %s: the host clock went back?", news[0], lastLost)
	}

	c.expect(map[string]any{"type": "gap", "channel": channel, "after": lastLost})
	sameIDs(t, "C, subscribed through the failover", c.messages(channel, after), news)
	sameIDs(t, "D, resumed before the new messages", d.messages(channel, after), news)
	sameIDs(t, "E, subscribed after the promotion", e.messages(channel, after), news)

	a = dial(t, r.publicURL)
	if ack := a.subscribe(channel, map[string]any{"since": lastLost}); ack["resumed"] != false {
		t.Fatalf("A resumes after the lost %s: ack %v, want resumed:false", lastLost, ack)
	}
	sameIDs(t, "A's replay from the oldest held", a.messages(channel, replicated+after), append(slices.Clone(ids), news...))
	b = dial(t, r.publicURL)
	if ack := b.subscribe(channel, map[string]any{"since": ids[replicated-1]}); ack["resumed"] != true {
		t.Fatalf("B resumes after %s, replicated: ack %v, want resumed:true", ids[replicated-1], ack)
	}
	sameIDs(t, "B's replay", b.messages(channel, after), news)
	b2 = dial(t, r.publicURL)
	if ack := b2.subscribe(channel, map[string]any{"since": ids[1]}); ack["resumed"] != true {
		t.Fatalf("B2 resumes after %s: ack %v, want resumed:true", ids[1], ack)
	}
	sameIDs(t, "B2's replay", b2.messages(channel, replicated-2+after), append(slices.Clone(ids[2:]), news...))

	// Two more: the next frame of everyone is the first, then the second,
	// so nothing was repeated and no late gap came.
	live := []string{r.publish(t, channel, `"live 1"`), r.publish(t, channel, `"live 2"`)}
	for name, cl := range map[string]*client{"A": a, "B": b, "B2": b2, "C": c, "D": d, "E": e} {
		sameIDs(t, name+", live after the failover", cl.messages(channel, len(live)), live)
	}
	t.Logf("scenario done in %v", time.Since(began).Round(time.Millisecond))
}

// checkSentinelLogged: the start-up line names the primary's Sentinel name
// and the sentinels, not go-redis's placeholder address.
func checkSentinelLogged(t *testing.T, p *process, s *redistest.Sentinel) {
	t.Helper()
	eventually(t, 10*time.Second, "no 'using the Redis backlog' line naming the Sentinel master:\n"+p.output(), func() bool {
		for _, l := range p.logLines() {
			if l["msg"] == "using the Redis backlog" && l["sentinel_master"] == s.MasterName() {
				return true
			}
		}
		return false
	})
}

// publishOnce publishes through the HTTP API with an idempotency key,
// retrying while the backlog is unavailable, and returns the one ID.
func publishOnce(t *testing.T, r *replica, channel, data, key string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, err := http.NewRequest(http.MethodPost, r.apiURL+"/v1/channels/"+channel+"/messages", strings.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Idempotency-Key", key)
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated:
			var ack struct{ ID string }
			if err := json.Unmarshal(body, &ack); err != nil || ack.ID == "" {
				t.Fatalf("publish %s: %s: %v", data, body, err)
			}
			return ack.ID
		case resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline):
			t.Fatalf("publish %s: %d %s", data, resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func parseID(t *testing.T, s string) backlog.ID {
	t.Helper()
	id, err := backlog.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
