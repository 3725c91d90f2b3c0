package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Subprotocols, in the server's order of preference.
const (
	ProtocolV1     = "tslm.v1"
	ProtocolLegacy = "tslm.legacy"
)

// MaxRefBytes bounds the ref a client attaches to a command.
const MaxRefBytes = 64

// Command types of protocol v1.
const (
	typeCreate      = "create"
	typeSubscribe   = "subscribe"
	typeUnsubscribe = "unsubscribe"
	typePublish     = "publish"
	typeRequest     = "request"
	typeSession     = "session"
	typeServe       = "serve"
	typeUnserve     = "unserve"
	typeReply       = "reply"
	typeAuth        = "auth"
)

// command is any v1 client frame. Pointers tell absent fields from zero
// ones; unknown fields are ignored so that newer clients can talk to older
// servers.
type command struct {
	Type      *string         `json:"type"`
	Ref       *string         `json:"ref"`
	Channel   *string         `json:"channel"`
	Since     *string         `json:"since"`
	Last      *int            `json:"last"`
	MaxLen    *int64          `json:"max_len"`
	Retention *string         `json:"retention"`
	Data      json.RawMessage `json:"data"`
	// IdempotencyKey makes a publish safe to retry.
	IdempotencyKey *string `json:"idempotency_key"`
	// TimeoutMs is how long a request waits for its answer.
	TimeoutMs *int64 `json:"timeout_ms"`
	// Session and Pending resume a session: its token and the requests
	// the client still awaits (see pendingRequests).
	Session *string         `json:"session"`
	Pending json.RawMessage `json:"pending"`
	// ID and Error are a reply's: the request answered, and a refusal
	// instead of data (see refusal).
	ID    *string         `json:"id"`
	Error json.RawMessage `json:"error"`
	// Token is an auth's credential. Never logged.
	Token *string `json:"token"`
}

func badRequest(format string, args ...any) *broker.Error {
	return broker.ErrBadRequest.With(format, args...)
}

// parseCommand decodes a v1 frame. On error it still returns the ref when
// the frame carried a valid one, so that the error can echo it.
func parseCommand(frame []byte) (cmd command, ref string, perr *broker.Error) {
	if !json.Valid(frame) {
		return cmd, "", badRequest("frame is not valid JSON")
	}
	if trimmed := strings.TrimLeft(string(frame[:min(len(frame), 64)]), " \t\r\n"); !strings.HasPrefix(trimmed, "{") {
		return cmd, "", badRequest("frame must be a JSON object")
	}
	err := json.Unmarshal(frame, &cmd)
	if cmd.Ref != nil && len(*cmd.Ref) <= MaxRefBytes {
		ref = *cmd.Ref
	}
	if perr := checkFieldNames(frame, commandFields); perr != nil {
		return cmd, ref, perr
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		return cmd, ref, badRequest("field %q must be %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
	case err != nil:
		return cmd, ref, badRequest("frame could not be decoded: %v", err)
	case cmd.Ref != nil && len(*cmd.Ref) > MaxRefBytes:
		return cmd, "", badRequest("ref is longer than %d bytes", MaxRefBytes)
	case cmd.Type == nil:
		return cmd, ref, badRequest("missing field \"type\"")
	}
	switch *cmd.Type {
	case typeCreate, typeSubscribe, typeUnsubscribe, typePublish,
		typeRequest, typeServe, typeUnserve, typeReply:
	case typeSession, typeAuth:
		// A session names its channels in pending; auth names none.
		return cmd, ref, nil
	default:
		return cmd, ref, broker.ErrUnknownType.With("unknown command type %q", truncate(*cmd.Type, 64))
	}
	if cmd.Channel == nil {
		return cmd, ref, badRequest("missing field \"channel\"")
	}
	if !backlog.ValidChannel(*cmd.Channel) {
		return cmd, ref, broker.ErrBadChannel
	}
	return cmd, ref, nil
}

// commandFields are the v1 field names, in the bit order checkFieldNames
// uses. pendingFields and refusalFields are those of the objects nested in
// a session's pending list and in a reply's error.
var (
	commandFields = []string{"type", "ref", "channel", "since", "last", "max_len", "retention", "data", "idempotency_key",
		"timeout_ms", "session", "pending", "id", "error", "token"}
	pendingFields = []string{"channel", "id", "ref", "timeout_ms"}
	refusalFields = []string{"code", "message"}
)

// checkFieldNames refuses what encoding/json would quietly accept: a field
// repeated (the last one would win) or a known field in another case
// ("Type", "DATA"), which would be matched as if spelled right. Clients
// then learn of their typo instead of depending on it. frame must be a
// valid JSON object; fields has at most 64 names.
func checkFieldNames(frame []byte, fields []string) *broker.Error {
	dec := json.NewDecoder(bytes.NewReader(frame))
	if _, err := dec.Token(); err != nil { // the opening brace
		return badRequest("frame must be a JSON object")
	}
	var seen uint64
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badRequest("frame could not be decoded: %v", err)
		}
		key, _ := tok.(string)
		switch i := slices.Index(fields, key); {
		case i >= 0 && seen&(1<<i) != 0:
			return badRequest("field %q appears more than once", key)
		case i >= 0:
			seen |= 1 << i
		case slices.ContainsFunc(fields, func(f string) bool { return strings.EqualFold(f, key) }):
			return badRequest("field names are case-sensitive: %q", truncate(key, 32))
		}
		var skip skipValue
		if err := dec.Decode(&skip); err != nil {
			return badRequest("frame could not be decoded: %v", err)
		}
	}
	return nil
}

// skipValue lets the decoder scan past a value without keeping it.
type skipValue struct{}

func (*skipValue) UnmarshalJSON([]byte) error { return nil }

// refOf extracts a frame's ref, if it has a valid one, without decoding the
// rest: for answering commands that are refused before being parsed.
func refOf(frame []byte) string {
	var env struct {
		Ref *string `json:"ref"`
	}
	if json.Unmarshal(frame, &env) == nil && env.Ref != nil && len(*env.Ref) <= MaxRefBytes {
		return *env.Ref
	}
	return ""
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "int", "int64":
		return "an integer"
	}
	return "of another type"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// subscribeFrom validates subscribe's position fields.
func (cmd *command) subscribeFrom() (broker.From, *broker.Error) {
	switch {
	case cmd.Since != nil && cmd.Last != nil:
		return broker.From{}, badRequest("since and last are exclusive")
	case cmd.Since != nil:
		id, err := backlog.ParseID(*cmd.Since)
		if err != nil {
			return broker.From{}, badRequest("since must be a message id of the form <ms>-<seq>")
		}
		return broker.From{Since: &id}, nil
	case cmd.Last != nil:
		if *cmd.Last < 0 {
			return broker.From{}, badRequest("last must not be negative")
		}
		return broker.From{Last: *cmd.Last}, nil
	}
	return broker.From{}, nil
}

// channelOptions validates create's configuration fields.
func (cmd *command) channelOptions() (broker.ChannelOptions, *broker.Error) {
	opts := broker.ChannelOptions{MaxLen: cmd.MaxLen}
	if cmd.Retention != nil {
		d, err := time.ParseDuration(*cmd.Retention)
		if err != nil {
			return opts, badRequest("retention must be a duration such as \"90s\", \"24h\"")
		}
		opts.Retention = &d
	}
	return opts, nil
}

// requestTimeout validates a request's timeout_ms; 0 means absent, for the
// hub's default. The hub checks the upper bound, which it owns.
func (cmd *command) requestTimeout() (time.Duration, *broker.Error) {
	if cmd.TimeoutMs == nil {
		return 0, nil
	}
	return timeoutOf("timeout_ms", *cmd.TimeoutMs)
}

func timeoutOf(field string, ms int64) (time.Duration, *broker.Error) {
	if ms <= 0 {
		return 0, badRequest("%s must be a positive number of milliseconds", field)
	}
	if ms > int64(math.MaxInt64/time.Millisecond) {
		// Over any bound: the hub refuses it, naming its maximum.
		return time.Duration(math.MaxInt64), nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// pendingEntry is one request of a session command's pending list.
type pendingEntry struct {
	Channel   *string `json:"channel"`
	ID        *string `json:"id"`
	Ref       *string `json:"ref"`
	TimeoutMs *int64  `json:"timeout_ms"`
}

// resume validates a session command: the token (checked by the hub, which
// knows what it issues) and the pending list, as strictly as a frame.
func (cmd *command) resume() (token string, pending []broker.Pending, perr *broker.Error) {
	if cmd.Session == nil {
		return "", nil, badRequest("missing field \"session\"")
	}
	raw := bytes.TrimSpace(cmd.Pending)
	if len(raw) == 0 {
		return *cmd.Session, nil, nil
	}
	var entries []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &entries) != nil {
		return "", nil, badRequest("pending must be an array of {\"channel\",\"id\",\"ref\",\"timeout_ms\"}")
	}
	type key struct {
		channel string
		id      backlog.ID
	}
	seen := make(map[key]bool, len(entries))
	pending = make([]broker.Pending, 0, len(entries))
	for i, e := range entries {
		p, perr := parsePending(e)
		if perr != nil {
			if perr.Code != broker.CodeBadRequest {
				return "", nil, perr
			}
			return "", nil, badRequest("pending[%d]: %s", i, perr.Message)
		}
		k := key{p.Channel, p.ID}
		if seen[k] {
			return "", nil, badRequest("pending[%d]: request %s of %s is listed twice", i, p.ID, p.Channel)
		}
		seen[k] = true
		pending = append(pending, p)
	}
	return *cmd.Session, pending, nil
}

func parsePending(raw json.RawMessage) (broker.Pending, *broker.Error) {
	var p broker.Pending
	if len(raw) == 0 || raw[0] != '{' {
		return p, badRequest("must be an object")
	}
	if perr := checkFieldNames(raw, pendingFields); perr != nil {
		return p, perr
	}
	var e pendingEntry
	if perr := decodeObject(raw, &e); perr != nil {
		return p, perr
	}
	switch {
	case e.Channel == nil:
		return p, badRequest("missing field \"channel\"")
	case !backlog.ValidChannel(*e.Channel):
		return p, broker.ErrBadChannel
	case broker.IsReserved(*e.Channel):
		return p, broker.ErrReserved
	case e.ID == nil:
		return p, badRequest("missing field \"id\"")
	case e.Ref != nil && len(*e.Ref) > MaxRefBytes:
		return p, badRequest("ref is longer than %d bytes", MaxRefBytes)
	}
	id, err := backlog.ParseID(*e.ID)
	if err != nil {
		return p, badRequest("id must be a request id of the form <ms>-<seq>")
	}
	p = broker.Pending{Channel: *e.Channel, ID: id}
	if e.Ref != nil {
		p.Tag = *e.Ref
	}
	if e.TimeoutMs != nil {
		d, perr := timeoutOf("timeout_ms", *e.TimeoutMs)
		if perr != nil {
			return p, perr
		}
		p.Timeout = d
	}
	return p, nil
}

// decodeObject decodes a nested object whose field names were checked,
// naming a field of the wrong type.
func decodeObject(raw json.RawMessage, v any) *broker.Error {
	err := json.Unmarshal(raw, v)
	if typeErr, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return badRequest("field %q must be %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
	}
	if err != nil {
		return badRequest("could not be decoded: %v", err)
	}
	return nil
}

// reply validates a reply command: the request it answers, and exactly one
// of data (at most maxData bytes) or error.
func (cmd *command) reply(maxData int) (id backlog.ID, data []byte, refusal *broker.Refusal, perr *broker.Error) {
	if cmd.ID == nil {
		return id, nil, nil, badRequest("missing field \"id\"")
	}
	id, err := backlog.ParseID(*cmd.ID)
	if err != nil {
		return id, nil, nil, badRequest("id must be a request id of the form <ms>-<seq>")
	}
	switch {
	case len(cmd.Data) > 0 && len(cmd.Error) > 0:
		return id, nil, nil, badRequest("data and error are exclusive: a reply either answers or refuses")
	case len(cmd.Data) > maxData:
		return id, nil, nil, broker.ErrTooLarge.With("data is larger than %d bytes", maxData)
	case len(cmd.Data) > 0:
		return id, cmd.Data, nil, nil
	case len(cmd.Error) == 0:
		return id, nil, nil, badRequest("missing field \"data\", or \"error\" to refuse the request")
	}
	refusal, perr = parseRefusal(cmd.Error)
	return id, nil, refusal, perr
}

func parseRefusal(raw json.RawMessage) (*broker.Refusal, *broker.Error) {
	wrap := func(perr *broker.Error) *broker.Error {
		return badRequest("error: %s", perr.Message)
	}
	if raw[0] != '{' {
		return nil, badRequest("error must be an object {\"code\",\"message\"}")
	}
	if perr := checkFieldNames(raw, refusalFields); perr != nil {
		return nil, wrap(perr)
	}
	var e struct {
		Code    *string `json:"code"`
		Message *string `json:"message"`
	}
	if perr := decodeObject(raw, &e); perr != nil {
		return nil, wrap(perr)
	}
	if e.Code == nil {
		return nil, badRequest("error: missing field \"code\"")
	}
	r := &broker.Refusal{Code: *e.Code}
	if e.Message != nil {
		r.Message = *e.Message
	}
	if err := broker.CheckRefusal(*r); err != nil {
		return nil, broker.ErrBadRefusal
	}
	return r, nil
}

// Server frames.

type ackFrame struct {
	Type string `json:"type"`
	Ref  string `json:"ref,omitempty"`
	// Channel is absent from a session's ack only.
	Channel string  `json:"channel,omitempty"`
	Created *bool   `json:"created,omitempty"`
	Head    *string `json:"head,omitempty"`
	Resumed *bool   `json:"resumed,omitempty"`
	ID      string  `json:"id,omitempty"`
	// Duplicate answers a publish with an idempotency key.
	Duplicate *bool `json:"duplicate,omitempty"`
	// Session is the token of the session a request belongs to, on every
	// request's ack and on a session's.
	Session string `json:"session,omitempty"`
	// Subject and Expires answer an auth: whom the connection now speaks
	// for, and until when (RFC 3339, UTC; absent: never).
	Subject string `json:"subject,omitempty"`
	Expires string `json:"expires,omitempty"`
}

type errorFrame struct {
	Type    string      `json:"type"`
	Ref     string      `json:"ref,omitempty"`
	Code    broker.Code `json:"code"`
	Message string      `json:"message"`
	// Channel and ID name the request a timeout answers; Channel alone,
	// the subscription or serving a re-auth ended.
	Channel string `json:"channel,omitempty"`
	ID      string `json:"id,omitempty"`
}

// replyFrame carries a request's answer: data, or the responder's refusal.
type replyFrame struct {
	Type    string          `json:"type"`
	Ref     string          `json:"ref,omitempty"`
	Channel string          `json:"channel"`
	ID      string          `json:"id"`
	Data    json.RawMessage `json:"data,omitempty"`
	Error   *broker.Refusal `json:"error,omitempty"`
}

// requestFrame hands a request to a serving app.
type requestFrame struct {
	Type       string          `json:"type"`
	Channel    string          `json:"channel"`
	ID         string          `json:"id"`
	Data       json.RawMessage `json:"data"`
	DeadlineMs int64           `json:"deadline_ms"`
	Deliveries int64           `json:"deliveries"`
}

// encodeAnswer frames a session's answer: a reply, or the timeout error,
// or too_large for a reply over maxData. An app writing to Redis is not
// held to the limit its WebSocket peers are; passed on, such a reply could
// outgrow the client's send queue and close its connection at every resume.
func encodeAnswer(a broker.Answer, maxData int) []byte {
	if a.Timeout {
		b, _ := json.Marshal(errorFrame{Type: "error", Ref: a.Tag, Code: broker.CodeTimeout,
			Message: broker.ErrRequestTimeout.Message, Channel: a.Channel, ID: a.ID.String()})
		return b
	}
	if a.Refusal == nil && len(a.Data) > maxData {
		b, _ := json.Marshal(errorFrame{Type: "error", Ref: a.Tag, Code: broker.CodeTooLarge,
			Message: fmt.Sprintf("the reply is larger than %d bytes", maxData), Channel: a.Channel, ID: a.ID.String()})
		return b
	}
	f := replyFrame{Type: "reply", Ref: a.Tag, Channel: a.Channel, ID: a.ID.String(), Error: a.Refusal}
	if a.Refusal == nil {
		f.Data = broker.AsJSON(a.Data)
	}
	b, _ := json.Marshal(f) // the data is JSON; strings always marshal
	return b
}

func encodeServedRequest(r broker.ServedRequest) []byte {
	b, _ := json.Marshal(requestFrame{Type: "request", Channel: r.Channel, ID: r.ID.String(),
		Data: broker.AsJSON(r.Data), DeadlineMs: r.Deadline.UnixMilli(), Deliveries: r.Deliveries})
	return b
}

func encodeAck(a ackFrame) []byte {
	a.Type = "ack"
	b, _ := json.Marshal(a) // plain strings and bools always marshal
	return b
}

func encodeError(ref string, code broker.Code, message string) []byte {
	b, _ := json.Marshal(errorFrame{Type: "error", Ref: ref, Code: code, Message: message})
	return b
}

// encodeEnded tells a client that its subscription or serving of channel
// has ended, not in answer to any command of its own.
func encodeEnded(channel string, e *broker.Error) []byte {
	b, _ := json.Marshal(errorFrame{Type: "error", Code: e.Code, Message: e.Message, Channel: channel})
	return b
}

// v1Encoder frames publications for protocol v1. Channel names need no
// escaping (backlog.ValidChannel) and Data is JSON, so frames are assembled
// by appending, once per publication whatever the number of subscribers.
var v1Encoder = &broker.Encoder{Encode: func(p *broker.Publication) []byte {
	if p.Deleted {
		return append(append([]byte(`{"type":"deleted","channel":"`), p.Channel...), `"}`...)
	}
	if p.Gap {
		b := make([]byte, 0, 48+len(p.Channel))
		b = append(b, `{"type":"gap","channel":"`...)
		b = append(b, p.Channel...)
		b = append(b, `","after":"`...)
		b = p.ID.AppendTo(b)
		return append(b, `"}`...)
	}
	b := make([]byte, 0, 64+len(p.Channel)+len(p.Data))
	b = append(b, `{"type":"message","channel":"`...)
	b = append(b, p.Channel...)
	b = append(b, `","id":"`...)
	b = p.ID.AppendTo(b)
	b = append(b, `","data":`...)
	b = append(b, p.Data...)
	return append(b, '}')
}}
