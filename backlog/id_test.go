package backlog

import "testing"

func TestParseID(t *testing.T) {
	valid := []struct {
		in   string
		want ID
	}{
		{"0-0", ID{}},
		{"1732480000123-0", ID{1732480000123, 0}},
		{"1-18446744073709551615", ID{1, 1<<64 - 1}},
	}
	for _, c := range valid {
		got, err := ParseID(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseID(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if got.String() != c.in {
			t.Errorf("String() = %q, want %q", got.String(), c.in)
		}
	}
	for _, in := range []string{"", "-", "1", "1-", "-1", "01-0", "1-01", "+1-0", "1-0-0", " 1-0", "a-b", "18446744073709551616-0", "$", "*"} {
		if id, err := ParseID(in); err == nil {
			t.Errorf("ParseID(%q) = %v, want an error", in, id)
		}
	}
}

func TestIDOrder(t *testing.T) {
	ids := []ID{{0, 0}, {0, 1}, {1, 0}, {1, 5}, {2, 0}}
	for i := 1; i < len(ids); i++ {
		if !ids[i-1].Less(ids[i]) || ids[i].Less(ids[i-1]) {
			t.Errorf("%v and %v misordered", ids[i-1], ids[i])
		}
		if ids[i-1].Next().Compare(ids[i]) > 0 {
			t.Errorf("%v.Next() = %v skips past %v", ids[i-1], ids[i-1].Next(), ids[i])
		}
	}
	if got := (ID{3, 1<<64 - 1}).Next(); got != (ID{4, 0}) {
		t.Errorf("Next at the sequence limit = %v", got)
	}
}

func TestPrev(t *testing.T) {
	for _, c := range []struct{ id, want ID }{
		{ID{5, 3}, ID{5, 2}},
		{ID{5, 0}, ID{4, 1<<64 - 1}},
		{ID{0, 1}, Zero},
		{Zero, Zero},
	} {
		if got := c.id.Prev(); got != c.want {
			t.Errorf("%v.Prev() = %v, want %v", c.id, got, c.want)
		}
		if !c.id.IsZero() && c.id.Prev().Next() != c.id {
			t.Errorf("%v.Prev().Next() = %v", c.id, c.id.Prev().Next())
		}
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"0-0", "1732480000123-7", "1-", "01-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err == nil && id.String() != s {
			t.Fatalf("ParseID(%q) round-trips to %q", s, id.String())
		}
	})
}

func TestValidChannel(t *testing.T) {
	long := make([]byte, MaxChannelLen)
	for i := range long {
		long[i] = 'x'
	}
	for _, ok := range []string{"prices", "a", "A.b_c:d-9", string(long)} {
		if !ValidChannel(ok) {
			t.Errorf("ValidChannel(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", string(long) + "x", "a b", "a/b", "é", "{x}", "a*"} {
		if ValidChannel(bad) {
			t.Errorf("ValidChannel(%q) = true", bad)
		}
	}
}
