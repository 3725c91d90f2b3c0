package jsclient_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/redistest"
)

// TestBrowserSSEAddsChannels: on SSE a stream's channels are fixed, so a
// later subscribe reopens the stream; the channels already streaming
// resume after their last message, with nothing repeated or lost.
func TestBrowserSSEAddsChannels(t *testing.T) {
	chromium, node := browserPrerequisites(t)
	redis := redistest.Start(t, redistest.Options{})
	g := startGateway(t, gateway.Config{RedisURL: redis.URL()})
	pub := g.PublicAddrs()[0].String()
	api := "http://" + g.InternalAddrs()[0].String() + "/v1/channels/"
	for _, ch := range []string{"a", "b"} {
		call(t, "PUT", api+ch, `{}`)
	}
	if !hasSSE(t, pub, "a") {
		t.Skip("this gateway has no SSE transport (GET /v1/sse is 404)")
	}
	publish := func(ch string, from, to int) {
		for n := from; n <= to; n++ {
			call(t, "POST", api+ch+"/messages", fmt.Sprintf(`{"n":%d}`, n))
		}
	}
	publish("a", 1, 3)
	publish("b", 1, 3)
	b := startBrowser(t, chromium, node)
	b.do(t, map[string]any{"cmd": "open", "url": "http://" + pub + "/?channel=a"})

	const until = `const until = async (cond) => { for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 25)); return cond(); };`
	b.do(t, map[string]any{"cmd": "eval", "expr": `(async () => {
		` + until + `
		const { connect } = await import("/tslm.js");
		const got = { a: [], b: [] };
		window.sse = got;
		const c = connect("ws://" + location.host + "/v1/ws", { transport: "sse" });
		const on = (ch) => (m) => got[ch].push(m.data.n);
		c.subscribe("a", { since: "0-0", onMessage: on("a") });
		if (!(await until(() => got.a.length >= 3))) throw new Error("a: " + got.a);
		c.subscribe("b", { since: "0-0", onMessage: on("b") });
		if (!(await until(() => got.b.length >= 3))) throw new Error("b: " + got.b);
		return c.transport;
	})()`})
	publish("a", 4, 5)
	publish("b", 4, 4)
	a := b.do(t, map[string]any{"cmd": "eval", "expr": `(async () => {
		` + until + `
		await until(() => window.sse.a.length >= 5 && window.sse.b.length >= 4);
		return window.sse;
	})()`})
	var got struct{ A, B []int }
	if err := json.Unmarshal(a.Value, &got); err != nil {
		t.Fatalf("%s: %v", a.Value, err)
	}
	if !slices.Equal(got.A, []int{1, 2, 3, 4, 5}) || !slices.Equal(got.B, []int{1, 2, 3, 4}) {
		t.Errorf("over SSE, a got %v and b %v; want 1..5 and 1..4, each once", got.A, got.B)
	}
}
