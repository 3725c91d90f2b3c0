package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestStream feeds one subscriber's stream sequences of messages and
// checks what it finds wrong, as the verdict of a run would.
func TestStream(t *testing.T) {
	type msg struct {
		id       string
		pub      int
		seq      uint64
		accepted bool
	}
	for _, tc := range []struct {
		name    string
		msgs    []msg
		ackedTo []uint64 // per publisher
		gaps    uint64
		want    Verdict
	}{
		{"two publishers interleaved, all there", []msg{
			{"10-0", 0, 1, true}, {"10-1", 1, 1, true}, {"11-0", 0, 2, true}, {"12-0", 1, 2, true},
		}, []uint64{2, 2}, 0, Verdict{OK: true}},
		{"the last message missing", []msg{
			{"10-0", 0, 1, true}, {"10-1", 0, 2, true},
		}, []uint64{3}, 0, Verdict{Lost: 1}},
		{"one in the middle missing", []msg{
			{"10-0", 0, 1, true}, {"10-2", 0, 3, true},
		}, []uint64{3}, 0, Verdict{Lost: 1}},
		{"a publisher never heard of", nil, []uint64{0, 4}, 0, Verdict{Lost: 4}},
		{"a duplicate", []msg{
			{"10-0", 0, 1, true}, {"10-1", 0, 2, true}, {"10-1", 0, 2, false},
		}, []uint64{2}, 0, Verdict{Duplicates: 1, MisorderedIDs: 1}},
		{"two swapped: late and out of order", []msg{
			{"10-0", 0, 1, true}, {"10-2", 0, 3, true}, {"10-1", 0, 2, false},
		}, []uint64{3}, 0, Verdict{Lost: 1, Duplicates: 1, MisorderedIDs: 1}},
		{"IDs going back, sequences fine", []msg{
			{"11-0", 0, 1, true}, {"10-5", 1, 1, true},
		}, []uint64{1, 1}, 0, Verdict{MisorderedIDs: 1}},
		{"an unreadable ID", []msg{
			{"10-0", 0, 1, true}, {"ten", 0, 2, false},
		}, []uint64{1}, 0, Verdict{Errors: 1}},
		{"a publisher out of range", []msg{{"10-0", 7, 1, false}}, []uint64{0}, 0, Verdict{Errors: 1}},
		{"a gap frame", []msg{
			{"10-0", 0, 1, true}, {"10-5", 0, 6, true},
		}, []uint64{6}, 1, Verdict{Lost: 4, Gaps: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(len(tc.ackedTo))
			for i, m := range tc.msgs {
				if got := s.message(m.id, m.pub, m.seq); got != m.accepted {
					t.Errorf("message %d (%s, publisher %d, seq %d): accepted %v, want %v", i, m.id, m.pub, m.seq, got, m.accepted)
				}
			}
			s.gaps = tc.gaps
			var v Verdict
			v.add(s, tc.ackedTo, false)
			v.decide(false)
			if v.OK != tc.want.OK || v.Lost != tc.want.Lost || v.Duplicates != tc.want.Duplicates ||
				v.MisorderedIDs != tc.want.MisorderedIDs || v.Errors != tc.want.Errors || v.Gaps != tc.want.Gaps {
				t.Errorf("verdict %+v, want %+v", v, tc.want)
			}
		})
	}
}

// TestAllowGaps checks that -allow-gaps accepts a loss a gap frame
// announced, and nothing else.
func TestAllowGaps(t *testing.T) {
	s := newStream(1)
	s.message("10-0", 0, 1)
	s.gaps++
	s.message("10-5", 0, 6)
	var v Verdict
	v.add(s, []uint64{6}, true)
	v.decide(true)
	if !v.OK || v.Lost != 0 || v.LostAfterGap != 4 {
		t.Fatalf("with -allow-gaps: %+v, want OK with 4 lost after the gap", v)
	}
	s.message("10-5", 0, 6)
	v = Verdict{}
	v.add(s, []uint64{6}, true)
	v.decide(true)
	if v.OK || v.Duplicates != 1 {
		t.Fatalf("a duplicate with -allow-gaps: %+v, want a failure", v)
	}
	v = Verdict{PublishErrors: 1}
	if v.decide(false); v.OK {
		t.Fatal("a publish error passed")
	}
	v = Verdict{Disconnects: 1}
	if v.decide(false); v.OK {
		t.Fatal("a disconnect passed")
	}
}

// TestHistogram checks the quantiles against exact ones within the
// buckets' width.
func TestHistogram(t *testing.T) {
	var h histogram
	if h.quantile(0.5) != 0 {
		t.Fatal("an empty histogram's median is not 0")
	}
	var all []time.Duration
	for i := 1; i <= 10000; i++ {
		d := time.Duration(i) * 13 * time.Microsecond
		all = append(all, d)
		h.record(d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := all[int(q*float64(len(all)-1))]
		got := h.quantile(q)
		if diff := float64(got-exact) / float64(exact); diff < -0.02 || diff > 0.02 {
			t.Errorf("quantile %v: %v, exact %v (%.1f%% off)", q, got, exact, 100*diff)
		}
	}
	if got := time.Duration(h.max.Load()); got != all[len(all)-1] {
		t.Errorf("max %v, want %v", got, all[len(all)-1])
	}
	for v := uint64(0); v < 1<<20; v = v*5/4 + 1 {
		if b := bucketOf(v); lowest(b) > v || lowest(b+1) <= v {
			t.Fatalf("%d in bucket %d of [%d, %d)", v, b, lowest(b), lowest(b+1))
		}
	}
}

// TestPayload checks that a payload is JSON of the size asked for,
// carrying what the subscribers read.
func TestPayload(t *testing.T) {
	for _, size := range []int{0, 64, 1000} {
		b := payload(nil, 1732480000123456789, 3, 42, size)
		var f inFrame
		if err := json.Unmarshal([]byte(`{"data":`+string(b)+`}`), &f); err != nil {
			t.Fatalf("size %d: %s: %v", size, b, err)
		}
		if f.Data.T != 1732480000123456789 || f.Data.P != 3 || f.Data.S != 42 {
			t.Errorf("size %d: read %+v", size, f.Data)
		}
		if size >= 64 && len(b) != size {
			t.Errorf("size %d: %d bytes", size, len(b))
		}
	}
}

func TestParseInfo(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.0\r\n# Clients\r\nconnected_clients:13\r\n"
	s, err := parseInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	if s.cpu != 3750*time.Millisecond || s.clients != 12 {
		t.Fatalf("got %+v, want 3.75s and 12 clients (the probe's own left out)", s)
	}
	if _, err := parseInfo("# CPU\r\nused_cpu_sys:1\r\n"); err == nil {
		t.Fatal("INFO without its fields: no error")
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2", "C=3"}, []string{"B=20", "C", "D=4"})
	if want := []string{"A=1", "B=20", "D=4"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestUsage checks the command lines refused before anything starts.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-target is required"},
		{[]string{"-target", "nginx"}, "want bare, self-memory"},
		{[]string{"-target", "bare", "-scenario", "requests"}, "-scenario"},
		{[]string{"-target", "bare", "-publish", "xadd"}, "needs a Redis target"},
		{[]string{"-target", "self-memory", "-publish", "xadd"}, "needs a Redis target"},
		{[]string{"-target", "self-redis"}, "-start-redis"},
		{[]string{"-target", "bare", "-start-redis"}, "-start-redis is for"},
		{[]string{"-target", "bare", "-compare", "bare"}, "bare already"},
		{[]string{"-target", "self-memory", "-compare", "centrifugo"}, "only bare"},
		{[]string{"-target", "bare", "-scenario", "spread", "-channels", "30000"}, "over -max-conns 20000"},
		{[]string{"-target", "bare", "-subscribers", "11", "-max-conns", "10"}, "over -max-conns 10"},
		{[]string{"-target", "ws://gateway.example:8080/v1/ws"}, "not a loopback address"},
		{[]string{"-target", "ws://127.0.0.1:8080/v1/ws", "-api", "http://10.0.0.1:8081"}, "-api"},
		{[]string{"-target", "self-redis=redis://10.1.2.3:6379"}, "-redis"},
		{[]string{"-target", "bare", "-gateway-pid", "1"}, "for a URL target"},
		{[]string{"-target", "self-redis", "-start-redis-cluster", "2"}, "at least 3 masters"},
		{[]string{"-target", "self-redis", "-start-redis-cluster", "-1"}, "at least 3 masters"},
		{[]string{"-target", "self-redis", "-start-redis-cluster", "3", "-start-redis"}, "choose one"},
		{[]string{"-target", "self-memory", "-start-redis-cluster", "3"}, "-start-redis-cluster is for"},
		{[]string{"-target", "self-redis=redis://127.0.0.1:6379", "-start-redis-cluster", "3"}, "-start-redis-cluster is for"},
		{[]string{"-target", "self-redis", "-start-redis-cluster", "3", "-publish", "xadd"}, "not a Cluster"},
		{[]string{"-target", "self-redis=redis://127.0.0.1:7000,127.0.0.1:7001", "-publish", "xadd"}, "not a Cluster"},
		{[]string{"-target", "self-redis=redis://u:secret@127.0.0.1:7000?addr=10.1.2.3:7001"}, "seed 10.1.2.3:7001"},
		{[]string{"-target", "self-redis=redis://u:secret@10.1.2.3:7000,127.0.0.1:7001"}, "seed 10.1.2.3:7000"},
		{[]string{"-target", "bare", "-duration", "0s"}, "-duration"},
		{[]string{"-target", "bare", "extra"}, "unexpected argument"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr strings.Builder
			code := run(t.Context(), tc.args, &strings.Builder{}, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), tc.want)
			}
		})
	}
	// A password is never repeated in an error.
	var stderr strings.Builder
	run(t.Context(), []string{"-target", "self-redis=redis://u:secret@10.1.2.3:6379"}, &strings.Builder{}, &stderr)
	if strings.Contains(stderr.String(), "secret") {
		t.Errorf("the password is in %q", stderr.String())
	}
	o, err := parseArgs([]string{"-target", "ws://gateway.example:8080/v1/ws", "-api", "http://gateway.example:8081", "-allow-remote"}, &strings.Builder{})
	if err != nil || o.spec.channels != 1 || o.spec.subscribers != 1000 {
		t.Fatalf("-allow-remote fanout: %+v, %v; want accepted, 1 channel × 1000", o, err)
	}
}
