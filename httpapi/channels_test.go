package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

func (f *flakyLog) AppendIdempotent(ctx context.Context, channel string, data []byte, idem backlog.Idempotency) (backlog.ID, bool, error) {
	if err := f.failing(); err != nil {
		return backlog.ID{}, false, err
	}
	id, dup, err := f.Memory.AppendIdempotent(ctx, channel, data, idem)
	if err == nil && f.lostAnswers.Add(-1) >= 0 {
		return backlog.ID{}, false, backlog.ErrUnavailable
	}
	return id, dup, err
}

func (f *flakyLog) Delete(ctx context.Context, channel string) error {
	if err := f.failing(); err != nil {
		return err
	}
	return f.Memory.Delete(ctx, channel)
}

// doWith is do with request headers.
func (f *fixture) doWith(t *testing.T, method, path, body string, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v", method, path, err)
	}
	return resp.StatusCode, b
}

type keyedAnswer struct {
	ID        string `json:"id"`
	Duplicate *bool  `json:"duplicate"`
}

func (f *fixture) publishKeyed(t *testing.T, channel, data, key string) (int, keyedAnswer) {
	t.Helper()
	status, body := f.doWith(t, http.MethodPost, "/v1/channels/"+channel+"/messages", data, http.Header{"Idempotency-Key": {key}})
	var a keyedAnswer
	if status < 300 {
		if err := json.Unmarshal(body, &a); err != nil || a.ID == "" || a.Duplicate == nil {
			t.Fatalf("publish answer %s: want id and duplicate", body)
		}
	}
	return status, a
}

func (f *fixture) stored(t *testing.T, channel string) []string {
	t.Helper()
	var page messagesResponse
	f.mustDo(t, http.MethodGet, "/v1/channels/"+channel+"/messages?limit=3", "", http.StatusOK, &page)
	return page.ids()
}

func TestIdempotentPublish(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/once", "", http.StatusCreated, nil)
	status, first := f.publishKeyed(t, "once", `{"n":1}`, "order-17")
	if status != http.StatusCreated || *first.Duplicate {
		t.Fatalf("first publish: %d %+v, want 201 not duplicate", status, first)
	}
	// The key alone identifies the message: other data changes nothing.
	for _, data := range []string{`{"n":1}`, `{"n":2}`} {
		status, again := f.publishKeyed(t, "once", data, "order-17")
		if status != http.StatusOK || !*again.Duplicate || again.ID != first.ID {
			t.Fatalf("retry with %s: %d %+v, want 200 duplicate of %s", data, status, again, first.ID)
		}
	}
	if got := f.stored(t, "once"); !slices.Equal(got, []string{first.ID}) {
		t.Fatalf("stored %v, want only %s", got, first.ID)
	}
	if got := f.api.Stats().Published; got != 1 {
		t.Errorf("Stats().Published = %d after a publish and its retries, want 1", got)
	}
	// Without the header, the answer is as before: no duplicate field.
	status, body := f.doWith(t, http.MethodPost, "/v1/channels/once/messages", `1`, nil)
	if status != http.StatusCreated || strings.Contains(string(body), "duplicate") {
		t.Errorf("publish without a key: %d %s", status, body)
	}

	for name, header := range map[string]http.Header{
		"empty":     {"Idempotency-Key": {""}},
		"space":     {"Idempotency-Key": {"two words"}},
		"too long":  {"Idempotency-Key": {strings.Repeat("k", 129)}},
		"non-ASCII": {"Idempotency-Key": {"clé"}},
		"twice":     {"Idempotency-Key": {"a", "b"}},
	} {
		t.Run(name, func(t *testing.T) {
			status, body := f.doWith(t, http.MethodPost, "/v1/channels/once/messages", `1`, header)
			wantError(t, status, body, http.StatusBadRequest, broker.CodeBadRequest, "")
		})
	}
	if status, a := f.publishKeyed(t, "once", `1`, strings.Repeat("k", 128)); status != http.StatusCreated {
		t.Errorf("128-byte key: %d %+v", status, a)
	}
	status, body = f.doWith(t, http.MethodPost, "/v1/channels/nowhere/messages", `1`, http.Header{"Idempotency-Key": {"k"}})
	wantError(t, status, body, http.StatusNotFound, broker.CodeNotFound, "nowhere")
}

// TestRetryAfterLostAnswer: the first attempt is stored but answered 503,
// as after a Redis stall; the retry with the same key gets the stored ID
// and the channel holds the message once.
func TestRetryAfterLostAnswer(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/retry", "", http.StatusCreated, nil)
	f.log.lostAnswers.Store(1)
	status, body := f.doWith(t, http.MethodPost, "/v1/channels/retry/messages", `"pay"`, http.Header{"Idempotency-Key": {"pay-1"}})
	wantError(t, status, body, http.StatusServiceUnavailable, broker.CodeUnavailable, "")
	stored := f.stored(t, "retry")
	if len(stored) != 1 {
		t.Fatalf("the failed attempt stored %v, want one message", stored)
	}
	status, again := f.publishKeyed(t, "retry", `"pay"`, "pay-1")
	if status != http.StatusOK || !*again.Duplicate || again.ID != stored[0] {
		t.Fatalf("retry: %d %+v, want 200 duplicate of %s", status, again, stored[0])
	}
	if got := f.stored(t, "retry"); !slices.Equal(got, stored) {
		t.Fatalf("after the retry the channel holds %v, want %v", got, stored)
	}
}

func TestDeleteChannel(t *testing.T) {
	f := newFixture(t)
	f.mustDo(t, http.MethodPut, "/v1/channels/gone", "", http.StatusCreated, nil)
	f.publish(t, "gone", "1")
	var del deleteResponse
	f.mustDo(t, http.MethodDelete, "/v1/channels/gone", "", http.StatusOK, &del)
	if del != (deleteResponse{Channel: "gone", Deleted: true}) {
		t.Errorf("delete answer %+v", del)
	}
	for _, req := range []struct{ method, path string }{
		{http.MethodGet, "/v1/channels/gone"},
		{http.MethodDelete, "/v1/channels/gone"},
		{http.MethodGet, "/v1/channels/gone/messages"},
		{http.MethodPost, "/v1/channels/gone/messages"},
	} {
		status, _, body := f.do(t, req.method, req.path, "1")
		wantError(t, status, body, http.StatusNotFound, broker.CodeNotFound, `"gone"`)
	}
	status, _, body := f.do(t, http.MethodDelete, "/v1/channels/bad%20name", "")
	wantError(t, status, body, http.StatusBadRequest, broker.CodeBadRequest, "")

	var created createResponse
	f.mustDo(t, http.MethodPut, "/v1/channels/gone", "", http.StatusCreated, &created)
	if got := f.stored(t, "gone"); len(got) != 0 {
		t.Errorf("created again, the channel holds %v", got)
	}

	f.log.err.Store(&backlog.ErrUnavailable)
	status, _, body = f.do(t, http.MethodDelete, "/v1/channels/gone", "")
	wantError(t, status, body, http.StatusServiceUnavailable, broker.CodeUnavailable, "")
}

func (f *fixture) list(t *testing.T, query url.Values) listResponse {
	t.Helper()
	var page listResponse
	f.mustDo(t, http.MethodGet, "/v1/channels?"+query.Encode(), "", http.StatusOK, &page)
	if page.Channels == nil {
		t.Fatal("channels is null")
	}
	return page
}

func TestListChannels(t *testing.T) {
	f := newFixture(t)
	if page := f.list(t, nil); len(page.Channels) != 0 || page.Cursor != "" {
		t.Fatalf("empty listing = %+v", page)
	}
	for _, name := range []string{"b.1", "a.2", "a.1", "c"} {
		f.mustDo(t, http.MethodPut, "/v1/channels/"+name, "", http.StatusCreated, nil)
	}
	var all []string
	cursor := ""
	for pages := 1; ; pages++ {
		page := f.list(t, url.Values{"limit": {"3"}, "cursor": {cursor}})
		if len(page.Channels) > 3 || pages > 4 {
			t.Fatalf("page %d: %+v", pages, page)
		}
		all = append(all, page.Channels...)
		if cursor = page.Cursor; cursor == "" {
			break
		}
	}
	if want := []string{"a.1", "a.2", "b.1", "c"}; !slices.Equal(all, want) {
		t.Errorf("listed %v, want %v", all, want)
	}
	if page := f.list(t, url.Values{"prefix": {"a."}}); !slices.Equal(page.Channels, []string{"a.1", "a.2"}) || page.Cursor != "" {
		t.Errorf("prefix a.: %+v", page)
	}
	for name, query := range map[string]string{
		"limit 0":       "limit=0",
		"limit over":    "limit=4",
		"limit words":   "limit=many",
		"bad prefix":    "prefix=a%2Fb",
		"bad cursor":    "cursor=%7B",
		"prefix is 129": "prefix=" + strings.Repeat("a", 129),
	} {
		t.Run(name, func(t *testing.T) {
			status, _, body := f.do(t, http.MethodGet, "/v1/channels?"+query, "")
			wantError(t, status, body, http.StatusBadRequest, broker.CodeBadRequest, "")
		})
	}
}
