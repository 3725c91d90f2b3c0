package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Config tunes an API. Zero values mean the documented defaults.
type Config struct {
	// MaxDataBytes bounds the body of a publish, the message's JSON data,
	// in bytes; 0 means 65 536. Larger bodies are refused with too_large.
	MaxDataBytes int64
	// MaxReadLimit is the largest limit a backlog read may ask for;
	// 0 means 1000. Larger limits are refused with bad_request.
	MaxReadLimit int
	// MaxListLimit is the largest limit a channel listing may ask for;
	// 0 means 1000. Larger limits are refused with bad_request.
	MaxListLimit int
	// AuthMode is how the API treats credentials (Authorization: Bearer):
	// off, it checks none; otherwise Authenticator checks them and Policy
	// (nil: no channel rules) decides each request, as on the WebSocket
	// of the same listener. See docs/http-api.md "Authentication".
	AuthMode      auth.Mode
	Authenticator Authenticator
	Policy        *auth.Policy
	// Tokens, when not nil, are the listener's tokens (auth_tokens): every
	// request must carry one in the TSLM-Auth-Token header, or is refused
	// with 401 before anything else, so that a listener whose WebSocket
	// needs a token is not open through its API. A token is no principal:
	// AuthMode applies as to a request without credentials.
	Tokens *auth.ListenerTokens
	// Logger receives the failures a client is not told about: internal
	// errors and an unreachable backlog. nil means slog.Default().
	Logger *slog.Logger
}

const (
	defaultMaxDataBytes = 64 << 10
	defaultMaxReadLimit = 1000
	defaultMaxListLimit = 1000
	// defaultReadLimit is a read's limit when the client names none,
	// lowered to MaxReadLimit when that is smaller.
	defaultReadLimit = 100
	// maxCreateBytes bounds a create body; the two options fit in far less.
	maxCreateBytes = 4 << 10
)

func (c *Config) setDefaults() {
	if c.MaxDataBytes <= 0 {
		c.MaxDataBytes = defaultMaxDataBytes
	}
	if c.MaxReadLimit <= 0 {
		c.MaxReadLimit = defaultMaxReadLimit
	}
	if c.MaxListLimit <= 0 {
		c.MaxListLimit = defaultMaxListLimit
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// API is the HTTP API of the internal listener over one Hub. It is safe for
// concurrent use and does not own the Hub.
type API struct {
	hub *broker.Hub
	cfg Config

	authOK, authRefused atomic.Int64
	published           atomic.Int64
}

// New returns the API over hub.
func New(hub *broker.Hub, cfg Config) *API {
	cfg.setDefaults()
	return &API{hub: hub, cfg: cfg}
}

// Register adds the API's routes to mux:
//
//	GET    /v1/channels                    list channels, a page at a time
//	PUT    /v1/channels/{channel}           create a channel
//	GET    /v1/channels/{channel}           describe it
//	DELETE /v1/channels/{channel}           delete it
//	POST   /v1/channels/{channel}/messages  publish one message
//	GET    /v1/channels/{channel}/messages  read the backlog
//
// It also claims the rest of /v1/, so that a wrong method or path under it
// is answered in JSON too (405 and 404); routes registered on mux under
// /v1/ by others are more specific and keep precedence.
func (a *API) Register(mux *http.ServeMux) {
	for pattern, h := range map[string]http.HandlerFunc{
		"GET /v1/channels":                     a.list,
		"PUT /v1/channels/{channel}":           a.create,
		"GET /v1/channels/{channel}":           a.info,
		"DELETE /v1/channels/{channel}":        a.delete,
		"POST /v1/channels/{channel}/messages": a.publish,
		"GET /v1/channels/{channel}/messages":  a.messages,
		"/v1/channels":                         methodNotAllowed("GET, HEAD"),
		"/v1/channels/{channel}":               methodNotAllowed("DELETE, GET, HEAD, PUT"),
		"/v1/channels/{channel}/messages":      methodNotAllowed("GET, HEAD, POST"),
		"/v1/": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, broker.CodeNotFound, "no such route: "+r.URL.Path)
		},
	} {
		mux.HandleFunc(pattern, a.gate(h))
	}
}

// gate lets through requests with one of the listener's tokens, when it
// has some; a request without tells nothing of the routes, hence the
// 404s and 405s behind it too.
func (a *API) gate(h http.HandlerFunc) http.HandlerFunc {
	if a.cfg.Tokens == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		values := r.Header.Values(auth.ListenerTokenHeader)
		if len(values) == 1 && a.cfg.Tokens.Match(values[0]) {
			h(w, r)
			return
		}
		msg := "no listener token: this listener admits only requests with one of its auth_tokens in the " + auth.ListenerTokenHeader + " header"
		if len(values) > 0 {
			msg = "listener token refused: send one of this listener's auth_tokens in the " + auth.ListenerTokenHeader + " header"
		}
		w.Header().Set("WWW-Authenticate", auth.ListenerTokenChallenge)
		writeError(w, http.StatusUnauthorized, broker.CodeUnauthorized, msg)
	}
}

// createRequest is the optional body of a create. Pointers tell an absent
// option, which takes the hub's default, from a given one.
type createRequest struct {
	MaxLen    *int64  `json:"max_len"`
	Retention *string `json:"retention"`
}

type createResponse struct {
	Channel string `json:"channel"`
	Created bool   `json:"created"`
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	channel := r.PathValue("channel")
	if !a.allowed(w, r, auth.OpCreate, channel) {
		return
	}
	opts, err := decodeCreate(http.MaxBytesReader(w, r.Body, maxCreateBytes))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	created, err := a.hub.Create(r.Context(), channel, opts)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, createResponse{Channel: channel, Created: created})
}

// decodeCreate reads a create body: empty, null, or one JSON object with
// only the known fields.
func decodeCreate(body io.Reader) (broker.ChannelOptions, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return broker.ChannelOptions{}, readError(err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return broker.ChannelOptions{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req createRequest
	if err := dec.Decode(&req); err != nil {
		return broker.ChannelOptions{}, decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return broker.ChannelOptions{}, badRequest("request body must be a single JSON object")
	}
	opts := broker.ChannelOptions{MaxLen: req.MaxLen}
	if req.Retention != nil {
		d, err := time.ParseDuration(*req.Retention)
		if err != nil {
			return broker.ChannelOptions{}, badRequest(
				"retention: %q is not a duration; want a Go duration such as \"24h\" or \"90m\"", *req.Retention)
		}
		opts.Retention = &d
	}
	return opts, nil
}

// decodeError turns a JSON decoding failure into a message naming what the
// client got wrong, without the Go type names encoding/json mentions.
func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return badRequest("request body must be a JSON object")
	case errors.As(err, &typeErr):
		return badRequest("%s must be %s, not %s", typeErr.Field, wantOf(typeErr.Field), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no error type for this one.
		return badRequest("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return syntaxError(err)
}

// wantOf describes the JSON a create field takes.
func wantOf(field string) string {
	switch field {
	case "max_len":
		return "an integer"
	case "retention":
		return `a duration string such as "24h"`
	}
	return "a different type"
}

// syntaxError describes a body that is not JSON. Every error here comes
// from parsing bytes already read, so its text is about the client's input.
func syntaxError(err error) error {
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &syntaxErr):
		return badRequest("request body is not valid JSON: %s (at byte %d)", syntaxErr, syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is not valid JSON: unexpected end of input")
	}
	return badRequest("request body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// readError classifies a failure to read a request body.
func readError(err error) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return broker.ErrTooLarge.With("request body is over %d bytes", maxErr.Limit)
	}
	return badRequest("request body could not be read")
}

type infoResponse struct {
	Channel   string `json:"channel"`
	Length    int64  `json:"length"`
	FirstID   string `json:"first_id"`
	LastID    string `json:"last_id"`
	MaxLen    int64  `json:"max_len"`
	Retention string `json:"retention"`
	Created   string `json:"created"`
}

func (a *API) info(w http.ResponseWriter, r *http.Request) {
	channel := r.PathValue("channel")
	if !a.allowed(w, r, auth.OpSubscribe, channel) {
		return
	}
	info, err := a.hub.Info(r.Context(), channel)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, infoResponse{
		Channel:   channel,
		Length:    info.Length,
		FirstID:   info.FirstID.String(),
		LastID:    info.LastID.String(),
		MaxLen:    info.Config.MaxLen,
		Retention: info.Config.Retention.String(),
		Created:   info.Created.UTC().Format(time.RFC3339),
	})
}

type publishResponse struct {
	ID string `json:"id"`
	// Duplicate is set when the publish carried an idempotency key.
	Duplicate *bool `json:"duplicate,omitempty"`
}

// idempotencyHeader names the publish that a client may retry.
const idempotencyHeader = "Idempotency-Key"

func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	channel := r.PathValue("channel")
	if !a.allowed(w, r, auth.OpPublish, channel) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxDataBytes))
	if err != nil {
		a.fail(w, r, readError(err))
		return
	}
	// WebSocket text frames must be UTF-8 and encoding/json lets invalid
	// bytes through inside strings, so check both.
	var data bytes.Buffer
	if err := json.Compact(&data, body); err != nil {
		a.fail(w, r, syntaxError(err))
		return
	}
	if !utf8.Valid(body) {
		a.fail(w, r, badRequest("request body must be UTF-8"))
		return
	}
	keys := r.Header.Values(idempotencyHeader)
	if len(keys) == 0 {
		id, err := a.hub.Publish(r.Context(), channel, data.Bytes())
		if err != nil {
			a.fail(w, r, err)
			return
		}
		a.published.Add(1)
		writeJSON(w, http.StatusCreated, publishResponse{ID: id.String()})
		return
	}
	if len(keys) > 1 {
		a.fail(w, r, badRequest(idempotencyHeader+" must be given once"))
		return
	}
	id, duplicate, err := a.hub.PublishIdempotent(r.Context(), channel, data.Bytes(), keys[0])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	status := http.StatusCreated
	if duplicate {
		status = http.StatusOK
	} else {
		a.published.Add(1)
	}
	writeJSON(w, status, publishResponse{ID: id.String(), Duplicate: &duplicate})
}

type deleteResponse struct {
	Channel string `json:"channel"`
	Deleted bool   `json:"deleted"`
}

// delete needs create: whoever may make a channel may unmake it.
func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	channel := r.PathValue("channel")
	if !a.allowed(w, r, auth.OpCreate, channel) {
		return
	}
	if err := a.hub.Delete(r.Context(), channel); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deleteResponse{Channel: channel, Deleted: true})
}

type listResponse struct {
	Channels []string `json:"channels"`
	Cursor   string   `json:"cursor"`
}

// limitOf reads a query's optional limit: 1 to most, defaultReadLimit (or
// most, when smaller) when absent.
func limitOf(query url.Values, most int) (int, error) {
	s := query.Get("limit")
	if s == "" {
		return min(defaultReadLimit, most), nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		return 0, badRequest("limit: %q is not an integer from 1 to %d", s, most)
	}
	return n, nil
}

// list shows only the channels the client may subscribe to, so a page
// may hold fewer than limit names, or none, before the walk is done.
func (a *API) list(w http.ResponseWriter, r *http.Request) {
	who, ok := a.principal(w, r)
	if !ok {
		return
	}
	query := r.URL.Query()
	limit, err := limitOf(query, a.cfg.MaxListLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	names, next, err := a.hub.List(r.Context(), query.Get("prefix"), query.Get("cursor"), limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	names = a.mayList(who, names)
	if names == nil {
		names = []string{}
	}
	writeJSON(w, http.StatusOK, listResponse{Channels: names, Cursor: next})
}

func (a *API) messages(w http.ResponseWriter, r *http.Request) {
	channel := r.PathValue("channel")
	if !a.allowed(w, r, auth.OpSubscribe, channel) {
		return
	}
	query := r.URL.Query()
	after := backlog.Zero
	if s := query.Get("since"); s != "" {
		id, err := backlog.ParseID(s)
		if err != nil {
			a.fail(w, r, badRequest("since: %q is not a message id; want \"<ms>-<seq>\" such as \"0-0\"", s))
			return
		}
		after = id
	}
	limit, err := limitOf(query, a.cfg.MaxReadLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	pubs, continuous, err := a.hub.Messages(r.Context(), channel, after, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeBody(w, http.StatusOK, appendMessages(nil, pubs, continuous))
}

// appendMessages encodes a read's answer by hand: each Data is already JSON
// (the hub guarantees it), so it is copied in as is rather than validated
// and compacted again by encoding/json, and an ID is digits and a dash.
func appendMessages(b []byte, pubs []*broker.Publication, continuous bool) []byte {
	size := 64
	for _, p := range pubs {
		size += len(p.Data) + 64
	}
	b = append(make([]byte, 0, len(b)+size), b...)
	b = append(b, `{"messages":[`...)
	for i, p := range pubs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = p.ID.AppendTo(b)
		b = append(b, `","data":`...)
		b = append(b, p.Data...)
		b = append(b, '}')
	}
	b = append(b, `],"continuous":`...)
	b = strconv.AppendBool(b, continuous)
	return append(b, "}\n"...)
}

func badRequest(format string, args ...any) error {
	return broker.ErrBadRequest.With(format, args...)
}

// fail answers r with err's code and client message (broker.ErrorOf). The
// cause of an unexpected error stays in the log: it may name hosts or
// internals. An outage is logged by the hub, once, so here only at debug.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := broker.ErrorOf(err)
	log := a.cfg.Logger.With("method", r.Method, "path", r.URL.Path, "err", err)
	switch e.Code {
	case broker.CodeCanceled:
		if r.Context().Err() != nil {
			// The client went away: nobody reads an answer, and it
			// says nothing about the backlog.
			log.DebugContext(r.Context(), "http api: request canceled")
			return
		}
		// Canceled while the client waits is a bug.
		e = broker.ErrInternal.Wrap(err)
		fallthrough
	case broker.CodeInternal:
		log.ErrorContext(r.Context(), "http api: internal error")
	case broker.CodeUnavailable:
		log.DebugContext(r.Context(), "http api: backlog unavailable")
	}
	writeError(w, e.Code.HTTPStatus(), e.Code, e.Message)
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, broker.CodeBadRequest,
			fmt.Sprintf("method %s not allowed; use %s", r.Method, allow))
	}
}

func writeError(w http.ResponseWriter, status int, code broker.Code, msg string) {
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	broker.WriteHTTPError(w, status, code, msg)
}

// writeJSON answers with v, whose types here always marshal. Messages quote
// client input such as "<ms>-<seq>", so HTML escaping would only garble them.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		b.Reset()
		b.WriteString(`{"code":"internal","message":"internal error"}` + "\n")
	}
	writeBody(w, status, b.Bytes())
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) // a failed write means the client is gone
}
