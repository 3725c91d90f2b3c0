package integration

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestBinaryDrainSequence runs the stop sequence operators rely on behind a
// balancer (docs/deploy.md, "Draining"): on SIGTERM /readyz turns 503 at
// once while clients go on being served for TSLM_DRAIN_DELAY; only then
// are they told to reconnect elsewhere (1001), and the process exits 0.
func TestBinaryDrainSequence(t *testing.T) {
	const delay = 1500 * time.Millisecond
	p := startBinary(t, map[string]string{"TSLM_DRAIN_DELAY": delay.String(), "TSLM_SHUTDOWN_GRACE": "5s"})
	r := &replica{publicURL: "ws://" + p.addr(t, "public") + "/v1/ws", apiURL: "http://" + p.addr(t, "internal")}
	if code := httpStatus("GET", r.apiURL+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("readyz before the signal: %d, want 200", code)
	}
	r.create(t, "drain", nil)
	cl := dial(t, r.publicURL)
	cl.subscribe("drain", nil)

	signalled := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "readyz never turned 503 after SIGTERM", func() bool {
		return httpStatus("GET", r.apiURL+"/readyz", "") == http.StatusServiceUnavailable
	})
	// Still serving: a message reaches the subscriber, a new client gets
	// in. A balancer may send one before its health check catches up.
	id := r.publish(t, "drain", "during the delay")
	cl.expect(map[string]any{"type": "message", "id": id, "data": "during the delay"})
	late := dial(t, r.publicURL)
	late.subscribe("drain", nil)

	cl.expectClose(websocket.CloseGoingAway)
	late.expectClose(websocket.CloseGoingAway)
	if waited := time.Since(signalled); waited < delay {
		t.Errorf("clients were closed %v after SIGTERM, before the %v drain delay", waited, delay)
	}
	if err := p.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0; stderr:\n%s", err, p.output())
	}
	logged := false
	for _, l := range p.logLines() {
		if l["msg"] == "draining: waiting for load balancers to stop sending clients" && l["drain_delay"] == float64(delay) {
			logged = true
		}
	}
	if !logged {
		t.Errorf("the drain delay was not logged; stderr:\n%s", p.output())
	}
}

// TestBinarySecondSignalSkipsDrainDelay: an operator's second Ctrl-C (or an
// orchestrator's second SIGTERM) does not wait out a long drain delay.
func TestBinarySecondSignalSkipsDrainDelay(t *testing.T) {
	p := startBinary(t, map[string]string{"TSLM_DRAIN_DELAY": "10m"})
	r := &replica{publicURL: "ws://" + p.addr(t, "public") + "/v1/ws", apiURL: "http://" + p.addr(t, "internal")}
	cl := dial(t, r.publicURL)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "readyz never turned 503 after SIGTERM", func() bool {
		return httpStatus("GET", r.apiURL+"/readyz", "") == http.StatusServiceUnavailable
	})
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	cl.expectClose(websocket.CloseGoingAway)
	if err := p.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit after the second signal: %v, want status 0; stderr:\n%s", err, p.output())
	}
}
