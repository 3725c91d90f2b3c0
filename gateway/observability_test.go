package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/internal/redistest"
)

// TestObservability runs a gateway on a real Redis, drives every kind of
// traffic an operator graphs (publishes by WebSocket, by the HTTP API and
// by a direct XADD; live delivery, a replay, an event stream; a client's
// close, a slow consumer, a refused upgrade, an error; requests answered,
// refused and timed out), scrapes /metrics over HTTP as Prometheus would,
// and holds docs/observability.md and the Grafana dashboard to what it
// finds: every documented metric exported and moved, every metric a panel
// queries exported, every documented metric on a panel.
func TestObservability(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	var logs syncBuffer
	g := startGateway(t, Config{RedisURL: rs.URL(), SendQueueBytes: 64 << 10}, slog.New(slog.NewJSONHandler(&logs, nil)))
	internal := g.InternalAddrs()[0].String()
	public := g.PublicAddrs()[0].String()
	api := func(method, path, body string, want int) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+internal+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: HTTP %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
	}
	for _, ch := range []string{"obs", "queue", "slow"} {
		api(http.MethodPut, "/v1/channels/"+ch, `{"max_len":1000}`, http.StatusCreated)
	}

	// Live delivery on the public listener of a message from each path.
	sub := wsDial(t, "ws://"+public+"/v1/ws")
	wsRoundTrip(t, sub, `{"type":"subscribe","ref":"s","channel":"obs"}`, "ack")
	// Commands run in order: once this is answered the subscription is
	// live, so that its messages are timed as live ones.
	wsRoundTrip(t, sub, `{"type":"unsubscribe","ref":"u","channel":"other"}`, "ack")
	app := wsDial(t, "ws://"+internal+"/v1/ws")
	first := wsRoundTrip(t, app, `{"type":"publish","ref":"p","channel":"obs","data":{"via":"websocket"}}`, "ack")["id"].(string)
	api(http.MethodPost, "/v1/channels/obs/messages", `{"via":"api"}`, http.StatusCreated)
	if err := rs.Client().XAdd(t.Context(), &redis.XAddArgs{Stream: "tslm:ch:{obs}", Values: map[string]any{"data": `{"via":"xadd"}`}}).Err(); err != nil {
		t.Fatal(err)
	}
	for _, via := range []string{"websocket", "api", "xadd"} {
		if m := wsRead(t, sub); m["type"] != "message" || m["data"].(map[string]any)["via"] != via {
			t.Fatalf("subscriber got %v, want the message via %s", m, via)
		}
	}
	// A replay, over WebSocket and over an event stream.
	late := wsDial(t, "ws://"+internal+"/v1/ws")
	wsRoundTrip(t, late, `{"type":"subscribe","ref":"s","channel":"obs","since":"`+first+`"}`, "ack")
	for range 2 {
		wsRead(t, late)
	}
	stream, err := http.Get("http://" + public + "/v1/sse?channel=obs&last=obs:3")
	if err != nil {
		t.Fatal(err)
	}
	readEvents(t, stream.Body, 4) // subscribed and three messages
	stream.Body.Close()

	// An error, a refused upgrade and a client's own close.
	wsRoundTrip(t, app, `{"type":"nonsense","ref":"x"}`, "error")
	if c, resp, err := (&websocket.Dialer{Subprotocols: []string{"other"}}).Dial("ws://"+public+"/v1/ws", nil); err == nil {
		c.Close()
		t.Fatal("an upgrade offering no TSLM subprotocol was accepted")
	} else if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("upgrade offering no TSLM subprotocol: %v, want HTTP 400", err)
	}
	leaving := wsDial(t, "ws://"+internal+"/v1/ws")
	leaving.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))

	// Requests: one answered, one refused, one nobody serves in time.
	wsRoundTrip(t, app, `{"type":"serve","ref":"s","channel":"queue"}`, "ack")
	requester := wsDial(t, "ws://"+internal+"/v1/ws")
	for _, answer := range []string{`"data":{"ok":true}`, `"error":{"code":"no"}`} {
		ack := wsRoundTrip(t, requester, `{"type":"request","ref":"r","channel":"queue","data":1,"timeout_ms":10000}`, "ack")
		if served := wsRead(t, app); served["id"] != ack["id"] {
			t.Fatalf("app got %v, want request %v", served, ack["id"])
		}
		wsRoundTrip(t, app, `{"type":"reply","ref":"p","channel":"queue","id":"`+ack["id"].(string)+`",`+answer+`}`, "ack")
		if got := wsRead(t, requester); got["type"] != "reply" {
			t.Fatalf("requester got %v, want the reply", got)
		}
	}
	wsRoundTrip(t, app, `{"type":"unserve","ref":"u","channel":"queue"}`, "ack")
	wsRoundTrip(t, requester, `{"type":"request","ref":"t","channel":"queue","data":1,"timeout_ms":50}`, "ack")
	if got := wsRead(t, requester); got["code"] != "timeout" {
		t.Fatalf("requester got %v, want a timeout", got)
	}

	slowConsumer(t, g, api)

	families := scrape(t, internal)
	documented := documentedMetrics(t)

	t.Run("documented metrics are exported", func(t *testing.T) {
		for _, name := range documented {
			if families[name] == nil {
				t.Errorf("docs/observability.md documents %s; /metrics lacks it", name)
			}
		}
		for name := range families {
			if strings.HasPrefix(name, "tslm_") && !slices.Contains(documented, name) {
				t.Errorf("/metrics exports %s; docs/observability.md does not document it", name)
			}
		}
	})

	t.Run("counters and histograms move", func(t *testing.T) {
		// What this traffic does not cause, each for a reason: no loss,
		// no replay under pressure, no failure, no credentials.
		still := []string{"tslm_replay_overflows_total", "tslm_replay_refused_total", "tslm_gaps_total",
			"tslm_backlog_read_errors_total", "tslm_reader_full_reads_total", "tslm_replies_dropped_total",
			"tslm_auth_total", "tslm_redis_errors_total", "tslm_redis_pool_timeouts_total"}
		for _, name := range documented {
			f := families[name]
			if f == nil || slices.Contains(still, name) || f.GetType() == dto.MetricType_GAUGE {
				continue
			}
			if total(f) == 0 {
				t.Errorf("%s did not move", name)
			}
		}
		if got := value(families, `tslm_messages_published_total{path="websocket"}`); got != 1 {
			t.Errorf(`tslm_messages_published_total{path="websocket"} = %v, want 1`, got)
		}
		if got := value(families, `tslm_messages_published_total{path="api"}`); got < 2 {
			t.Errorf(`tslm_messages_published_total{path="api"} = %v, want 2 or more (obs, then slow)`, got)
		}
		// The XADD was read like the gateways' publishes: obs's three
		// messages, and the slow channel's.
		if got := value(families, "tslm_messages_read_total"); got < 3 {
			t.Errorf("tslm_messages_read_total = %v, want at least 3", got)
		}
		for _, sel := range []string{
			`tslm_connections_closed_total{by="client",code="1000",listener="internal",transport="ws"}`,
			`tslm_connections_closed_total{by="server",code="4000",listener="public",transport="ws"}`,
			`tslm_connections_closed_total{by="client",code="1006",listener="public",transport="sse"}`,
			`tslm_slow_consumer_closes_total{listener="public"}`,
			`tslm_upgrades_refused_total{listener="public",reason="subprotocol"}`,
			`tslm_errors_total{code="unknown_type",listener="internal"}`,
			`tslm_replies_total`, `tslm_refusals_total`, `tslm_request_timeouts_total`,
		} {
			if value(families, sel) < 1 {
				t.Errorf("%s did not move", sel)
			}
		}
		for _, cmd := range []string{"evalsha", "multi", "pipeline"} {
			if count(families, `tslm_redis_command_seconds{command="`+cmd+`"}`) == 0 {
				t.Errorf("no %s timed in tslm_redis_command_seconds", cmd)
			}
		}
		if count(families, `tslm_redis_command_seconds{command="xread"}`) != 0 {
			t.Error("blocking XREADs timed in tslm_redis_command_seconds")
		}
		// An operator alerts on Redis failures: none of what the gateway
		// expects (a stream not there yet, a script to load, a group to
		// create, go-redis's connection set-up) may count as one.
		for _, m := range matching(families, "tslm_redis_errors_total") {
			if m.GetCounter().GetValue() != 0 {
				t.Errorf("tslm_redis_errors_total%v = %v on a healthy Redis", m.GetLabel(), m.GetCounter().GetValue())
			}
		}
	})

	t.Run("access log", func(t *testing.T) {
		out := logs.String()
		for _, want := range []string{`"msg":"connection opened"`, `"msg":"connection closed"`, `"transport":"sse"`, `"by":"client"`, `"code":4000`} {
			if !strings.Contains(out, want) {
				t.Errorf("the log lacks %s", want)
			}
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		checkDashboard(t, "../deploy/grafana/tslm-dashboard.json", families, documented)
	})
}

// slowConsumer has a public subscriber that reads nothing, with a small
// receive buffer, and publishes large messages until the gateway closes it
// as a slow consumer.
func slowConsumer(t *testing.T, g *Gateway, api func(method, path, body string, want int)) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second,
		NetDialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		}}).DialContext}
	slow, _, err := d.Dial("ws://"+g.PublicAddrs()[0].String()+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	wsRoundTrip(t, slow, `{"type":"subscribe","ref":"s","channel":"slow"}`, "ack")
	big := `{"pad":"` + strings.Repeat("x", 48<<10) + `"}`
	for i := 0; g.public.ws.Stats().Closes[4000] == 0; i++ {
		if i == 2000 { // about 100 MB through a socket that reads nothing
			t.Fatal("the subscriber that reads nothing was never closed as a slow consumer")
		}
		api(http.MethodPost, "/v1/channels/slow/messages", big, http.StatusCreated)
	}
	waitUntil(t, "the slow consumer's end counted", func() bool {
		for e, n := range g.public.ws.Stats().Ends {
			if e.Code == "4000" && n > 0 {
				return true
			}
		}
		return false
	})
}

// readEvents reads n events (blocks ending in a blank line) of a stream.
func readEvents(t *testing.T, body io.Reader, n int) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		events, inEvent := 0, false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "" && inEvent:
				if events++; events == n {
					done <- nil
					return
				}
				inEvent = false
			case line != "" && !strings.HasPrefix(line, "retry:") && !strings.HasPrefix(line, ":"):
				inEvent = true
			}
		}
		done <- fmt.Errorf("stream ended after %d events: %v", events, sc.Err())
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("fewer than %d events in 10s", n)
	}
}

// scrape reads /metrics as Prometheus does.
func scrape(t *testing.T, internal string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + internal + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}

// total sums a family's values: counters and gauges, or histograms'
// observation counts.
func total(f *dto.MetricFamily) float64 {
	var sum float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

var selector = regexp.MustCompile(`^([a-z_]+)(?:\{(.*)\})?$`)

// matching returns the series of selector name{label="value",...}.
func matching(families map[string]*dto.MetricFamily, sel string) []*dto.Metric {
	parts := selector.FindStringSubmatch(sel)
	f := families[parts[1]]
	if f == nil {
		return nil
	}
	var want []string
	if parts[2] != "" {
		want = strings.Split(parts[2], ",")
	}
	var out []*dto.Metric
	for _, m := range f.GetMetric() {
		ok := true
		for _, w := range want {
			ok = ok && slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()) == w })
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// value sums the counters and gauges sel selects.
func value(families map[string]*dto.MetricFamily, sel string) float64 {
	var sum float64
	for _, m := range matching(families, sel) {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// count sums the observations of the histograms sel selects.
func count(families map[string]*dto.MetricFamily, sel string) uint64 {
	var n uint64
	for _, m := range matching(families, sel) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// documentedMetrics are the metrics of docs/observability.md's tables.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(tslm_[a-z_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		names = append(names, m[1])
	}
	if len(names) < 40 {
		t.Fatalf("docs/observability.md documents %d metrics in its tables; the test reads rows such as | `tslm_x` |", len(names))
	}
	return names
}

// checkDashboard holds the Grafana dashboard to the scrape: every metric a
// panel queries is exported (a histogram's _bucket, _sum and _count by its
// name), and every documented metric is on some panel.
func checkDashboard(t *testing.T, path string, families map[string]*dto.MetricFamily, documented []string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Inputs []struct {
			Name, Type, PluginID string
		} `json:"__inputs"`
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
		Title         string            `json:"title"`
		UID           string            `json:"uid"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dash.SchemaVersion < 36 || dash.Title == "" || dash.UID == "" {
		t.Errorf("schemaVersion %d, title %q, uid %q: want a titled dashboard of schema 36 or later", dash.SchemaVersion, dash.Title, dash.UID)
	}
	if !slices.ContainsFunc(dash.Inputs, func(in struct{ Name, Type, PluginID string }) bool {
		return in.Name == "DS_PROMETHEUS" && in.Type == "datasource" && in.PluginID == "prometheus"
	}) {
		t.Errorf("__inputs %+v lack the DS_PROMETHEUS data source", dash.Inputs)
	}
	type panel struct {
		Title      string          `json:"title"`
		Type       string          `json:"type"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"` // a collapsed row's
	}
	var exprs []string
	var walk func(raws []json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, r := range raws {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q queries nothing", p.Title)
			}
			if !strings.Contains(string(p.Datasource), "${DS_PROMETHEUS}") {
				t.Errorf("panel %q has data source %s, want ${DS_PROMETHEUS}", p.Title, p.Datasource)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	walk(dash.Panels)

	queried := map[string]bool{}
	for _, e := range exprs {
		for _, name := range regexp.MustCompile(`\b(?:tslm|go|process)_[a-z0-9_]+\b`).FindAllString(e, -1) {
			if families[name] == nil {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(name, suffix); ok && families[base].GetType() == dto.MetricType_HISTOGRAM {
						name = base
					}
				}
			}
			queried[name] = true
			if families[name] == nil {
				t.Errorf("a panel queries %s, which the gateway does not export (%s)", name, e)
			}
		}
	}
	for _, name := range documented {
		if !queried[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}
