package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/syncbuf"
)

// flakyLog is a Memory backlog that fails every call the API makes while
// err is set, as an unreachable Redis would.
type flakyLog struct {
	*backlog.Memory
	err atomic.Pointer[error]
	// lostAnswers is how many of the next idempotent appends are stored
	// and then answered ErrUnavailable, as when Redis stalls after
	// running the script.
	lostAnswers atomic.Int64
}

func (f *flakyLog) failing() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (f *flakyLog) Create(ctx context.Context, channel string, cfg backlog.ChannelConfig) (bool, error) {
	if err := f.failing(); err != nil {
		return false, err
	}
	return f.Memory.Create(ctx, channel, cfg)
}

func (f *flakyLog) Info(ctx context.Context, channel string) (backlog.Info, error) {
	if err := f.failing(); err != nil {
		return backlog.Info{}, err
	}
	return f.Memory.Info(ctx, channel)
}

func (f *flakyLog) Append(ctx context.Context, channel string, data []byte) (backlog.ID, error) {
	if err := f.failing(); err != nil {
		return backlog.ID{}, err
	}
	return f.Memory.Append(ctx, channel, data)
}

func (f *flakyLog) Range(ctx context.Context, channel string, after backlog.ID, limit int) (backlog.Page, error) {
	if err := f.failing(); err != nil {
		return backlog.Page{}, err
	}
	return f.Memory.Range(ctx, channel, after, limit)
}

// lockedBuffer collects log output written by handler goroutines.
type lockedBuffer = syncbuf.Buffer

// epoch is the fixture clock's start; IDs are "<epoch ms>-<seq>" until the
// clock is moved.
var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type fixture struct {
	api  *API
	url  string
	log  *flakyLog
	now  atomic.Int64 // unix ms of the backlog's clock
	logs *lockedBuffer
}

const (
	testMaxDataBytes = 32
	testMaxReadLimit = 3
	testMaxListLimit = 3
	testMaxMaxLen    = 1000
)

// newFixture serves an API over a real hub and Memory backlog with small
// limits, so that every edge is cheap to reach.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, Config{})
}

// newFixtureWith is newFixture with cfg's security settings.
func newFixtureWith(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{logs: &lockedBuffer{}}
	f.now.Store(epoch.UnixMilli())
	f.log = &flakyLog{Memory: backlog.NewMemory(backlog.MemoryConfig{
		Now: func() time.Time { return time.UnixMilli(f.now.Load()) },
	})}
	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hub := broker.New(f.log, broker.Config{MaxMaxLen: testMaxMaxLen, MaxRetention: 48 * time.Hour, Logger: logger})
	api := New(hub, Config{MaxDataBytes: testMaxDataBytes, MaxReadLimit: testMaxReadLimit, MaxListLimit: testMaxListLimit, Logger: logger,
		AuthMode: cfg.AuthMode, Authenticator: cfg.Authenticator, Policy: cfg.Policy, Tokens: cfg.Tokens})
	f.api = api
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		hub.Close()
		f.log.Close()
	})
	f.url = srv.URL
	return f
}

// do sends one request and returns the status and body, failing the test
// unless the response is JSON.
func (f *fixture) do(t *testing.T, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type = %q, want application/json", method, path, ct)
	}
	if method != http.MethodHead && !json.Valid(got) {
		t.Errorf("%s %s: body is not JSON: %q", method, path, got)
	}
	return resp.StatusCode, resp.Header, got
}

// mustDo is do for requests the test relies on succeeding with want.
func (f *fixture) mustDo(t *testing.T, method, path, body string, want int, v any) {
	t.Helper()
	status, _, got := f.do(t, method, path, body)
	if status != want {
		t.Fatalf("%s %s: status = %d, want %d; body %s", method, path, status, want, got)
	}
	if v != nil {
		if err := json.Unmarshal(got, v); err != nil {
			t.Fatalf("%s %s: %v; body %s", method, path, err, got)
		}
	}
}

func (f *fixture) publish(t *testing.T, channel, data string) string {
	t.Helper()
	var resp struct{ ID string }
	f.mustDo(t, http.MethodPost, "/v1/channels/"+channel+"/messages", data, http.StatusCreated, &resp)
	return resp.ID
}

type messagesResponse struct {
	Messages []struct {
		ID   string          `json:"id"`
		Data json.RawMessage `json:"data"`
	} `json:"messages"`
	Continuous bool `json:"continuous"`
}

func (m messagesResponse) ids() []string {
	ids := make([]string, 0, len(m.Messages))
	for _, msg := range m.Messages {
		ids = append(ids, msg.ID)
	}
	return ids
}

// wantError checks an error response's status, code and message.
func wantError(t *testing.T, status int, body []byte, wantStatus int, wantCode broker.Code, msgHas string) {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if status != wantStatus || e.Code != wantCode {
		t.Errorf("got %d %q, want %d %q; body %s", status, e.Code, wantStatus, wantCode, body)
	}
	if !strings.Contains(e.Message, msgHas) {
		t.Errorf("message %q does not mention %q", e.Message, msgHas)
	}
}

func TestCreate(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/taken", "", http.StatusCreated, nil)

	tests := []struct {
		name, channel, body string
		wantStatus          int
		wantCode            broker.Code // "" for success
		msgHas              string
	}{
		{name: "no body", channel: "c1", wantStatus: 201},
		{name: "null body", channel: "c2", body: "null", wantStatus: 201},
		{name: "options", channel: "c3", body: `{"max_len":10,"retention":"1h"}`, wantStatus: 201},
		{name: "max_len at hub limit", channel: "c4", body: fmt.Sprintf(`{"max_len":%d}`, testMaxMaxLen), wantStatus: 201},
		{name: "existing", channel: "taken", body: `{"max_len":5}`, wantStatus: 200},
		{name: "allowed characters", channel: "a.B_9:z-", wantStatus: 201},

		{name: "bad JSON", channel: "e1", body: `{"max_len":`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "not valid JSON"},
		{name: "not an object", channel: "e2", body: `[1]`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "JSON object"},
		{name: "two objects", channel: "e3", body: `{} {}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "single JSON object"},
		{name: "max_len string", channel: "e4", body: `{"max_len":"10"}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "max_len"},
		{name: "max_len fraction", channel: "e5", body: `{"max_len":1.5}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "max_len"},
		{name: "retention number", channel: "e6", body: `{"retention":24}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "retention"},
		{name: "retention not a duration", channel: "e7", body: `{"retention":"a day"}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "retention"},
		{name: "unknown field", channel: "e8", body: `{"maxlen":10}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: `"maxlen"`},
		{name: "max_len zero", channel: "e9", body: `{"max_len":0}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "max_len"},
		{name: "retention negative", channel: "e10", body: `{"retention":"-1h"}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "retention"},
		{name: "bad channel name", channel: "no%20spaces", wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "channel names"},
		{name: "channel name too long", channel: strings.Repeat("x", backlog.MaxChannelLen+1), wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "channel names"},
		{name: "body too large", channel: "e11", body: `{"max_len":1}` + strings.Repeat(" ", maxCreateBytes), wantStatus: 413, wantCode: broker.CodeTooLarge, msgHas: "bytes"},
		{name: "existing with bad options", channel: "taken", body: `{"max_len":0}`, wantStatus: 400, wantCode: broker.CodeBadRequest, msgHas: "max_len"},
		{name: "max_len over hub limit", channel: "e12", body: fmt.Sprintf(`{"max_len":%d}`, testMaxMaxLen+1), wantStatus: 422, wantCode: broker.CodeLimitExceeded, msgHas: "max_len"},
		{name: "retention over hub limit", channel: "e13", body: `{"retention":"49h"}`, wantStatus: 422, wantCode: broker.CodeLimitExceeded, msgHas: "retention"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := f.do(t, http.MethodPut, "/v1/channels/"+tt.channel, tt.body)
			if tt.wantCode != "" {
				wantError(t, status, body, tt.wantStatus, tt.wantCode, tt.msgHas)
				return
			}
			var got createResponse
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			want := createResponse{Channel: tt.channel, Created: tt.wantStatus == http.StatusCreated}
			if status != tt.wantStatus || got != want {
				t.Errorf("got %d %+v, want %d %+v", status, got, tt.wantStatus, want)
			}
		})
	}

	t.Run("options applied", func(t *testing.T) {
		var info infoResponse
		f.mustDo(t, http.MethodGet, "/v1/channels/c3", "", http.StatusOK, &info)
		if info.MaxLen != 10 || info.Retention != "1h0m0s" {
			t.Errorf("got max_len %d retention %q, want 10 1h0m0s", info.MaxLen, info.Retention)
		}
	})
	t.Run("existing keeps its options", func(t *testing.T) {
		var info infoResponse
		f.mustDo(t, http.MethodGet, "/v1/channels/taken", "", http.StatusOK, &info)
		if info.MaxLen != 10_000 {
			t.Errorf("got max_len %d, want the default 10000", info.MaxLen)
		}
	})
	t.Run("refused channels not created", func(t *testing.T) {
		status, _, body := f.do(t, http.MethodGet, "/v1/channels/e12", "")
		wantError(t, status, body, 404, broker.CodeNotFound, "e12")
	})
}

func TestInfo(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/empty", "", http.StatusCreated, nil)
	f.mustDo(t, http.MethodPut, "/v1/channels/full", `{"max_len":50,"retention":"2h"}`, http.StatusCreated, nil)
	var ids []string
	for i := range 3 {
		ids = append(ids, f.publish(t, "full", fmt.Sprint(i)))
	}
	created := epoch.Format(time.RFC3339)

	tests := []struct {
		name, channel string
		want          infoResponse
	}{
		{"empty", "empty", infoResponse{Channel: "empty", FirstID: "0-0", LastID: "0-0", MaxLen: 10_000, Retention: "24h0m0s", Created: created}},
		{"with messages", "full", infoResponse{Channel: "full", Length: 3, FirstID: ids[0], LastID: ids[2], MaxLen: 50, Retention: "2h0m0s", Created: created}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got infoResponse
			f.mustDo(t, http.MethodGet, "/v1/channels/"+tt.channel, "", http.StatusOK, &got)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}

	t.Run("retention keeps the newest message", func(t *testing.T) {
		f.now.Add((3 * time.Hour).Milliseconds())
		if err := f.log.TrimExpired(context.Background()); err != nil {
			t.Fatal(err)
		}
		var got infoResponse
		f.mustDo(t, http.MethodGet, "/v1/channels/full", "", http.StatusOK, &got)
		if got.Length != 1 || got.FirstID != ids[2] || got.LastID != ids[2] {
			t.Errorf("got length %d first %s last %s, want 1 %s %s", got.Length, got.FirstID, got.LastID, ids[2], ids[2])
		}
	})

	errTests := []struct {
		name, channel string
		wantStatus    int
		wantCode      broker.Code
	}{
		{"missing", "nope", 404, broker.CodeNotFound},
		{"bad name", "a%2Fb", 400, broker.CodeBadRequest},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := f.do(t, http.MethodGet, "/v1/channels/"+tt.channel, "")
			wantError(t, status, body, tt.wantStatus, tt.wantCode, "")
		})
	}
}

func TestPublish(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/c", "", http.StatusCreated, nil)

	tests := []struct {
		name, channel, body string
		wantStatus          int
		wantCode            broker.Code // "" for success
		wantData            string      // as read back
	}{
		{name: "object", channel: "c", body: `{"a":[1,2]}`, wantStatus: 201, wantData: `{"a":[1,2]}`},
		{name: "string", channel: "c", body: `"hi"`, wantStatus: 201, wantData: `"hi"`},
		{name: "number", channel: "c", body: `42`, wantStatus: 201, wantData: `42`},
		{name: "null", channel: "c", body: `null`, wantStatus: 201, wantData: `null`},
		{name: "whitespace compacted", channel: "c", body: "\n{ \"a\" :\t1 }\n", wantStatus: 201, wantData: `{"a":1}`},
		{name: "exactly MaxDataBytes", channel: "c", body: `"` + strings.Repeat("x", testMaxDataBytes-2) + `"`, wantStatus: 201,
			wantData: `"` + strings.Repeat("x", testMaxDataBytes-2) + `"`},

		{name: "MaxDataBytes plus one", channel: "c", body: `"` + strings.Repeat("x", testMaxDataBytes-1) + `"`, wantStatus: 413, wantCode: broker.CodeTooLarge},
		{name: "empty body", channel: "c", wantStatus: 400, wantCode: broker.CodeBadRequest},
		{name: "not JSON", channel: "c", body: `hello`, wantStatus: 400, wantCode: broker.CodeBadRequest},
		{name: "two values", channel: "c", body: `1 2`, wantStatus: 400, wantCode: broker.CodeBadRequest},
		{name: "invalid UTF-8", channel: "c", body: "\"\xff\"", wantStatus: 400, wantCode: broker.CodeBadRequest},
		{name: "missing channel", channel: "nope", body: `1`, wantStatus: 404, wantCode: broker.CodeNotFound},
		{name: "bad channel name", channel: "b%C3%A4d", body: `1`, wantStatus: 400, wantCode: broker.CodeBadRequest},
	}
	var wantIDs, wantData []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := f.do(t, http.MethodPost, "/v1/channels/"+tt.channel+"/messages", tt.body)
			if tt.wantCode != "" {
				wantError(t, status, body, tt.wantStatus, tt.wantCode, "")
				return
			}
			var got publishResponse
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			if _, err := backlog.ParseID(got.ID); status != tt.wantStatus || err != nil {
				t.Fatalf("got %d id %q, want %d and an id", status, got.ID, tt.wantStatus)
			}
			wantIDs = append(wantIDs, got.ID)
			wantData = append(wantData, tt.wantData)
		})
	}

	t.Run("read back in order", func(t *testing.T) {
		var got messagesResponse
		f.mustDo(t, http.MethodGet, fmt.Sprintf("/v1/channels/c/messages?limit=%d", testMaxReadLimit), "", http.StatusOK, &got)
		since := "0-0"
		var gotIDs, gotData []string
		for {
			for _, m := range got.Messages {
				gotIDs = append(gotIDs, m.ID)
				gotData = append(gotData, string(m.Data))
				since = m.ID
			}
			if !got.Continuous {
				t.Fatalf("page after %s not continuous", since)
			}
			if len(got.Messages) < testMaxReadLimit {
				break
			}
			got = messagesResponse{}
			f.mustDo(t, http.MethodGet, "/v1/channels/c/messages?since="+since, "", http.StatusOK, &got)
		}
		if fmt.Sprint(gotIDs) != fmt.Sprint(wantIDs) {
			t.Errorf("got ids %v, want %v", gotIDs, wantIDs)
		}
		if fmt.Sprint(gotData) != fmt.Sprint(wantData) {
			t.Errorf("got data %v, want %v", gotData, wantData)
		}
	})

	t.Run("counted", func(t *testing.T) {
		if got := f.api.Stats().Published; got != int64(len(wantIDs)) {
			t.Errorf("Stats().Published = %d, want %d (refusals are not publishes)", got, len(wantIDs))
		}
	})
}

func TestMessages(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/c", "", http.StatusCreated, nil)
	f.mustDo(t, http.MethodPut, "/v1/channels/empty", "", http.StatusCreated, nil)
	var ids []string
	for i := range 5 {
		ids = append(ids, f.publish(t, "c", fmt.Sprintf(`{"n":%d}`, i)))
	}

	tests := []struct {
		name, query    string
		wantIDs        []string
		wantContinuous bool
	}{
		{"default since and limit", "", ids[:3], true},
		{"limit", "?limit=2", ids[:2], true},
		{"since", "?since=" + ids[1], ids[2:5], true},
		{"since and limit", "?since=" + ids[1] + "&limit=1", ids[2:3], true},
		{"since last", "?since=" + ids[4], nil, true},
		// Unproven: read from the oldest held, as a subscribe would.
		{"since beyond head", "?since=" + backlog.ID{Ms: 1 << 60}.String(), ids[:3], false},
		{"empty since is 0-0", "?since=&limit=1", ids[:1], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got messagesResponse
			f.mustDo(t, http.MethodGet, "/v1/channels/c/messages"+tt.query, "", http.StatusOK, &got)
			if fmt.Sprint(got.ids()) != fmt.Sprint(tt.wantIDs) || got.Continuous != tt.wantContinuous {
				t.Errorf("got %v continuous %v, want %v continuous %v", got.ids(), got.Continuous, tt.wantIDs, tt.wantContinuous)
			}
			for _, m := range got.Messages {
				if want := fmt.Sprintf(`{"n":%d}`, indexOf(ids, m.ID)); string(m.Data) != want {
					t.Errorf("message %s: data %s, want %s", m.ID, m.Data, want)
				}
			}
		})
	}

	t.Run("empty channel", func(t *testing.T) {
		_, _, body := f.do(t, http.MethodGet, "/v1/channels/empty/messages", "")
		if want := `{"messages":[],"continuous":true}` + "\n"; string(body) != want {
			t.Errorf("got %q, want %q", body, want)
		}
	})

	errTests := []struct {
		name, path string
		wantStatus int
		wantCode   broker.Code
		msgHas     string
	}{
		{"limit over max", fmt.Sprintf("c/messages?limit=%d", testMaxReadLimit+1), 400, broker.CodeBadRequest, "limit"},
		{"limit zero", "c/messages?limit=0", 400, broker.CodeBadRequest, "limit"},
		{"limit negative", "c/messages?limit=-1", 400, broker.CodeBadRequest, "limit"},
		{"limit not a number", "c/messages?limit=ten", 400, broker.CodeBadRequest, "limit"},
		{"since garbage", "c/messages?since=abc", 400, broker.CodeBadRequest, "since"},
		{"since without seq", "c/messages?since=" + strings.Split(ids[0], "-")[0], 400, broker.CodeBadRequest, "since"},
		{"since leading zero", "c/messages?since=01-0", 400, broker.CodeBadRequest, "since"},
		{"missing channel", "nope/messages", 404, broker.CodeNotFound, "nope"},
		{"bad channel name", "%20/messages", 400, broker.CodeBadRequest, "channel names"},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := f.do(t, http.MethodGet, "/v1/channels/"+tt.path, "")
			wantError(t, status, body, tt.wantStatus, tt.wantCode, tt.msgHas)
		})
	}
}

func indexOf(ids []string, id string) int {
	for i, v := range ids {
		if v == id {
			return i
		}
	}
	return -1
}

// TestTrimmedContinuity checks that a reader learns when messages it asked
// to start after were trimmed away.
func TestTrimmedContinuity(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/c", `{"max_len":2}`, http.StatusCreated, nil)
	var ids []string
	for i := range 5 {
		ids = append(ids, f.publish(t, "c", fmt.Sprint(i)))
	}

	tests := []struct {
		name, query    string
		wantIDs        []string
		wantContinuous bool
	}{
		{"since first, trimmed", "?since=" + ids[0], ids[3:], false},
		{"since a trimmed one", "?since=" + ids[2], ids[3:], false},
		{"from the start after trimming", "", ids[3:], false},
		{"since oldest held", "?since=" + ids[3], ids[4:], true},
		{"since newest", "?since=" + ids[4], nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got messagesResponse
			f.mustDo(t, http.MethodGet, "/v1/channels/c/messages"+tt.query, "", http.StatusOK, &got)
			if fmt.Sprint(got.ids()) != fmt.Sprint(tt.wantIDs) || got.Continuous != tt.wantContinuous {
				t.Errorf("got %v continuous %v, want %v continuous %v", got.ids(), got.Continuous, tt.wantIDs, tt.wantContinuous)
			}
		})
	}
}

// TestBacklogFailures checks that backlog failures reach the client as a
// code and a fixed message, while their text, which may name hosts, goes
// only to the log: an outage at WARN once (by the hub), internal errors at
// ERROR each time.
func TestBacklogFailures(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/c", "", http.StatusCreated, nil)

	routes := []struct{ method, path, body string }{
		{http.MethodPut, "/v1/channels/new", ""},
		{http.MethodGet, "/v1/channels/c", ""},
		{http.MethodPost, "/v1/channels/c/messages", `1`},
		{http.MethodGet, "/v1/channels/c/messages", ""},
	}
	failures := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   broker.Code
		wantLog    string
	}{
		{"unavailable", fmt.Errorf("%w: dial tcp 10.9.8.7:6379: refused", backlog.ErrUnavailable), 503, broker.CodeUnavailable, "level=WARN"},
		{"unexpected", errors.New("WRONGTYPE at 10.9.8.7"), 500, broker.CodeInternal, "level=ERROR"},
	}
	for _, fail := range failures {
		for _, r := range routes {
			t.Run(fail.name+" "+r.method+" "+r.path, func(t *testing.T) {
				f.log.err.Store(&fail.err)
				defer f.log.err.Store(nil)
				status, header, body := f.do(t, r.method, r.path, r.body)
				wantError(t, status, body, fail.wantStatus, fail.wantCode, "")
				if strings.Contains(string(body), "10.9.8.7") {
					t.Errorf("body leaks the backlog's error: %s", body)
				}
				if fail.wantStatus == 503 && header.Get("Retry-After") == "" {
					t.Errorf("503 without Retry-After")
				}
				if logs := f.logs.String(); !strings.Contains(logs, "10.9.8.7") || !strings.Contains(logs, fail.wantLog) {
					t.Errorf("log %q lacks the error at %s", logs, fail.wantLog)
				}
			})
		}
	}
}

func TestRouting(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantCode           broker.Code
		wantAllow          string
	}{
		{"post channel", http.MethodPost, "/v1/channels/c", 405, broker.CodeBadRequest, "DELETE, GET, HEAD, PUT"},
		{"post channels", http.MethodPost, "/v1/channels", 405, broker.CodeBadRequest, "GET, HEAD"},
		{"put messages", http.MethodPut, "/v1/channels/c/messages", 405, broker.CodeBadRequest, "GET, HEAD, POST"},
		{"unknown path", http.MethodGet, "/v1/things", 404, broker.CodeNotFound, ""},
		{"too deep", http.MethodGet, "/v1/channels/c/messages/1", 404, broker.CodeNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, header, body := f.do(t, tt.method, tt.path, "")
			wantError(t, status, body, tt.wantStatus, tt.wantCode, "")
			if got := header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

// TestHTTPStatus covers the codes the hub cannot produce today, forbidden
// and rate_limited among them, so that the table stays whole.
func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		code broker.Code
		want int
	}{
		{broker.CodeBadRequest, 400},
		{broker.CodeUnknownType, 400},
		{broker.CodeUnauthorized, 401},
		{broker.CodeForbidden, 403},
		{broker.CodeNotFound, 404},
		{broker.CodeTooLarge, 413},
		{broker.CodeLimitExceeded, 422},
		{broker.CodeRateLimited, 429},
		{broker.CodeUnavailable, 503},
		{broker.CodeInternal, 500},
		{"something new", 500},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			if got := tt.code.HTTPStatus(); got != tt.want {
				t.Errorf("HTTPStatus(%q) = %d, want %d", tt.code, got, tt.want)
			}
		})
	}
}

// stallingLog is a Memory backlog whose Append waits for its context to be
// done, as against a Redis that hangs, after telling started.
type stallingLog struct {
	*backlog.Memory
	started chan struct{}
}

func (l *stallingLog) Append(ctx context.Context, _ string, _ []byte) (backlog.ID, error) {
	l.started <- struct{}{}
	<-ctx.Done()
	return backlog.ID{}, ctx.Err()
}

// TestClientCancelsPublish: a client that goes away while its publish
// waits on the backlog is not answered (nobody would read it), and the
// cancellation is neither logged as an outage nor as an error: it says
// nothing about the backlog.
func TestClientCancelsPublish(t *testing.T) {
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log := &stallingLog{Memory: backlog.NewMemory(backlog.MemoryConfig{}), started: make(chan struct{}, 1)}
	hub := broker.New(log, broker.Config{Logger: logger, OperationTimeout: time.Hour})
	t.Cleanup(func() { hub.Close(); log.Close() })
	if _, err := hub.Create(t.Context(), "c", broker.ChannelOptions{}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	New(hub, Config{Logger: logger}).Register(mux)

	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-log.started
		cancel()
	}()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/channels/c/messages", strings.NewReader(`1`)))

	if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
		t.Errorf("a canceled publish was answered: %d %s", rec.Code, rec.Body)
	}
	out := logs.String()
	if !strings.Contains(out, "request canceled") {
		t.Errorf("log %q lacks the cancellation at debug", out)
	}
	for _, bad := range []string{"level=WARN", "level=ERROR", "unavailable"} {
		if strings.Contains(out, bad) {
			t.Errorf("log %q has %q: a client leaving is not an outage", out, bad)
		}
	}
}

// errorBody is the JSON error body every HTTP answer carries
// (broker.WriteHTTPError).
type errorBody struct {
	Code    broker.Code `json:"code"`
	Message string      `json:"message"`
}
