package backlog

import (
	"bufio"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestReadReply reads the RESP2 replies the append connection meets as
// go-redis gives them, and refuses what is not RESP2.
func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want any
		err  string
	}{
		{in: "+OK\r\n", want: "OK"},
		{in: ":42\r\n", want: int64(42)},
		{in: "$5\r\nhe\r\no\r\n", want: "he\r\no"},
		{in: "$0\r\n\r\n", want: ""},
		{in: "$-1\r\n", want: nil},
		{in: "*-1\r\n", want: nil},
		{in: "*3\r\n$1\r\na\r\n:1\r\n*1\r\n$-1\r\n", want: []any{"a", int64(1), []any{nil}}},
		{in: "*2\r\n-ERR inner\r\n+x\r\n", want: []any{wireError("ERR inner"), "x"}},
		{in: "-NOSCRIPT No matching script\r\n", err: "NOSCRIPT No matching script"},
		{in: "$x\r\n", err: "malformed bulk length"},
		{in: "$-2\r\n", err: "malformed bulk length"},
		{in: "$5\r\nab\r\n", err: "EOF"},
		{in: "?what\r\n", err: "unexpected reply"},
		{in: "+OK\n", err: "malformed reply"},
		{in: strings.Repeat("*1\r\n", maxWireDepth+1) + ":1\r\n", err: "malformed array"},
	} {
		got, err := readReply(bufio.NewReader(strings.NewReader(tc.in)), 0)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
}

// TestWireErrorsClassify: an error reply read off the append connection is
// told apart as go-redis's own are: a script to load, a server that cannot
// serve now (ErrUnavailable), a request that is wrong.
func TestWireErrorsClassify(t *testing.T) {
	if !redis.HasErrorPrefix(wireError("NOSCRIPT No matching script"), "NOSCRIPT") {
		t.Error("NOSCRIPT not recognized")
	}
	for _, msg := range []string{"LOADING Redis is loading", "READONLY You can't write against a read only replica.",
		"NOREPLICAS Not enough good replicas to write.", "OOM command not allowed", "BUSY Redis is busy running a script",
		"MASTERDOWN Link with MASTER is down", "ERR max number of clients reached"} {
		if !isTransient(wireError(msg)) {
			t.Errorf("%q is not transient", msg)
		}
	}
	for _, msg := range []string{"ERR tslm: no such channel", "WRONGTYPE Operation against a key holding the wrong kind of value"} {
		if isTransient(wireError(msg)) {
			t.Errorf("%q is transient", msg)
		}
	}
	var re redis.Error
	if !errors.As(error(wireError("ERR x")), &re) {
		t.Error("a wireError is not a redis.Error")
	}
}
