package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/envconfig"
	"github.com/tslm/tslm/internal/gobuild"
	"github.com/tslm/tslm/internal/syncbuf"
	"github.com/tslm/tslm/responder"
)

// tslmctl is built as users run it (without -race: the client package's
// tests check its concurrency, and a race build starts several times
// slower, for dozens of runs here).
var tslmctlBin = gobuild.New("github.com/tslm/tslm/cmd/tslmctl", nil)

func TestMain(m *testing.M) { gobuild.Main(m, tslmctlBin) }

func binary(t *testing.T) string { return tslmctlBin.Path(t) }

type gw struct {
	public, internal, api string
}

func startGateway(t *testing.T) gw {
	t.Helper()
	st, err := envconfig.Load(map[string]string{"TSLM_PUBLIC_ADDRS": "127.0.0.1:0", "TSLM_INTERNAL_ADDRS": "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.Start(t.Context(), st.Gateway, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	pub, in := g.PublicAddrs()[0].String(), g.InternalAddrs()[0].String()
	return gw{public: "ws://" + pub + "/v1/ws", internal: "ws://" + in + "/v1/ws", api: "http://" + in}
}

type result struct {
	code           int
	stdout, stderr string
}

// tslmctl runs the binary to its end (at most 30s) with stdin.
func tslmctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("tslmctl %v: %v", args, err)
	}
	return r
}

func (r result) want(t *testing.T, code int, stdout string) {
	t.Helper()
	if r.code != code || (stdout != "*" && r.stdout != stdout) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q", r.code, r.stdout, r.stderr, code, stdout)
	}
}

func TestHelp(t *testing.T) {
	r := tslmctl(t, "", "--help")
	r.want(t, 0, "*")
	for _, c := range commands() {
		if !strings.Contains(r.stdout, "tslmctl "+c.name+" ") {
			t.Errorf("--help does not list %s", c.name)
		}
		r := tslmctl(t, "", append(strings.Fields(c.name), "--help")...)
		r.want(t, 0, "*")
		if !strings.HasPrefix(r.stdout, "usage: tslmctl "+c.name+" ") || !strings.Contains(r.stdout, "flags:") {
			t.Errorf("%s --help: %q", c.name, r.stdout)
		}
	}
	for _, args := range [][]string{{}, {"nonsense"}, {"channel"}, {"publish"}, {"subscribe", "--since", "1-0", "--last", "2", "a"}, {"publish", "a", "not json"}, {"subscribe", "--bogus", "a"}} {
		if r := tslmctl(t, "", args...); r.code != 2 || r.stderr == "" {
			t.Errorf("tslmctl %v: exit %d, stderr %q; want 2 and a message", args, r.code, r.stderr)
		}
	}
}

func TestChannelsPublishSubscribe(t *testing.T) {
	g := startGateway(t)
	tslmctl(t, "", "channel", "create", "prices", "--max-len", "100", "--retention", "1h", "--api", g.api).
		want(t, 0, `{"channel":"prices","created":true}`+"\n")
	tslmctl(t, "", "channel", "create", "--api", g.api, "prices").
		want(t, 0, `{"channel":"prices","created":false}`+"\n")
	r := tslmctl(t, "", "channel", "info", "nope", "--api", g.api)
	if r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("info of a missing channel: %+v", r)
	}

	r = tslmctl(t, "", "publish", "prices", `{"bid":1}`, "--url", g.internal)
	r.want(t, 0, "*")
	var first struct{ Channel, ID string }
	if err := json.Unmarshal([]byte(r.stdout), &first); err != nil || first.Channel != "prices" || first.ID == "" {
		t.Fatalf("publish printed %q", r.stdout)
	}
	r = tslmctl(t, "", "publish", "prices", `{"bid":1}`, "--url", g.public)
	if r.code != 1 || !strings.Contains(r.stderr, "forbidden") {
		t.Fatalf("publish on the public listener: %+v", r)
	}
	r = tslmctl(t, "{\"bid\":2}\n\n[3]\n\"four\"\n", "publish", "--url", g.internal, "prices")
	r.want(t, 0, "*")
	if n := strings.Count(r.stdout, "\n"); n != 3 {
		t.Fatalf("publish of 3 lines printed %q", r.stdout)
	}
	r = tslmctl(t, "5\nnot json\n", "publish", "--url", g.internal, "prices")
	if r.code != 1 || !strings.Contains(r.stderr, "line 2 is not JSON") {
		t.Fatalf("a bad line: %+v", r)
	}

	r = tslmctl(t, "", "subscribe", "prices", "--last", "10", "--count", "5", "--url", g.public)
	r.want(t, 0, "*")
	var data []string
	for line := range strings.Lines(r.stdout) {
		var m struct {
			Channel, ID string
			Data        json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil || m.Channel != "prices" || m.ID == "" {
			t.Fatalf("line %q", line)
		}
		data = append(data, string(m.Data))
	}
	if got := strings.Join(data, " "); got != `{"bid":1} {"bid":2} [3] "four" 5` {
		t.Fatalf("subscribe --last printed data %s", got)
	}
	r = tslmctl(t, "", "subscribe", "prices", "--since", first.ID, "--count", "1", "--url", g.public)
	if !strings.Contains(r.stdout, `"data":{"bid":2}`) {
		t.Fatalf("subscribe --since: %+v", r)
	}
	r = tslmctl(t, "", "channel", "info", "prices", "--api", g.api)
	r.want(t, 0, "*")
	if !strings.Contains(r.stdout, `"length":5`) || !strings.Contains(r.stdout, `"max_len":100`) {
		t.Fatalf("info: %q", r.stdout)
	}
	r = tslmctl(t, "", "subscribe", "missing", "--url", g.public)
	if r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("subscribe to a missing channel: %+v", r)
	}
	r = tslmctl(t, "", "subscribe", "prices", "--url", "ws://127.0.0.1:1/v1/ws")
	if r.code != 1 || !strings.Contains(r.stderr, "connecting to") {
		t.Fatalf("subscribe to nowhere: %+v", r)
	}
}

// TestSubscribeResumes drops tslmctl's connection while messages flow: it
// prints every message once, in order.
func TestSubscribeResumes(t *testing.T) {
	g := startGateway(t)
	tslmctl(t, "", "channel", "create", "ticks", "--api", g.api).want(t, 0, "*")
	p := startProxy(t, strings.TrimSuffix(strings.TrimPrefix(g.public, "ws://"), "/v1/ws"))
	const n = 60
	cmd := exec.Command(binary(t), "subscribe", "ticks", "--count", fmt.Sprint(n), "--url", p.url())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			cmd.Process.Signal(syscall.SIGQUIT)
			time.Sleep(time.Second)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("tslmctl's stderr:\n%s", stderr.String())
		}
	})
	waitFor(t, "tslmctl to connect", func() bool { return p.accepted() == 1 })
	lines := bufio.NewScanner(stdout)
	read := 0
	readUpTo := func(to int) {
		for ; read < to; read++ {
			if !lines.Scan() {
				t.Fatalf("after %d lines: %v", read, lines.Err())
			}
			var m struct{ Data json.RawMessage }
			json.Unmarshal(lines.Bytes(), &m)
			if string(m.Data) != fmt.Sprint(read) {
				t.Fatalf("line %d is %s: gap or duplicate", read, lines.Text())
			}
		}
	}
	// Three batches, the connection dropped in the middle of the first
	// two: tslmctl cannot have finished before a drop.
	for b := range 3 {
		var in strings.Builder
		for i := b * n / 3; i < (b+1)*n/3; i++ {
			fmt.Fprintln(&in, i)
		}
		tslmctl(t, in.String(), "publish", "ticks", "--url", g.internal).want(t, 0, "*")
		readUpTo(b*n/3 + 10)
		if b < 2 {
			before := p.accepted()
			p.drop()
			waitFor(t, "a reconnection", func() bool { return p.accepted() > before })
		}
	}
	readUpTo(n)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tslmctl subscribe: %v", err)
	}
	if !strings.Contains(stderr.String(), "reconnect") {
		t.Errorf("stderr says nothing of the reconnections: %s", stderr.String())
	}
}

func TestRequest(t *testing.T) {
	g := startGateway(t)
	tslmctl(t, "", "channel", "create", "echo", "--api", g.api).want(t, 0, "*")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- responder.ServeWebSocket(ctx, responder.WebSocketConfig{URL: g.internal},
			func(_ context.Context, r responder.Request) (json.RawMessage, error) {
				if string(r.Data) == `"no"` {
					return nil, &responder.Refusal{Code: "refused", Message: "as asked"}
				}
				return r.Data, nil
			}, "echo")
	}()
	t.Cleanup(func() { cancel(); <-done })
	// The responder serves once its serve is acknowledged; until then a
	// request times out.
	waitFor(t, "the responder", func() bool {
		return tslmctl(t, "", "request", "echo", "1", "--timeout", "500ms", "--url", g.internal).code == 0
	})
	tslmctl(t, "", "request", "echo", `{"hello":"world"}`, "--url", g.internal).want(t, 0, `{"hello":"world"}`+"\n")
	r := tslmctl(t, "", "request", "echo", `"no"`, "--url", g.internal)
	if r.code != 1 || !strings.Contains(r.stderr, "refused: as asked") {
		t.Fatalf("refused request: %+v", r)
	}
	r = tslmctl(t, "", "request", "missing", "--url", g.internal)
	if r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("request on a missing channel: %+v", r)
	}
}

// proxy forwards TCP connections and drops them on demand.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	n     int
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.n++
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				p.wg.Go(func() {
					io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				})
			}
		}
	})
	t.Cleanup(func() { ln.Close(); p.drop(); p.wg.Wait() })
	return p
}

func (p *proxy) url() string { return "ws://" + p.ln.Addr().String() + "/v1/ws" }

func (p *proxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// syncBuffer is a bytes.Buffer that a process writes while a test reads.
type syncBuffer = syncbuf.Buffer

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNotResumedOnStderr: a since the backlog no longer holds is reported
// on stderr, and the oldest messages held follow on stdout.
func TestNotResumedOnStderr(t *testing.T) {
	g := startGateway(t)
	tslmctl(t, "", "channel", "create", "small", "--max-len", "2", "--api", g.api).want(t, 0, "*")
	r := tslmctl(t, "1\n2\n3\n4\n", "publish", "small", "--url", g.internal)
	r.want(t, 0, "*")
	var first struct{ ID string }
	json.Unmarshal([]byte(strings.SplitN(r.stdout, "\n", 2)[0]), &first)
	r = tslmctl(t, "", "subscribe", "small", "--since", first.ID, "--count", "2", "--url", g.public)
	r.want(t, 0, "*")
	if !strings.Contains(r.stderr, `{"channel":"small","event":"not-resumed","head":`) || !strings.Contains(r.stderr, `"since":"`+first.ID+`"`) {
		t.Fatalf("stderr %q has no not-resumed line", r.stderr)
	}
	if !strings.Contains(r.stdout, `"data":3}`) || !strings.Contains(r.stdout, `"data":4}`) {
		t.Fatalf("stdout %q, want the messages 3 and 4", r.stdout)
	}
}
