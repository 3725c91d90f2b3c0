package gateway

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetricsExposeRequests holds /metrics to exposing every request
// metric that operators' dashboards name.
func TestMetricsExposeRequests(t *testing.T) {
	g, err := Start(t.Context(), Config{PublicAddrs: []string{"127.0.0.1:0"}, InternalAddrs: []string{"127.0.0.1:0"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	}()
	resp, err := http.Get("http://" + g.InternalAddrs()[0].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"\ntslm_sessions 0\n",
		"\ntslm_requests_pending 0\n",
		"\ntslm_replies_total 0\n",
		"\ntslm_refusals_total 0\n",
		"\ntslm_request_timeouts_total 0\n",
		"\ntslm_replies_dropped_total 0\n",
		"\ntslm_servings 0\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
}
