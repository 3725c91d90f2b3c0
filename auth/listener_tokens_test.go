package auth

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestListenerTokensMatch(t *testing.T) {
	set := NewListenerTokens([]Secret{"s3cret", "other-token"})
	for _, c := range []struct {
		presented string
		want      bool
	}{
		{"s3cret", true}, {"other-token", true},
		{"", false}, {"s3cre", false}, {"s3cret ", false}, {"S3CRET", false}, {"s3cretother-token", false},
	} {
		if got := set.Match(c.presented); got != c.want {
			t.Errorf("Match(%q) = %v, want %v", c.presented, got, c.want)
		}
	}
	if NewListenerTokens(nil) != nil {
		t.Error("no tokens gave a set: it would refuse everyone")
	}
	var none *ListenerTokens
	if none.Match("") || none.Match("s3cret") {
		t.Error("the nil set matched")
	}
}

func TestCheckListenerToken(t *testing.T) {
	for _, c := range []struct {
		token Secret
		says  string
	}{
		{"s3cret", ""}, {"a.b-c_d~e!#$%&'*+^`|", ""}, {Secret(strings.Repeat("x", MaxListenerTokenBytes)), ""},
		{"", "empty"}, {"two words", "at byte 3"}, {"a,b", "at byte 1"}, {"é", "at byte 0"},
		{Secret(strings.Repeat("x", MaxListenerTokenBytes+1)), "257 bytes"},
	} {
		err := CheckListenerToken(c.token)
		switch {
		case c.says == "" && err != nil:
			t.Errorf("%q refused: %v", c.token, err)
		case c.says != "" && (err == nil || !strings.Contains(err.Error(), c.says)):
			t.Errorf("%q: %v, want an error saying %q", c.token, err, c.says)
		case err != nil && len(c.token) > 2 && strings.Contains(err.Error(), string(c.token)):
			t.Errorf("the error quotes the token: %v", err)
		}
	}
}

// TestSecretNeverShows: a Secret in a struct printed with %v, %+v, %#v or
// %s, or logged by slog as an attribute or inside a struct, shows as
// redacted.
func TestSecretNeverShows(t *testing.T) {
	type config struct {
		Name   string
		Tokens []Secret
	}
	c := config{Name: "public", Tokens: []Secret{"s3cret"}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		if out := fmt.Sprintf(verb, c); strings.Contains(out, "s3cret") || !strings.Contains(out, "redacted") {
			t.Errorf("%s shows %s", verb, out)
		}
	}
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("config", "token", c.Tokens[0], "config", c, "tokens", c.Tokens)
	}
	if out := buf.String(); strings.Contains(out, "s3cret") {
		t.Errorf("slog shows the token:\n%s", out)
	}
}
