package ws

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// FuzzParseCommand holds parseCommand to its contract: it never panics, and
// returns either a command of a known type on a valid channel, or an error
// with a documented code; a ref it hands back is one the frame carried and
// fits MaxRefBytes.
func FuzzParseCommand(f *testing.F) {
	for _, seed := range []string{
		`{"type":"create","ref":"1","channel":"prices","max_len":10000,"retention":"24h"}`,
		`{"type":"subscribe","ref":"2","channel":"prices"}`,
		`{"type":"subscribe","ref":"2","channel":"prices","since":"1732480000123-0"}`,
		`{"type":"subscribe","ref":"2","channel":"prices","last":50}`,
		`{"type":"unsubscribe","ref":"3","channel":"prices"}`,
		`{"type":"publish","ref":"4","channel":"prices","data":{"bid":1.5}}`,
		`{"type":"publish","channel":"a.b_c:d-e","data":null}`,
		`{"type":"publish","channel":"x","data":"s","extra":[1,2,{"y":null}]}`,
		`{"type":"Publish","ref":"r","channel":"x"}`,
		`{"type":1,"ref":"r","channel":"x"}`,
		`{"type":"unsubscribe","channel":"c","ref":"` + strings.Repeat("r", 65) + `"}`,
		`[]`, `null`, `"x"`, ``, `{}`, ` {"type":"subscribe","channel":"c"} `,
	} {
		f.Add([]byte(seed))
	}
	documented := map[broker.Code]bool{broker.CodeBadRequest: true, broker.CodeUnknownType: true}
	f.Fuzz(func(t *testing.T, frame []byte) {
		cmd, ref, perr := parseCommand(frame)
		if len(ref) > MaxRefBytes {
			t.Fatalf("ref of %d bytes returned", len(ref))
		}
		if ref != "" && (cmd.Ref == nil || *cmd.Ref != ref) {
			t.Fatalf("ref %q returned, but the command carries %v", ref, cmd.Ref)
		}
		if perr != nil {
			if !documented[perr.Code] {
				t.Fatalf("error code %q is not one parseCommand may return", perr.Code)
			}
			if perr.Message == "" || !utf8.ValidString(perr.Message) {
				t.Fatalf("error message %q: want non-empty UTF-8", perr.Message)
			}
			return
		}
		if cmd.Type == nil || cmd.Channel == nil {
			t.Fatalf("no error, but type %v, channel %v", cmd.Type, cmd.Channel)
		}
		switch *cmd.Type {
		case typeCreate, typeSubscribe, typeUnsubscribe, typePublish:
		default:
			t.Fatalf("no error for type %q", *cmd.Type)
		}
		if !backlog.ValidChannel(*cmd.Channel) {
			t.Fatalf("no error for channel %q", *cmd.Channel)
		}
		if cmd.Ref != nil && *cmd.Ref != ref {
			t.Fatalf("valid command with ref %q, returned ref %q", *cmd.Ref, ref)
		}
		// The position and options validators must not panic either.
		cmd.subscribeFrom()
		cmd.channelOptions()
	})
}
