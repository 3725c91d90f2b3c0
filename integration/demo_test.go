package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestDemoOnlyWhenAsked: TSLM_DEMO=true serves the page and the client on
// the public listener only; by default neither listener serves a page, /
// being the original TSLM's WebSocket endpoint, which answers a plain GET
// with 400. With the demo on, an upgrade on / still reaches that endpoint.
func TestDemoOnlyWhenAsked(t *testing.T) {
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	off := startReplica(t, nil)
	for p, want := range map[string]int{"/": http.StatusBadRequest, "/tslm.js": http.StatusNotFound, "/demo.js": http.StatusNotFound} {
		if code, body := get("http://" + off.PublicAddrs()[0].String() + p); code != want || strings.Contains(body, "TSLM live demo") {
			t.Errorf("default gateway: GET %s = %d %.60q, want %d", p, code, body, want)
		}
	}

	on := startReplica(t, map[string]string{"TSLM_DEMO": "true"})
	pub := "http://" + on.PublicAddrs()[0].String()
	if code, body := get(pub + "/"); code != http.StatusOK || !strings.Contains(body, "TSLM live demo") {
		t.Errorf("TSLM_DEMO=true: GET / = %d %.60q", code, body)
	}
	if code, body := get(pub + "/tslm.js"); code != http.StatusOK || !strings.Contains(body, "export function connect") {
		t.Errorf("TSLM_DEMO=true: GET /tslm.js = %d %.60q", code, body)
	}
	if code, body := get(on.apiURL + "/"); code != http.StatusBadRequest || strings.Contains(body, "TSLM live demo") {
		t.Errorf("TSLM_DEMO=true: the internal listener serves the page at / (%d)", code)
	}
	if code, _ := get(pub + "/nothing"); code != http.StatusNotFound {
		t.Errorf("TSLM_DEMO=true: GET /nothing = %d, want 404", code)
	}
	// Upgrades on / reach the original endpoint, page or not.
	for _, r := range []*replica{off, on} {
		lc := dialLegacy(t, "ws://"+r.PublicAddrs()[0].String()+"/", nil)
		lc.send(map[string]any{"Subscribe": "c"})
		lc.expectLegacyError("not_found")
	}
	// The page does not shadow the gateway's own routes.
	if code, _ := get(pub + "/healthz"); code != http.StatusOK {
		t.Errorf("TSLM_DEMO=true: GET /healthz = %d", code)
	}
}
