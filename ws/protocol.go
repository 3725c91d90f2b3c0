package ws

import (
	"bytes"
	"encoding/json"
	"errors"
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
	if perr := checkFieldNames(frame); perr != nil {
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
	case typeCreate, typeSubscribe, typeUnsubscribe, typePublish:
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
// uses.
var commandFields = [...]string{"type", "ref", "channel", "since", "last", "max_len", "retention", "data", "idempotency_key"}

// checkFieldNames refuses what encoding/json would quietly accept: a field
// repeated (the last one would win) or a known field in another case
// ("Type", "DATA"), which would be matched as if spelled right. Clients
// then learn of their typo instead of depending on it. frame must be a
// valid JSON object.
func checkFieldNames(frame []byte) *broker.Error {
	dec := json.NewDecoder(bytes.NewReader(frame))
	if _, err := dec.Token(); err != nil { // the opening brace
		return badRequest("frame must be a JSON object")
	}
	var seen uint
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badRequest("frame could not be decoded: %v", err)
		}
		key, _ := tok.(string)
		switch i := slices.Index(commandFields[:], key); {
		case i >= 0 && seen&(1<<i) != 0:
			return badRequest("field %q appears more than once", key)
		case i >= 0:
			seen |= 1 << i
		case slices.ContainsFunc(commandFields[:], func(f string) bool { return strings.EqualFold(f, key) }):
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

// Server frames.

type ackFrame struct {
	Type    string  `json:"type"`
	Ref     string  `json:"ref,omitempty"`
	Channel string  `json:"channel"`
	Created *bool   `json:"created,omitempty"`
	Head    *string `json:"head,omitempty"`
	Resumed *bool   `json:"resumed,omitempty"`
	ID      string  `json:"id,omitempty"`
	// Duplicate answers a publish with an idempotency key.
	Duplicate *bool `json:"duplicate,omitempty"`
}

type errorFrame struct {
	Type    string      `json:"type"`
	Ref     string      `json:"ref,omitempty"`
	Code    broker.Code `json:"code"`
	Message string      `json:"message"`
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
