package jsclient_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/redistest"
)

// The browser tests run the demo page, and so the client module, in a real
// headless Chromium (Debian's chromium, driven by playwright-core through
// test/browser.mjs) against a real gateway on Redis. They skip when the
// browser or node_modules are missing, except under CI=true, where they
// fail: .ci/run installs both.

func TestBrowserWebSocketEveryMessageOnceAcrossARestart(t *testing.T) {
	st := streamAcrossRestart(t, false)
	if len(st.Transports) != 0 {
		t.Errorf("the client switched transports %q; the WebSocket works", st.Transports)
	}
}

func TestBrowserFallsBackToSSEWhenWebSocketIsBlocked(t *testing.T) {
	st := streamAcrossRestart(t, true)
	if len(st.Transports) != 1 || st.Transports[0] != "sse" {
		t.Errorf("transports %q, want one switch to sse", st.Transports)
	}
}

// pageState is the demo page's window.tslmDemo.
type pageState struct {
	Messages []struct {
		ID   string `json:"id"`
		Data struct {
			N int `json:"n"`
		} `json:"data"`
	} `json:"messages"`
	Events     []string `json:"events"`
	Transports []string `json:"transports"`
	Errors     []string `json:"errors"`
}

// streamAcrossRestart opens the demo page on a channel with a backlog,
// publishes live, restarts the gateway on the same addresses while
// messages are in flight, publishes more, and checks that the page showed
// every message exactly once, in order.
func streamAcrossRestart(t *testing.T, blockWebSocket bool) pageState {
	chromium, node := browserPrerequisites(t)
	redis := redistest.Start(t, redistest.Options{})
	g := startGateway(t, gateway.Config{RedisURL: redis.URL()})
	pub, internal := g.PublicAddrs()[0].String(), g.InternalAddrs()[0].String()
	api := "http://" + internal + "/v1/channels/browser"
	call(t, "PUT", api, `{}`)
	if blockWebSocket && !hasSSE(t, pub, "browser") {
		t.Skip("this gateway has no SSE transport (GET /v1/sse is 404): the fallback cannot be tested until it lands")
	}
	b := startBrowser(t, chromium, node)

	n := 0
	publish := func(upTo int) {
		for ; n < upTo; n++ {
			call(t, "POST", api+"/messages", fmt.Sprintf(`{"n":%d}`, n+1))
		}
	}
	publish(10) // the backlog the page replays
	b.do(t, map[string]any{"cmd": "open", "url": "http://" + pub + "/?channel=browser&since=0-0", "blockWebSocket": blockWebSocket})
	b.wait(t, 10)
	publish(20) // live
	b.wait(t, 20)

	publish(25) // in flight as the gateway goes
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := g.Shutdown(ctx); err != nil {
		t.Logf("shutdown: %v", err)
	}
	cancel()
	g = startGateway(t, gateway.Config{RedisURL: redis.URL(), PublicAddrs: []string{pub}, InternalAddrs: []string{internal}})
	publish(40)
	st := b.wait(t, 40)
	// One more after everything: a duplicate of anything before it would
	// have to arrive before it, and would show in the count.
	publish(41)
	st = b.wait(t, 41)

	if len(st.Messages) != 41 {
		t.Errorf("the page showed %d messages, want 41", len(st.Messages))
	}
	for i, m := range st.Messages {
		if m.Data.N != i+1 {
			t.Fatalf("message %d is n=%d (id %s), want n=%d: lost, repeated or out of order\nevents: %q", i, m.Data.N, m.ID, i+1, st.Events)
		}
	}
	reconnected := false
	for _, e := range st.Events {
		if strings.HasPrefix(e, "connected over") && strings.Contains(e, "resuming browser after") {
			reconnected = true
		}
	}
	if !reconnected {
		t.Errorf("the page never showed a resume after reconnecting: events %q", st.Events)
	}
	if len(st.Errors) != 0 {
		t.Errorf("the page reported errors %q", st.Errors)
	}
	return st
}

// startGateway starts a gateway serving the demo page, on loopback ports
// chosen by the kernel unless cfg names addresses.
func startGateway(t *testing.T, cfg gateway.Config) *gateway.Gateway {
	t.Helper()
	cfg.Demo = true
	if cfg.PublicAddrs == nil {
		cfg.PublicAddrs = []string{"127.0.0.1:0"}
	}
	if cfg.InternalAddrs == nil {
		cfg.InternalAddrs = []string{"127.0.0.1:0"}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	var g *gateway.Gateway
	var err error
	// The old gateway's port may linger for a moment after it closed.
	for range 50 {
		if g, err = gateway.Start(t.Context(), cfg, logger); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	return g
}

// call makes an internal API request and fails the test unless it is 2xx.
func call(t *testing.T, method, url, body string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
}

// hasSSE tells whether the gateway serves /v1/sse: a stream answers 200
// with its headers at once.
func hasSSE(t *testing.T, pub, channel string) bool {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+pub+"/v1/sse?channel="+channel, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("probing /v1/sse: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode != http.StatusNotFound
}

// browser is test/browser.mjs driving one headless Chromium.
type browser struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	logMu sync.Mutex
	log   *testing.T // the test whose page errors are logged, or nil
}

func (b *browser) logTo(t *testing.T) {
	b.logMu.Lock()
	b.log = t
	b.logMu.Unlock()
}

// browserPrerequisites finds Chromium and node, or skips (fails under
// CI=true) when they or the npm packages are missing.
func browserPrerequisites(t *testing.T) (chromium, node string) {
	t.Helper()
	missing := func(what string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s; CI must run the browser tests (.ci/run installs chromium and runs npm ci)", what)
		}
		t.Skipf("%s: browser tests skipped", what)
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		for _, name := range []string{"chromium", "chromium-browser"} {
			if p, err := exec.LookPath(name); err == nil {
				chromium = p
				break
			}
		}
	}
	if chromium == "" {
		missing("no chromium on PATH (apt-get install chromium, or set CHROMIUM)")
	}
	node, err := exec.LookPath("node")
	if err != nil || !nodeAtLeast20(node) {
		missing("no node 20 or later on PATH")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "playwright-core")); err != nil {
		missing("clients/js/node_modules/playwright-core is missing (npm ci in clients/js)")
	}
	return chromium, node
}

// nodeAtLeast20: playwright-core needs node 20 or later.
func nodeAtLeast20(node string) bool {
	out, err := exec.Command(node, "-p", "Number(process.versions.node.split('.')[0]) >= 20").Output()
	return err == nil && strings.TrimSpace(string(out)) == "true"
}

// sharedBrowser is the driver the tests of this package take turns on:
// starting Chromium costs more than most tests. Each test opens its page in
// a fresh browser context; a test that fails stops the driver, so that an
// answer it left pending cannot reach the next test.
var sharedBrowser struct {
	sync.Mutex
	b *browser
}

func TestMain(m *testing.M) {
	code := m.Run()
	if b := sharedBrowser.b; b != nil {
		b.stop()
	}
	os.Exit(code)
}

// startBrowser returns the shared driver, starting it if need be.
func startBrowser(t *testing.T, chromium, node string) *browser {
	t.Helper()
	sharedBrowser.Lock()
	t.Cleanup(func() {
		if b := sharedBrowser.b; b != nil {
			b.logTo(nil) // t.Log after the test has ended panics
		}
		if t.Failed() && sharedBrowser.b != nil {
			sharedBrowser.b.stop()
			sharedBrowser.b = nil
		}
		sharedBrowser.Unlock()
	})
	if b := sharedBrowser.b; b != nil {
		b.logTo(t)
		return b
	}
	cmd := exec.Command(node, filepath.Join("test", "browser.mjs"))
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	b := &browser{cmd: cmd, lines: make(chan string)}
	b.logTo(t)
	cmd.Stderr = b
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.stdin = stdin
	go func() {
		defer close(b.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
	}()
	var hello struct {
		OK      bool   `json:"ok"`
		Version string `json:"version"`
	}
	sharedBrowser.b = b
	b.read(t, &hello)
	t.Logf("chromium %s", hello.Version)
	return b
}

// Write logs the driver's stderr (page errors) to the test using it.
func (b *browser) Write(p []byte) (int, error) {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	if b.log != nil {
		b.log.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// stop ends the driver and its browser: closing stdin ends it, else it is
// killed.
func (b *browser) stop() {
	b.stdin.Close()
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
}

func (b *browser) read(t *testing.T, v any) {
	t.Helper()
	select {
	case line, ok := <-b.lines:
		if !ok {
			t.Fatal("the browser driver exited (see its output above)")
		}
		if err := json.Unmarshal([]byte(line), v); err != nil {
			t.Fatalf("browser driver said %q: %v", line, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the browser driver did not answer within 30s")
	}
}

type answer struct {
	OK    bool            `json:"ok"`
	Error string          `json:"error"`
	State pageState       `json:"state"`
	Value json.RawMessage `json:"value"`
}

func (b *browser) do(t *testing.T, cmd map[string]any) answer {
	t.Helper()
	line, _ := json.Marshal(cmd)
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("browser driver: %v", err)
	}
	var a answer
	b.read(t, &a)
	if !a.OK {
		t.Fatalf("browser %s: %s\nmessages: %d, events: %q, errors: %q", cmd["cmd"], a.Error, len(a.State.Messages), a.State.Events, a.State.Errors)
	}
	return a
}

// wait returns the page's state once it showed at least n messages.
func (b *browser) wait(t *testing.T, n int) pageState {
	t.Helper()
	return b.do(t, map[string]any{"cmd": "wait", "count": n, "timeoutMs": 30000}).State
}
