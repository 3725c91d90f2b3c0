package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/internal/syncbuf"
)

// TestMain lets the test binary serve as the tool's server processes,
// which the tool starts by running its own executable.
func TestMain(m *testing.M) {
	if kind := os.Getenv(serveVar); kind != "" {
		os.Exit(serveMain(kind))
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))) // as main does
	os.Exit(m.Run())
}

// bench runs the tool with args (and the test faults of the bare
// broadcaster) and returns its exit code and JSON lines.
func benchRun(t *testing.T, args []string, loseEvery, repeatEvery int) (int, []Result, string) {
	t.Helper()
	return benchRunWith(t, args, func(o *options) { o.loseEvery, o.repeatEvery = loseEvery, repeatEvery })
}

// benchRunWith is benchRun with the parsed options changed by tweak (to
// inject test faults).
func benchRunWith(t *testing.T, args []string, tweak func(*options)) (int, []Result, string) {
	t.Helper()
	var stdout strings.Builder
	stderr := new(syncbuf.Buffer)
	o, err := parseArgs(args, stderr)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	tweak(o)
	results, err := execute(t.Context(), o, stderr)
	code := 0
	if err != nil {
		t.Logf("error: %v", err)
		code = 1
	}
	for _, r := range results {
		json.NewEncoder(&stdout).Encode(r)
		if !r.Verify.OK {
			code = 1
		}
	}
	var out []Result
	sc := bufio.NewScanner(strings.NewReader(stdout.String()))
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("JSON line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return code, out, stderr.String()
}

// tiny is a scenario small enough for a test under -race.
var tiny = []string{"-duration", "1s", "-drain", "5s", "-publishers", "2", "-rate", "300", "-dialers", "8"}

func args(extra ...string) []string { return append(append([]string{}, tiny...), extra...) }

// checkResult checks the fields every verified run must have.
func checkResult(t *testing.T, r Result, target string, channels, subs int, redis bool) {
	t.Helper()
	if r.Target != target || r.Channels != channels || r.SubscribersPerChannel != subs || r.Connections < channels*subs {
		t.Errorf("%s: target %q, %d channels × %d subscribers, %d connections", target, r.Target, r.Channels, r.SubscribersPerChannel, r.Connections)
	}
	if !r.Verify.OK || r.Published == 0 || r.Expected != r.Published*uint64(subs) || r.Delivered != r.Expected {
		t.Errorf("%s: published %d, expected %d, delivered %d, verdict %+v", target, r.Published, r.Expected, r.Delivered, r.Verify)
	}
	if r.DeliveredPerS <= 0 || r.LatencyMS.P50 <= 0 || r.LatencyMS.P50 > r.LatencyMS.P99 || r.LatencyMS.P99 > r.LatencyMS.Max {
		t.Errorf("%s: delivered %v/s, latency %+v", target, r.DeliveredPerS, r.LatencyMS)
	}
	if r.GatewayCPUS == nil || *r.GatewayCPUS <= 0 || r.GatewayRSSMiB == nil || *r.GatewayRSSMiB <= 1 || r.ServerUSPerDelivered == nil {
		t.Errorf("%s: gateway CPU %v, RSS %v, server CPU per delivered %v: not measured", target, r.GatewayCPUS, r.GatewayRSSMiB, r.ServerUSPerDelivered)
	}
	if r.LoadCPUS <= 0 {
		t.Errorf("%s: load tool CPU %v", target, r.LoadCPUS)
	}
	if redis != (r.RedisCPUS != nil) || redis && (r.RedisClientsMax == nil || *r.RedisClientsMax < 1) {
		t.Errorf("%s: Redis CPU %v, clients %v; want them measured: %v", target, r.RedisCPUS, r.RedisClientsMax, redis)
	}
	if redis && (r.RedisNodes == nil || *r.RedisNodes < 1 || r.RedisClientsMaxPerNode == nil || *r.RedisClientsMaxPerNode > *r.RedisClientsMax ||
		*r.RedisNodes == 1 && *r.RedisClientsMaxPerNode != *r.RedisClientsMax) {
		t.Errorf("%s: Redis nodes %v, clients at most %v, on one node %v", target, r.RedisNodes, r.RedisClientsMax, r.RedisClientsMaxPerNode)
	}
}

// TestBare runs both scenarios against the bare broadcaster, publishing
// through the HTTP API and the WebSocket.
func TestBare(t *testing.T) {
	code, res, log := benchRun(t, args("-target", "bare", "-scenario", "fanout", "-subscribers", "5"), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("exit %d, %d results; log:\n%s", code, len(res), log)
	}
	checkResult(t, res[0], "bare", 1, 5, false)
	if !strings.Contains(log, "delivered") || !strings.Contains(log, "verified") {
		t.Errorf("no progress or summary on stderr:\n%s", log)
	}
	prefix := filepath.Join(t.TempDir(), "prof")
	code, res, log = benchRun(t, args("-target", "bare", "-scenario", "spread", "-channels", "6", "-publish", "ws", "-cpuprofile", prefix), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("exit %d; log:\n%s", code, log)
	}
	checkResult(t, res[0], "bare", 6, 1, false)
	// A CPU profile is gzipped protocol buffers.
	if b, err := os.ReadFile(prefix + "-bare.pprof"); err != nil || len(b) < 100 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("-cpuprofile: %d bytes, %v; want a gzipped profile", len(b), err)
	}
}

// TestVerificationFails runs the bare broadcaster losing, then repeating,
// a delivery now and then: the run must say so and exit 1.
func TestVerificationFails(t *testing.T) {
	code, res, log := benchRun(t, args("-target", "bare", "-scenario", "spread", "-channels", "3", "-drain", "3s"), 50, 0)
	if code != 1 || len(res) != 1 || res[0].Verify.OK || res[0].Verify.Lost == 0 || !strings.Contains(log, "FAILED") {
		t.Fatalf("losing bare: exit %d, results %+v; want exit 1 with losses; log:\n%s", code, res, log)
	}
	code, res, log = benchRun(t, args("-target", "bare", "-scenario", "fanout", "-subscribers", "3"), 0, 50)
	if code != 1 || len(res) != 1 || res[0].Verify.OK || res[0].Verify.Duplicates == 0 {
		t.Fatalf("repeating bare: exit %d, results %+v; want exit 1 with duplicates; log:\n%s", code, res, log)
	}
}

// TestSelfMemoryCompare runs a gateway on the in-memory backlog against
// the bare broadcaster in one invocation.
func TestSelfMemoryCompare(t *testing.T) {
	code, res, log := benchRun(t, args("-target", "self-memory", "-scenario", "spread", "-channels", "4", "-compare", "bare"), 0, 0)
	if code != 0 || len(res) != 2 {
		t.Fatalf("exit %d, %d results; log:\n%s", code, len(res), log)
	}
	checkResult(t, res[0], "bare", 4, 1, false)
	checkResult(t, res[1], "self-memory", 4, 1, false)
	v := res[1].VsBare
	if res[0].VsBare != nil || v == nil || v.DeliveredPerS <= 0 || v.CPUPerDelivered == nil || *v.CPUPerDelivered <= 0 || v.GatewayCPUPerDelivered == nil {
		t.Fatalf("ratios: bare's %+v, self-memory's %+v", res[0].VsBare, v)
	}
	if !strings.Contains(log, "vs bare") {
		t.Errorf("no ratios in the summary:\n%s", log)
	}
}

// TestSelfRedis runs a gateway on a Redis of the test's, publishing
// straight into Redis with FCALL tslm_publish, and checks that the run's
// channels are deleted afterwards (that Redis outlives the run).
func TestSelfRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	code, res, log := benchRun(t, args("-target", "self-redis="+srv.URL(), "-scenario", "spread", "-channels", "4", "-publish", "fcall"), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("exit %d; log:\n%s", code, log)
	}
	checkResult(t, res[0], "self-redis", 4, 1, true)
	keys, err := srv.Client().Keys(context.Background(), "tslm:meta:*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("channels left in Redis: %v %v", keys, err)
	}
}

// TestStartRedis runs the one-command form documented in
// docs/benchmarks.md, tiny: a gateway on a redis-server the tool starts.
func TestStartRedis(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" || !testing.Short() {
			t.Fatal("redis-server is not on PATH; install it, or run go test -short to skip this test (not under CI=true)")
		}
		t.Skip("redis-server is not on PATH (-short)")
	}
	code, res, log := benchRun(t, args("-target", "self-redis", "-start-redis", "-scenario", "fanout", "-subscribers", "4", "-publish", "ws"), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("exit %d; log:\n%s", code, log)
	}
	checkResult(t, res[0], "self-redis", 1, 4, true)
	if !strings.Contains(log, "started redis-server at redis://127.0.0.1:") {
		t.Errorf("the log does not say where Redis runs:\n%s", log)
	}
}

// TestURLTarget loads a gateway the tool did not start, named by its
// URLs and process, as users load a deployment; the run's channels are
// deleted afterwards.
func TestURLTarget(t *testing.T) {
	gw, err := startChild("gateway", append(gatewayEnv(100, false), "TSLM_REDIS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.stop)
	api := "http://" + gw.addrs.Internal
	code, res, log := benchRun(t, args("-target", "ws://"+gw.addrs.Public+"/v1/ws", "-api", api,
		"-gateway-pid", strconv.Itoa(gw.pid()), "-scenario", "spread", "-channels", "3", "-publish", "ws"), 0, 0)
	if code != 0 || len(res) != 1 {
		t.Fatalf("exit %d; log:\n%s", code, log)
	}
	checkResult(t, res[0], "ws://"+gw.addrs.Public+"/v1/ws", 3, 1, false)
	resp, err := http.Get(api + "/v1/channels")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Channels []json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Channels) != 0 {
		t.Fatalf("channels left on the gateway: %d (%v)", len(list.Channels), err)
	}
}

// TestCount runs two rounds of bare and a gateway: each gateway run is
// compared with the bare run of its own round, and stderr ends with the
// medians over the rounds.
func TestCount(t *testing.T) {
	code, res, log := benchRun(t, args("-target", "self-memory", "-scenario", "spread", "-channels", "3", "-compare", "bare", "-count", "2"), 0, 0)
	if code != 0 || len(res) != 4 {
		t.Fatalf("exit %d, %d results; log:\n%s", code, len(res), log)
	}
	for i, r := range res {
		want := []string{"bare", "self-memory"}[i%2]
		checkResult(t, r, want, 3, 1, false)
		if (want == "bare") != (r.VsBare == nil) {
			t.Errorf("run %d (%s): ratios %+v", i, r.Target, r.VsBare)
		}
	}
	// Each round's ratio is to its own bare run. At a fixed rate delivered/s
	// is alike in every run; p99 is not.
	for i := 1; i < 4; i += 2 {
		want := round3(res[i].LatencyMS.P99 / res[i-1].LatencyMS.P99)
		if got := res[i].VsBare.P99; math.Abs(got-want) > 0.002 {
			t.Errorf("round %d: p99 ratio %v, want %v (to the bare run before it)", i/2+1, got, want)
		}
	}
	summary := log[strings.LastIndex(log, "== bare over"):]
	for _, want := range []string{"== bare over 2 runs", "== self-memory over 2 runs", "vs bare: delivered/s", "vs bare: CPU per delivered"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	if _, err := parseArgs([]string{"-target", "bare", "-count", "0"}, io.Discard); err == nil {
		t.Error("-count 0 accepted")
	}
}
