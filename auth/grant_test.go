package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/broker"
)

func TestReservedPrefixIsTheBrokers(t *testing.T) {
	if ReservedPrefix != broker.InboxPrefix {
		t.Fatalf("ReservedPrefix %q, broker.InboxPrefix %q", ReservedPrefix, broker.InboxPrefix)
	}
}

func TestOps(t *testing.T) {
	for o := OpSubscribe; o < opEnd; o++ {
		got, err := ParseOp(o.String())
		if err != nil || got != o {
			t.Errorf("ParseOp(%q) = %v, %v", o.String(), got, err)
		}
	}
	if _, err := ParseOp("delete"); err == nil {
		t.Error("ParseOp(delete) accepted")
	}
	s := Ops(OpPublish, OpServe)
	if !s.Has(OpPublish) || !s.Has(OpServe) || s.Has(OpSubscribe) || s.Has(0) || s.Has(opEnd) {
		t.Errorf("Ops(publish, serve) = %08b", s)
	}
	if Op(0).String() != "Op(0)" {
		t.Errorf("Op(0) = %s", Op(0))
	}
}

func TestPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"orders", "orders", true},
		{"orders", "orders2", false},
		{"orders", "order", false},
		{"orders.*", "orders.eu", true},
		{"orders.*", "orders.", true},
		{"orders.*", "orders", false},
		{"orders.*", "xorders.eu", false},
		{"*.eu", "orders.eu", true},
		{"*.eu", "orders.us", false},
		{"a*z", "az", true},
		{"a*z", "a-b-z", true},
		{"a*z", "a-b-zz", true},
		{"a*z", "a-b-za", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXcYb", false},
		{"*", "anything_at:all-1.2", true},
		{"*", "", false},                       // not a channel name
		{"*", "a{b}", false},                   // not a channel name
		{"*", "a\x00b", false},                 // not a channel name
		{"*", strings.Repeat("a", 129), false}, // too long
		{"*", "_inbox.abc", false},             // reserved
		{"_inbox.*", "_inbox.abc", false},      // reserved, even when named
		{"_inbox.abc", "_inbox.abc", false},    // reserved, even exactly
		{"_inbox*", "_inboxes", true},          // not the reserved prefix
		{"**", "x", true},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		if got := p.Match(tc.name); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
	if (Pattern{}).Match("x") {
		t.Error("the zero Pattern matched")
	}
}

func TestParsePatternRefuses(t *testing.T) {
	for _, s := range []string{"", strings.Repeat("a", 129), "a b", "a/b", "a?b", "a{b}", "é", "a\x00", "orders.>"} {
		_, err := ParsePattern(s)
		if err == nil {
			t.Errorf("ParsePattern(%q) accepted", s)
			continue
		}
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("ParsePattern(%q) quotes its input: %v", s, err)
		}
	}
	if _, err := ParsePattern(strings.Repeat("*", 128)); err != nil {
		t.Errorf("128 bytes refused: %v", err)
	}
}

func TestWildMatchIsNotExponential(t *testing.T) {
	pattern := "*a*a*a*a*a*a*b"
	name := strings.Repeat("a", 100_000)
	ok, steps := wildMatch(pattern, name)
	if ok {
		t.Fatal("matched")
	}
	if bound := (len(pattern) + 1) * (len(name) + 1); steps > bound {
		t.Fatalf("%d steps, over len(pattern)·len(name) = %d", steps, bound)
	}
	// The same through the public API, on the longest valid name.
	if MustParsePattern(pattern).Match(strings.Repeat("a", 128)) {
		t.Fatal("matched")
	}
	if !MustParsePattern(pattern).Match(strings.Repeat("a", 127) + "b") {
		t.Fatal("did not match")
	}
}

func TestAllows(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &Principal{
		Subject: "billing",
		Grants: []Grant{
			{Ops: Ops(OpPublish, OpCreate), Patterns: []Pattern{MustParsePattern("orders.*"), MustParsePattern("audit")}},
			{Ops: Ops(OpServe), Patterns: []Pattern{MustParsePattern("*")}},
		},
		Expires: now.Add(time.Hour),
	}
	for _, tc := range []struct {
		op      Op
		channel string
		at      time.Time
		want    bool
	}{
		{OpPublish, "orders.eu", now, true},
		{OpCreate, "audit", now, true},
		{OpServe, "anything", now, true},
		{OpSubscribe, "orders.eu", now, false}, // op not granted
		{OpRequest, "anything", now, false},    // op not granted
		{OpPublish, "payments", now, false},    // pattern mismatch
		{0, "orders.eu", now, false},           // no op
		{OpServe, "_inbox.s1", now, false},     // reserved
		{OpPublish, "orders.eu", now.Add(time.Hour - time.Nanosecond), true},
		{OpPublish, "orders.eu", now.Add(time.Hour), false}, // expiry edge
		{OpPublish, "orders.eu", now.Add(2 * time.Hour), false},
	} {
		if got := p.Allows(tc.op, tc.channel, tc.at); got != tc.want {
			t.Errorf("Allows(%v, %q, %v) = %v, want %v", tc.op, tc.channel, tc.at, got, tc.want)
		}
	}
	forever := &Principal{Subject: "x", Grants: p.Grants}
	if !forever.Allows(OpPublish, "audit", now.AddDate(100, 0, 0)) {
		t.Error("a principal without expiry expired")
	}
	var none *Principal
	if none.Allows(OpPublish, "audit", now) {
		t.Error("a nil principal was allowed")
	}
}
