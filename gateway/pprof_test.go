package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestPprofOnInternalOnly: TSLM_PPROF serves the profiles on the internal
// listener and never on the public one; off, neither has them.
func TestPprofOnInternalOnly(t *testing.T) {
	get := func(t *testing.T, url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, on := range []bool{true, false} {
		g := startGateway(t, Config{Pprof: on}, nil)
		internal := "http://" + g.InternalAddrs()[0].String()
		public := "http://" + g.PublicAddrs()[0].String()
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
			status, body := get(t, internal+path)
			switch {
			case on && (status != http.StatusOK || body == ""):
				t.Errorf("pprof on: internal %s answered %d %q, want 200 and a profile", path, status, body)
			case !on && status == http.StatusOK:
				t.Errorf("pprof off: internal %s answered 200", path)
			}
			if status, body := get(t, public+path); status == http.StatusOK || strings.Contains(body, "goroutine") {
				t.Errorf("pprof %v: public %s answered %d %q, want no profile", on, path, status, body)
			}
		}
	}
}
