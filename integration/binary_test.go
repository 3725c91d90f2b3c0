package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/gobuild"
)

// tslm is the gateway binary, built with -race on first use; TestMain
// removes it once every process started from it was killed by its test's
// cleanup.
var tslm = gobuild.New("github.com/tslm/tslm/cmd/tslm", nil, "-race")

// echoResponder is examples/echo-responder, as users build it.
var echoResponder = gobuild.New("github.com/tslm/tslm/examples/echo-responder", nil)

func TestMain(m *testing.M) { gobuild.Main(m, tslm, echoResponder) }

func tslmBinary(t *testing.T) string { return tslm.Path(t) }

// process is the real gateway binary, with its JSON log lines collected.
type process struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []map[string]any
	stderr strings.Builder
	exited chan error
	gone   chan struct{} // closed once the process has exited
}

func startBinary(t *testing.T, env map[string]string) *process {
	t.Helper()
	cmd := exec.Command(tslmBinary(t))
	cmd.Env = append(os.Environ(), "TSLM_LOG_FORMAT=json", "TSLM_PUBLIC_ADDRS=127.0.0.1:0", "TSLM_INTERNAL_ADDRS=127.0.0.1:0")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exited: make(chan error, 1), gone: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				p.lines = append(p.lines, line)
			}
			p.mu.Unlock()
		}
		p.exited <- cmd.Wait()
		close(p.gone)
	}()
	t.Cleanup(func() {
		// Reaped before TestMain removes the binary.
		cmd.Process.Kill()
		select {
		case <-p.gone:
		case <-time.After(30 * time.Second):
			t.Errorf("pid %d still running 30s after SIGKILL", cmd.Process.Pid)
		}
	})
	return p
}

// addr waits for the "listening" log line of listener.
func (p *process) addr(t *testing.T, listener string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range p.logLines() {
			if l["msg"] == "listening" && l["listener"] == listener {
				return l["addr"].(string)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no listening line for %s; stderr:\n%s", listener, p.output())
	return ""
}

func (p *process) logLines() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.lines...)
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *process) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-p.exited:
		return err
	case <-time.After(within):
		t.Fatalf("process still running after %v; stderr:\n%s", within, p.output())
		return nil
	}
}

func TestBinaryServesAndDrainsOnSIGTERM(t *testing.T) {
	p := startBinary(t, map[string]string{"TSLM_SHUTDOWN_GRACE": "5s", "TSLM_SHUTDOWN_GARCE": "9s"})
	r := &replica{
		publicURL: "ws://" + p.addr(t, "public") + "/v1/ws",
		apiURL:    "http://" + p.addr(t, "internal"),
	}
	var memoryWarnings, typoWarnings int
	for _, l := range p.logLines() {
		if msg, _ := l["msg"].(string); l["level"] == "WARN" && strings.Contains(msg, "did you mean TSLM_SHUTDOWN_GRACE?") {
			typoWarnings++
		}
		if msg, _ := l["msg"].(string); strings.Contains(msg, "in-memory backlog") && strings.Contains(msg, "not durable") {
			memoryWarnings++
		}
	}
	if typoWarnings != 1 {
		t.Errorf("%d warnings of the misspelled TSLM_SHUTDOWN_GARCE, want 1; stderr:\n%s", typoWarnings, p.output())
	}
	if memoryWarnings != 1 {
		t.Errorf("start-up logged the in-memory warning %d times, want once:\n%s", memoryWarnings, p.output())
	}

	r.create(t, "bin", nil)
	cl := dial(t, r.publicURL)
	cl.subscribe("bin", nil)
	id := r.publish(t, "bin", "hello")
	cl.expect(map[string]any{"type": "message", "id": id, "data": "hello"})

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cl.expectClose(websocket.CloseGoingAway)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0; stderr:\n%s", err, p.output())
	}
}

func TestBinaryRefusesBadConfig(t *testing.T) {
	cases := map[string]string{
		"TSLM_SEND_QUEUE":   "many",
		"TSLM_PUBLIC_ALLOW": "subscribe,destroy",
		"TSLM_PUBLIC_ADDRS": "127.0.0.1:99999",
		"TSLM_REDIS_URL":    "",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			p := startBinary(t, map[string]string{name: value})
			err := p.wait(t, 30*time.Second)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("%s=%s: exit %v, want a failure", name, value, err)
			}
			if !strings.Contains(p.output(), name) {
				t.Errorf("%s=%s: stderr does not name the variable:\n%s", name, value, p.output())
			}
		})
	}
}
