package main

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/tslm/tslm/internal/redistest"
)

// small is an idle or storm run small enough for a test under -race.
func small(extra ...string) []string {
	return append([]string{"-connections", "50", "-channels", "5", "-settle", "0s", "-publishers", "2", "-dialers", "8", "-drain", "30s"}, extra...)
}

// checkIdle checks an idle run of 50 connections on 5 channels.
func checkIdle(t *testing.T, r Result, target string, heap bool) {
	t.Helper()
	if r.Target != target || r.Scenario != "idle" || r.Connections < 50 || r.Channels != 5 || r.Idle == nil {
		t.Fatalf("%s: %+v", target, r)
	}
	// One message per channel, to each of its 10 subscribers.
	if !r.Verify.OK || r.Published != 5 || r.Expected != 50 || r.Delivered != 50 {
		t.Errorf("%s: published %d, expected %d, delivered %d, verdict %+v", target, r.Published, r.Expected, r.Delivered, r.Verify)
	}
	i := r.Idle
	if i.RSSBeforeMiB == nil || *i.RSSBeforeMiB <= 1 || i.RSSMiB == nil || i.RSSPerConn == nil {
		t.Errorf("%s: RSS before %v, with %v, per connection %v: not measured", target, i.RSSBeforeMiB, i.RSSMiB, i.RSSPerConn)
	}
	if heap != (i.HeapMiB != nil && i.HeapBeforeMiB != nil && i.HeapPerConn != nil) || heap && *i.HeapMiB <= 0 {
		t.Errorf("%s: heap before %v, with %v, per connection %v; want measured: %v", target, i.HeapBeforeMiB, i.HeapMiB, i.HeapPerConn, heap)
	}
}

// TestIdle runs the idle scenario on a gateway with the in-memory
// backlog against the bare broadcaster, then on one with Redis, its
// subscribers dialing from three loopback addresses.
func TestIdle(t *testing.T) {
	code, res, log := benchRun(t, small("-target", "self-memory", "-scenario", "idle", "-compare", "bare", "-gc"), 0, 0)
	if code != 0 || len(res) != 2 {
		t.Fatalf("exit %d, %d results; log:\n%s", code, len(res), log)
	}
	checkIdle(t, res[0], "bare", false)
	checkIdle(t, res[1], "self-memory", true)
	if res[0].Idle.VsBare != nil || res[1].Idle.VsBare == nil || res[1].Idle.VsBare.RSSPerConn == 0 {
		t.Errorf("ratios: bare's %+v, self-memory's %+v", res[0].Idle.VsBare, res[1].Idle.VsBare)
	}
	if !res[0].Idle.GC || !res[1].Idle.GC {
		t.Errorf("-gc: bare's %v, self-memory's %v", res[0].Idle.GC, res[1].Idle.GC)
	}
	logSays(t, log, "50 connections subscribed", "per connection", "-gc", "vs bare", "verified")

	srv := redistest.Start(t, redistest.Options{})
	code, res, log = benchRun(t, small("-target", "self-redis="+srv.URL(), "-scenario", "idle", "-publish", "ws", "-local-addrs", "3"), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("exit %d, %d results; log:\n%s", code, len(res), log)
	}
	checkIdle(t, res[0], "self-redis", true)
	if res[0].Idle.GC {
		t.Errorf("memory read after a GC without -gc")
	}
}

// checkStorm checks a storm of 50 subscribers on 5 channels, each
// missing 10 messages.
func checkStorm(t *testing.T, r Result, target string) {
	t.Helper()
	s := r.Storm
	if r.Target != target || r.Scenario != "storm" || r.Connections < 50 || s == nil || s.Messages != 10 || s.Skipped != "" {
		t.Fatalf("%s: %+v, storm %+v", target, r, s)
	}
	// The first message, then the 10 missed, to each subscriber.
	if !r.Verify.OK || r.Verify.NotResumed != 0 || r.Published != 5*11 || r.Expected != 50*11 || r.Delivered != r.Expected {
		t.Errorf("%s: published %d, expected %d, delivered %d, verdict %+v", target, r.Published, r.Expected, r.Delivered, r.Verify)
	}
	if !s.CaughtUp || s.BaselineS <= 0 || s.CatchUpS == nil || *s.CatchUpS <= 0 || s.Ratio == nil || *s.Ratio <= 0 {
		t.Errorf("%s: caught up %v, baseline %v, catch-up %v, ratio %v", target, s.CaughtUp, s.BaselineS, s.CatchUpS, s.Ratio)
	}
	if s.RSSIdleMiB == nil || s.RSSPeakMiB == nil || *s.RSSPeakMiB < *s.RSSIdleMiB || s.RSSAfterMiB == nil || s.AfterVsIdle == nil ||
		s.HeapIdleMiB == nil || s.HeapAfterMiB == nil {
		t.Errorf("%s: RSS idle %v, peak %v, after %v (%v×), heap %v, %v", target, s.RSSIdleMiB, s.RSSPeakMiB, s.RSSAfterMiB, s.AfterVsIdle, s.HeapIdleMiB, s.HeapAfterMiB)
	}
}

// TestStorm runs the reconnect storm on both backlogs; the bare
// broadcaster, which cannot resume, gives only its baseline.
func TestStorm(t *testing.T) {
	code, res, log := benchRun(t, small("-target", "self-memory", "-scenario", "storm", "-messages", "10", "-compare", "bare"), 0, 0)
	if code != 0 || len(res) != 2 {
		t.Fatalf("exit %d, %d results; log:\n%s", code, len(res), log)
	}
	if b := res[0].Storm; b == nil || b.Skipped == "" || b.BaselineS <= 0 || b.CatchUpS != nil || !res[0].Verify.OK || res[0].Delivered != 50 {
		t.Errorf("bare: %+v, storm %+v", res[0], b)
	}
	checkStorm(t, res[1], "self-memory")
	if res[1].Storm.BaselineVsBare == nil {
		t.Errorf("no baseline ratio to bare")
	}
	logSays(t, log, "no backlog", "dropped", "catch-up", "after/idle", "verified")

	srv := redistest.Start(t, redistest.Options{})
	code, res, log = benchRun(t, small("-target", "self-redis="+srv.URL(), "-scenario", "storm", "-messages", "10", "-publish", "fcall"), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("exit %d, %d results; log:\n%s", code, len(res), log)
	}
	checkStorm(t, res[0], "self-redis")
}

// TestConnsVerificationFails shows the idle and storm verifications
// catching a loss and a repeat (the bare broadcaster's test faults), and
// a resume the backlog could not honour (a max_len below the messages
// missed, which the command line refuses).
func TestConnsVerificationFails(t *testing.T) {
	code, res, log := benchRun(t, small("-target", "bare", "-scenario", "idle", "-drain", "3s"), 7, 0)
	if code != 1 || len(res) != 1 || res[0].Verify.OK || res[0].Verify.Lost == 0 || !strings.Contains(log, "FAILED") {
		t.Fatalf("losing bare, idle: exit %d, results %+v; want exit 1 with losses; log:\n%s", code, res, log)
	}
	code, res, log = benchRun(t, small("-target", "bare", "-scenario", "storm", "-drain", "3s"), 0, 7)
	if code != 1 || len(res) != 1 || res[0].Verify.OK || res[0].Verify.Duplicates == 0 {
		t.Fatalf("repeating bare, storm: exit %d, results %+v; want exit 1 with duplicates; log:\n%s", code, res, log)
	}

	o, err := parseArgs(small("-target", "self-memory", "-scenario", "storm", "-messages", "10", "-drain", "5s"), new(strings.Builder))
	if err != nil {
		t.Fatal(err)
	}
	o.spec.maxLen = 4
	w := new(strings.Builder)
	results, err := execute(t.Context(), o, w)
	if err != nil || len(results) != 1 {
		t.Fatalf("%d results, %v; log:\n%s", len(results), err, w)
	}
	v := results[0].Verify
	if v.OK || v.NotResumed != 50 || v.Lost == 0 {
		t.Fatalf("storm past the backlog: verdict %+v; want every resume refused and losses; log:\n%s", v, w)
	}
}

// TestConnsUsage checks the idle and storm command lines.
func TestConnsUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the usage error; "" for none
	}{
		{[]string{"-target", "bare", "-scenario", "idle"}, ""},
		{[]string{"-target", "bare", "-scenario", "idle", "-connections", "20001"}, "over -max-conns 20000"},
		{[]string{"-target", "bare", "-scenario", "idle", "-connections", "0"}, "-connections must be at least 1"},
		{[]string{"-target", "bare", "-scenario", "storm", "-subscribers", "3"}, "not -subscribers"},
		{[]string{"-target", "bare", "-scenario", "storm", "-messages", "1000"}, "-max-len 1000 must be above -messages 1000"},
		{[]string{"-target", "bare", "-scenario", "storm", "-messages", "1000", "-max-len", "1001"}, ""},
		{[]string{"-target", "bare", "-scenario", "storm", "-local-addrs", "255"}, "want 1 to 254"},
		{[]string{"-target", "bare", "-scenario", "storm", "-settle", "-1s"}, "-settle not negative"},
	} {
		t.Run(strings.Join(tc.args[2:], " "), func(t *testing.T) {
			o, err := parseArgs(tc.args, new(strings.Builder))
			checkUsage(t, err, tc.want)
			switch {
			case tc.want == "" && (o.spec.conns != 10000 || o.spec.channels != 100 || o.spec.subscriptions() != 10000):
				t.Fatalf("defaults: %d connections on %d channels", o.spec.conns, o.spec.channels)
			}
		})
	}
}

// checkUsage fails t unless err is a usage error naming want, or, with
// want "", no error.
func checkUsage(t *testing.T, err error, want string) {
	t.Helper()
	var ue *usageError
	switch {
	case want == "" && err != nil:
		t.Fatalf("error %v, want none", err)
	case want != "" && (!errors.As(err, &ue) || !strings.Contains(err.Error(), want)):
		t.Fatalf("error %v, want a usage error with %q", err, want)
	}
}

// TestFileLimit checks that a run needing more files than the hard limit
// allows stops at once, saying what to raise.
func TestFileLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max > 1<<40 {
		t.Skipf("the hard limit is %d: no run can exceed it", lim.Max)
	}
	err := raiseFileLimit(int(lim.Max))
	if err == nil || !strings.Contains(err.Error(), "hard limit") || !strings.Contains(err.Error(), "ulimit -Hn") {
		t.Fatalf("raiseFileLimit(%d) = %v, want a hard-limit error", lim.Max, err)
	}
}

// logSays checks that the tool's human output holds every one of wants.
func logSays(t *testing.T, log string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(log, want) {
			t.Errorf("no %q in the log:\n%s", want, log)
		}
	}
}
