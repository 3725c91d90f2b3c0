package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/internal/redistest"
)

// smallRR is a reqreply run small enough for a test under -race.
func smallRR(extra ...string) []string {
	return append([]string{"-scenario", "reqreply", "-requesters", "6", "-channels", "3", "-inflight", "2",
		"-responders", "2", "-duration", "1s", "-drain", "10s", "-dialers", "8"}, extra...)
}

// checkReqReply checks a verified reqreply run.
func checkReqReply(t *testing.T, r Result, target, serve string, redis bool) {
	t.Helper()
	rr := r.ReqReply
	if r.Target != target || r.Scenario != "reqreply" || r.Channels != 3 || rr == nil || rr.Requesters != 6 || rr.Serve != serve {
		t.Fatalf("%s: %+v, reqreply %+v", target, r, rr)
	}
	if !r.Verify.OK || rr.Requests == 0 || rr.Acked != rr.Requests || rr.Answered != rr.Requests || rr.Timeouts != 0 || rr.Refused != 0 ||
		r.Delivered != rr.Answered || r.Expected != rr.Acked {
		t.Errorf("%s: reqreply %+v, delivered %d, expected %d, verdict %+v", target, rr, r.Delivered, r.Expected, r.Verify)
	}
	if rr.AnsweredPerS <= 0 || r.LatencyMS.P50 <= 0 || r.LatencyMS.P50 > r.LatencyMS.P99 || r.LatencyMS.P99 > r.LatencyMS.Max*1.02 {
		// (A quantile is its bucket's middle, which may lie above the
		// largest value seen: buckets are 1.6 % wide.)
		t.Errorf("%s: answered %v/s, latency %+v", target, rr.AnsweredPerS, r.LatencyMS)
	}
	if rr.GatewayUSPerRoundTrip == nil || *rr.GatewayUSPerRoundTrip <= 0 || rr.LoadUSPerRoundTrip <= 0 {
		t.Errorf("%s: gateway CPU per round trip %v, load's %v", target, rr.GatewayUSPerRoundTrip, rr.LoadUSPerRoundTrip)
	}
	if redis != (rr.RedisUSPerRoundTrip != nil) || redis && (rr.ServerUSPerRoundTrip == nil || *rr.ServerUSPerRoundTrip <= *rr.GatewayUSPerRoundTrip) {
		t.Errorf("%s: Redis CPU per round trip %v, server's %v; want Redis measured: %v", target, rr.RedisUSPerRoundTrip, rr.ServerUSPerRoundTrip, redis)
	}
}

// TestReqReply runs request/reply round trips on both backlogs: closed
// loop and at a rate on the in-memory one; on Redis with the responders
// on the internal WebSocket and straight from Redis.
func TestReqReply(t *testing.T) {
	code, res, log := benchRun(t, smallRR("-target", "self-memory"), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("exit %d, %d results; log:\n%s", code, len(res), log)
	}
	checkReqReply(t, res[0], "self-memory", "ws", false)
	logSays(t, log, "6 requesters on 3 channels", "answered", "round trip", "per round trip", "verified")

	code, res, log = benchRun(t, smallRR("-target", "self-memory", "-rate", "60"), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("-rate: exit %d, %d results; log:\n%s", code, len(res), log)
	}
	checkReqReply(t, res[0], "self-memory", "ws", false)
	// 60 a second for about a second; the schedule forgives no more.
	if n := res[0].ReqReply.Requests; n < 30 || n > 90 {
		t.Errorf("-rate 60 for 1s: %d requests", n)
	}

	srv := redistest.Start(t, redistest.Options{})
	for _, serve := range []string{"ws", "redis"} {
		code, res, log = benchRun(t, smallRR("-target", "self-redis="+srv.URL(), "-serve", serve), 0, 0)
		if code != 0 || len(res) != 1 {
			t.Fatalf("-serve %s: exit %d, %d results; log:\n%s", serve, code, len(res), log)
		}
		checkReqReply(t, res[0], "self-redis", serve, true)
	}
}

// TestReqReplyVerificationFails runs responders that answer every third
// request wrongly: not at all, with the reply of the request before, or
// twice.
// The run must say so and exit 1.
func TestReqReplyVerificationFails(t *testing.T) {
	for _, tc := range []struct {
		fault string
		want  func(Verdict) bool
	}{
		{faultDrop, func(v Verdict) bool { return v.Timeouts > 0 && v.WrongReplies == 0 }},
		{faultMisroute, func(v Verdict) bool { return v.WrongReplies > 0 && v.Timeouts == 0 }},
		// The gateway passes one answer on and refuses the second reply:
		// the responder's refusals fail the run, the requesters saw no
		// duplicate.
		{faultDuplicate, func(v Verdict) bool { return v.Errors > 0 && v.Duplicates == 0 && v.WrongReplies == 0 && v.Lost == 0 }},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			code, res, log := benchRunWith(t, smallRR("-target", "self-memory", "-timeout", "1s"), func(o *options) {
				o.spec.replyFault, o.spec.faultEvery = tc.fault, 3
			})
			if code != 1 || len(res) != 1 || res[0].Verify.OK || !tc.want(res[0].Verify) || !strings.Contains(log, "FAILED") {
				t.Fatalf("exit %d, verdict %+v; want exit 1 with the fault counted; log:\n%s", code, res[0].Verify, log)
			}
		})
	}
}

// TestRequesterFrames feeds one requester frames as the gateway could
// send them, right and wrong, and checks how each is counted.
func TestRequesterFrames(t *testing.T) {
	sent := time.Unix(0, 1_700_000_000_000_000_000)
	reply := func(p int, s uint64, t int64) string {
		d, _ := json.Marshal(map[string]any{"by": replyMarker, "echo": map[string]any{"t": t, "p": p, "s": s}})
		return string(d)
	}
	ok := reply(3, 1, sent.UnixNano())
	for _, tc := range []struct {
		name   string
		frames []string
		want   [6]uint64 // answered, duplicates, wrong, timeouts, refused, errors
	}{
		{"ack then reply", []string{
			`{"type":"ack","ref":"1","channel":"c","id":"5-0"}`,
			`{"type":"reply","ref":"1","channel":"c","id":"5-0","data":` + ok + `}`,
		}, [6]uint64{1, 0, 0, 0, 0, 0}},
		{"the reply twice", []string{
			`{"type":"ack","ref":"1","channel":"c","id":"5-0"}`,
			`{"type":"reply","ref":"1","channel":"c","id":"5-0","data":` + ok + `}`,
			`{"type":"reply","ref":"1","channel":"c","id":"5-0","data":` + ok + `}`,
		}, [6]uint64{1, 1, 0, 0, 0, 0}},
		{"a reply before its ack", []string{
			`{"type":"reply","ref":"1","channel":"c","id":"5-0","data":` + ok + `}`,
		}, [6]uint64{0, 0, 1, 0, 0, 0}},
		{"a reply naming another ID", []string{
			`{"type":"ack","ref":"1","channel":"c","id":"5-0"}`,
			`{"type":"reply","ref":"1","channel":"c","id":"5-1","data":` + ok + `}`,
		}, [6]uint64{0, 0, 1, 0, 0, 0}},
		{"another requester's reply", []string{
			`{"type":"ack","ref":"1","channel":"c","id":"5-0"}`,
			`{"type":"reply","ref":"1","channel":"c","id":"5-0","data":` + reply(4, 1, sent.UnixNano()) + `}`,
		}, [6]uint64{0, 0, 1, 0, 0, 0}},
		{"the reply of another request", []string{
			`{"type":"ack","ref":"1","channel":"c","id":"5-0"}`,
			`{"type":"reply","ref":"1","channel":"c","id":"5-0","data":` + reply(3, 1, sent.UnixNano()+1) + `}`,
		}, [6]uint64{0, 0, 1, 0, 0, 0}},
		{"a reply without the marker", []string{
			`{"type":"ack","ref":"1","channel":"c","id":"5-0"}`,
			`{"type":"reply","ref":"1","channel":"c","id":"5-0","data":{"echo":{"p":3,"s":1}}}`,
		}, [6]uint64{0, 0, 1, 0, 0, 0}},
		{"a ref never sent", []string{`{"type":"ack","ref":"2","channel":"c","id":"5-0"}`}, [6]uint64{0, 0, 1, 0, 0, 0}},
		{"another channel", []string{`{"type":"ack","ref":"1","channel":"d","id":"5-0"}`}, [6]uint64{0, 0, 1, 0, 0, 0}},
		{"a timeout", []string{
			`{"type":"ack","ref":"1","channel":"c","id":"5-0"}`,
			`{"type":"error","ref":"1","code":"timeout","channel":"c","id":"5-0"}`,
		}, [6]uint64{0, 0, 0, 1, 0, 0}},
		{"refused", []string{`{"type":"error","ref":"1","code":"limit_exceeded"}`}, [6]uint64{0, 0, 0, 0, 1, 0}},
		{"the app's refusal", []string{
			`{"type":"ack","ref":"1","channel":"c","id":"5-0"}`,
			`{"type":"reply","ref":"1","channel":"c","id":"5-0","error":{"code":"no"}}`,
		}, [6]uint64{0, 0, 0, 0, 0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &requester{idx: 3, reqs: []request{{sent: sent}}, inflight: 1}
			var h histogram
			var got [6]uint64
			for _, raw := range tc.frames {
				var f rrFrame
				if err := json.Unmarshal([]byte(raw), &f); err != nil {
					t.Fatal(err)
				}
				if answered, _ := q.frameIn(&f, "c", []byte(raw), sent.Add(time.Millisecond), &h); answered {
					got[0]++
				}
			}
			got[1], got[2], got[3], got[4], got[5] = q.duplicates, q.wrong, q.timeouts, q.refused, q.errors
			if got != tc.want {
				t.Errorf("answered, duplicates, wrong, timeouts, refused, errors = %v, want %v", got, tc.want)
			}
			if got[0] != h.n.Load() {
				t.Errorf("%d answered, %d latencies recorded", got[0], h.n.Load())
			}
		})
	}
}

// TestReqReplyUsage checks the reqreply command lines.
func TestReqReplyUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the usage error; "" for none
	}{
		{[]string{"-target", "self-memory"}, ""},
		{[]string{"-target", "self-memory", "-compare", "bare"}, "bare broadcaster"},
		{[]string{"-target", "bare"}, "bare broadcaster"},
		{[]string{"-target", "self-memory", "-subscribers", "2"}, "not -subscribers"},
		{[]string{"-target", "self-memory", "-inflight", "0"}, "at least 1"},
		{[]string{"-target", "self-memory", "-timeout", "0s"}, "-timeout"},
		{[]string{"-target", "self-memory", "-serve", "http"}, "want ws or redis"},
		{[]string{"-target", "self-memory", "-serve", "redis"}, "needs a Redis target"},
		{[]string{"-target", "self-redis", "-start-redis-cluster", "3", "-serve", "redis"}, "not a Cluster"},
		{[]string{"-target", "self-redis", "-start-redis", "-serve", "redis"}, ""},
		{[]string{"-target", "self-memory", "-requesters", "20000"}, "over -max-conns"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o, err := parseArgs(append([]string{"-scenario", "reqreply"}, tc.args...), new(strings.Builder))
			checkUsage(t, err, tc.want)
			switch {
			case tc.want == "" && (o.spec.channels != 10 || o.spec.requesters != 100 || o.spec.inflight != 4 || o.spec.connections() < 100):
				t.Fatalf("defaults: %d channels, %d requesters, %d in flight, %d connections", o.spec.channels, o.spec.requesters, o.spec.inflight, o.spec.connections())
			}
		})
	}
}

// TestVerifyReqReply checks that a request never answered fails the run,
// whatever else went right.
func TestVerifyReqReply(t *testing.T) {
	done := make(chan struct{})
	close(done)
	requesters := func(states ...uint8) *bench {
		q := &requester{done: done}
		for _, s := range states {
			q.reqs = append(q.reqs, request{state: s})
		}
		return &bench{reqs: []*requester{q}}
	}
	if v := requesters(reqAnswered, reqAnswered).verifyReqReply(); !v.OK || v.Lost != 0 {
		t.Errorf("every request answered: %+v", v)
	}
	if v := requesters(reqAnswered, reqAcked, reqSent).verifyReqReply(); v.OK || v.Lost != 2 {
		t.Errorf("one acknowledged and one sent, neither answered: %+v; want 2 lost", v)
	}
}
