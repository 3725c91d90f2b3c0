package bearer

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/tslm/tslm/auth"
)

func TestFromRequest(t *testing.T) {
	for _, tc := range []struct {
		headers     []string
		cred        string
		present, ok bool
	}{
		{nil, "", false, false},
		{[]string{"Bearer abc.def.ghi"}, "abc.def.ghi", true, true},
		{[]string{"bearer  k3y "}, "k3y", true, true},
		{[]string{"Bearer"}, "", true, false},
		{[]string{"Bearer "}, "", true, false},
		{[]string{"Basic YWxpY2U6cHc="}, "", true, false},
		{[]string{"Bearer a b"}, "", true, false},
		{[]string{"Bearer a", "Bearer b"}, "", true, false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		for _, h := range tc.headers {
			r.Header.Add("Authorization", h)
		}
		cred, present, ok := FromRequest(r)
		if cred != tc.cred || present != tc.present || ok != tc.ok {
			t.Errorf("%q: %q, %v, %v; want %q, %v, %v", tc.headers, cred, present, ok, tc.cred, tc.present, tc.ok)
		}
	}
}

func TestChallenge(t *testing.T) {
	if got := Challenge(""); got != "Bearer" {
		t.Errorf("Challenge(\"\") = %q", got)
	}
	got := Challenge("bad \"kid\"\n\\é")
	want := `Bearer error="invalid_token", error_description="bad  kid    "`
	if got != want {
		t.Errorf("Challenge = %q, want %q", got, want)
	}
}

func TestRefusal(t *testing.T) {
	refused := fmt.Errorf("%w: token expired", auth.ErrUnauthenticated)
	if msg, checked := Refusal(refused); !checked || msg != "credentials refused: token expired" {
		t.Errorf("Refusal(refused) = %q, %v", msg, checked)
	}
	if msg, checked := Refusal(errors.New("dial tcp 10.0.0.1:443: refused")); checked || msg != "credentials refused: they could not be checked; retry later" {
		t.Errorf("Refusal(unreachable) = %q, %v: the client must not see the cause", msg, checked)
	}
}
