package ws

import (
	"encoding/json"
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
		`{"type":"request","ref":"r7","channel":"orders","data":{"n":1},"timeout_ms":5000}`,
		`{"type":"session","ref":"s1","session":"tok","pending":[{"channel":"orders","id":"1-0","ref":"r7","timeout_ms":3000}]}`,
		`{"type":"session","session":"tok","pending":[{"channel":"_inbox.x","id":"1-0"},{"channel":"a","id":"1-0","id":"2-0"}]}`,
		`{"type":"serve","ref":"s","channel":"orders"}`,
		`{"type":"unserve","ref":"u","channel":"orders"}`,
		`{"type":"reply","ref":"x","channel":"orders","id":"1-0","data":{"ok":true}}`,
		`{"type":"reply","ref":"x","channel":"orders","id":"1-0","error":{"code":"busy","message":"later"}}`,
		`{"type":"reply","channel":"orders","id":"1-0","error":{"Code":"busy","code":"x"}}`,
		`{"type":"auth","ref":"a1","token":"eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJhIn0.c2ln"}`,
		`{"type":"auth","ref":"a2","token":"an-api-key","channel":"ignored"}`,
		`{"type":"auth","token":1}`,
		`{"type":"auth","token":"a","Token":"b"}`,
		`{"type":"auth"}`,
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
		if cmd.Type == nil {
			t.Fatal("no error, but no type")
		}
		// The validators of each command must not panic, and answer with
		// documented codes only.
		validated := map[broker.Code]bool{broker.CodeBadRequest: true, broker.CodeTooLarge: true, broker.CodeForbidden: true}
		check := func(perr *broker.Error) {
			if perr != nil && (!validated[perr.Code] || perr.Message == "" || !utf8.ValidString(perr.Message)) {
				t.Fatalf("validator error %q %q", perr.Code, perr.Message)
			}
		}
		switch *cmd.Type {
		case typeCreate, typeSubscribe, typeUnsubscribe, typePublish, typeRequest, typeServe, typeUnserve, typeReply:
		case typeSession:
			_, _, perr := cmd.resume()
			check(perr)
			return // its channels are in pending
		case typeAuth:
			return // the authenticator reads the token; auth fuzzes it
		default:
			t.Fatalf("no error for type %q", *cmd.Type)
		}
		if cmd.Channel == nil || !backlog.ValidChannel(*cmd.Channel) {
			t.Fatalf("no error for channel %q", *cmd.Channel)
		}
		if cmd.Ref != nil && *cmd.Ref != ref {
			t.Fatalf("valid command with ref %q, returned ref %q", *cmd.Ref, ref)
		}
		_, perr = cmd.subscribeFrom()
		check(perr)
		_, perr = cmd.channelOptions()
		check(perr)
		_, perr = cmd.requestTimeout()
		check(perr)
		_, _, refusal, perr := cmd.reply(100)
		check(perr)
		if refusal != nil && broker.CheckRefusal(*refusal) != nil {
			t.Fatalf("reply accepted with refusal %+v", refusal)
		}
	})
}

// FuzzLegacyCommand holds parseLegacy to its contract: it never panics,
// and returns either one of the three legacy commands on a valid channel
// (NotifyChannel with JSON data, a string for a Text payload), or an
// error with a documented code. The seed corpus, beside the seeds here, is
// in testdata/fuzz/FuzzLegacyCommand.
func FuzzLegacyCommand(f *testing.F) {
	for _, seed := range []string{
		`{"CreateChannel":"c"}`,
		`{"Subscribe":"prices.eur"}`,
		`{"NotifyChannel":["c",{"Text":"hi"}]}`,
		`{"NotifyChannel":["c",{"Json":{"a":[1,2,null]}}]}`,
	} {
		f.Add([]byte(seed))
	}
	documented := map[broker.Code]bool{broker.CodeBadRequest: true, broker.CodeUnknownType: true}
	f.Fuzz(func(t *testing.T, frame []byte) {
		cmd, perr := parseLegacy(frame)
		if perr != nil {
			if !documented[perr.Code] || perr.Message == "" || !utf8.ValidString(perr.Message) {
				t.Fatalf("error %q %q", perr.Code, perr.Message)
			}
			return
		}
		if !backlog.ValidChannel(cmd.channel) {
			t.Fatalf("no error for channel %q", cmd.channel)
		}
		switch cmd.kind {
		case "CreateChannel", "Subscribe":
			if cmd.data != nil {
				t.Fatalf("%s with data %q", cmd.kind, cmd.data)
			}
		case "NotifyChannel":
			if !json.Valid(cmd.data) {
				t.Fatalf("NotifyChannel with data %q, not JSON", cmd.data)
			}
		default:
			t.Fatalf("no error for command %q", cmd.kind)
		}
	})
}
