package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestDemoOnlyWhenAsked: TSLM_DEMO=true serves the page and the client on
// the public listener only; by default neither listener serves a page.
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
	for _, p := range []string{"/", "/tslm.js"} {
		if code, _ := get("http://" + off.PublicAddrs()[0].String() + p); code != http.StatusNotFound {
			t.Errorf("default gateway: GET %s = %d, want 404", p, code)
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
	if code, _ := get(on.apiURL + "/"); code != http.StatusNotFound {
		t.Errorf("TSLM_DEMO=true: the internal listener serves / (%d)", code)
	}
	// The page does not shadow the gateway's own routes.
	if code, _ := get(pub + "/healthz"); code != http.StatusOK {
		t.Errorf("TSLM_DEMO=true: GET /healthz = %d", code)
	}
}
