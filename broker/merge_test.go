package broker

import (
	"fmt"
	"testing"

	"github.com/tslm/tslm/backlog"
)

func id(ms uint64) backlog.ID { return backlog.ID{Ms: ms} }

func msg(ms uint64) *Publication { return &Publication{Channel: "c", ID: id(ms)} }

func gap(after, resume uint64) *Publication {
	return &Publication{Channel: "c", ID: id(after), Gap: true, Resume: id(resume)}
}

// gapHeldBefore is gap with Prev, the newest message held before resume.
func gapHeldBefore(after, resume, prev uint64) *Publication {
	p := gap(after, resume)
	p.Prev = id(prev)
	return p
}

// describe renders publications as "5" for a message and "gap5>7" for a
// gap after 5 resuming at 7.
func describe(pubs []*Publication) string {
	s := ""
	for i, p := range pubs {
		if i > 0 {
			s += " "
		}
		if p.Gap {
			s += fmt.Sprintf("gap%d>%d", p.ID.Ms, p.Resume.Ms)
		} else {
			s += fmt.Sprint(p.ID.Ms)
		}
	}
	return s
}

func TestNews(t *testing.T) {
	cases := []struct {
		name     string
		lastSent uint64
		p        *Publication
		want     string
	}{
		{"a newer message", 5, msg(6), "6"},
		{"the last message again", 5, msg(5), ""},
		{"an older message", 5, msg(3), ""},
		{"a gap after the last message", 5, gap(5, 9), "gap5>9"},
		// The reader's cursor is past its last message (an entry lost
		// before it subscribed): its loss starts after its own.
		{"a gap after a later message", 5, gap(7, 9), "gap5>9"},
		{"a gap after a later message, held before the resume unknown", 5, gapHeldBefore(7, 9, 0), "gap5>9"},
		// Its last message was the newest held before the first one after
		// the loss: it lost nothing (the loss of 6 and 7 was reported by
		// its subscribe).
		{"a gap after a later message, its last held before the resume", 5, gapHeldBefore(7, 9, 5), ""},
		{"a gap after a later message, a newer one held before the resume", 5, gapHeldBefore(7, 9, 6), "gap5>9"},
		{"a gap after a later message, an older one held before the resume", 5, gapHeldBefore(7, 9, 4), "gap5>9"},
		{"a gap after the last message, whatever was held before the resume", 5, gapHeldBefore(5, 9, 3), "gap5>9"},
		{"a gap from before, resuming past the next message", 5, gap(3, 9), "gap5>9"},
		{"a gap from before, resume unknown", 5, gap(3, 0), "gap5>0"},
		// Resume 6 is the first message held: if 6 is lastSent's
		// successor, nothing was lost to this subscriber.
		{"a gap from before, resuming at the next id", 5, &Publication{Channel: "c", ID: id(3), Gap: true, Resume: id(5).Next()}, ""},
		{"a gap from before, resuming at an older id", 5, gap(3, 4), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []*Publication
			if p := news(id(c.lastSent), c.p); p != nil {
				got = append(got, p)
			}
			if d := describe(got); d != c.want {
				t.Errorf("news(%d, %s) = %q, want %q", c.lastSent, describe([]*Publication{c.p}), d, c.want)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	cases := []struct {
		name     string
		lastSent uint64
		buffered []*Publication
		want     string
	}{
		{"nothing buffered", 5, nil, ""},
		{"all new", 5, []*Publication{msg(6), msg(7)}, "6 7"},
		{"the replay read some already", 5, []*Publication{msg(4), msg(5), msg(6), msg(7)}, "6 7"},
		{"all already replayed", 9, []*Publication{msg(6), msg(7)}, ""},
		{"a duplicate inside the buffer", 5, []*Publication{msg(6), msg(6), msg(7)}, "6 7"},
		{"a gap the replay is past", 5, []*Publication{gap(2, 4), msg(6)}, "6"},
		{"a gap the replay lost messages to", 5, []*Publication{gap(2, 8), msg(8)}, "gap5>8 8"},
		{"a gap after merged messages", 5, []*Publication{msg(6), gap(6, 9), msg(9)}, "6 gap6>9 9"},
		// The gap is restated after the last message merged before it, not
		// after where the merge started.
		{"an early gap after merged messages", 5, []*Publication{msg(6), msg(7), gap(4, 9), msg(9)}, "6 7 gap7>9 9"},
		// A replay that ended with the newest message held, below the
		// reader's lost cursor 7.
		{"a gap for entries lost before the subscribe", 5, []*Publication{gapHeldBefore(7, 9, 5), msg(9)}, "9"},
		{"a gap for its last message, lost since", 5, []*Publication{gapHeldBefore(7, 9, 4), msg(9)}, "gap5>9 9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := describe(merge(id(c.lastSent), c.buffered)); got != c.want {
				t.Errorf("merge = %q, want %q", got, c.want)
			}
		})
	}
}

func TestLiveBuffer(t *testing.T) {
	var b liveBuffer
	for i := range 3 {
		b.add(msg(uint64(i+1)), 3)
	}
	pubs, over := b.take()
	if describe(pubs) != "1 2 3" || over {
		t.Fatalf("3 of 3 = %q overflowed %v, want all, no overflow", describe(pubs), over)
	}
	for i := range 4 {
		b.add(msg(uint64(i+1)), 3)
	}
	b.add(msg(9), 3) // dropped too: the replay re-reads everything after its last
	if pubs, over = b.take(); pubs != nil || !over {
		t.Fatalf("4 of 3 = %q overflowed %v, want nothing, overflowed", describe(pubs), over)
	}
	b.add(msg(10), 3)
	if pubs, over = b.take(); describe(pubs) != "10" || over {
		t.Fatalf("after a take = %q overflowed %v, want a fresh buffer", describe(pubs), over)
	}
}

func TestNextStep(t *testing.T) {
	cases := []struct {
		buffered      int
		overflowed    bool
		overtakes     int
		max           int
		want          step
		wantOvertakes int
	}{
		{0, false, 0, 3, stepLive, 0},
		{2, false, 0, 3, stepMerge, 0},
		{2, false, 2, 3, stepMerge, 0}, // caught up: the count restarts
		{0, false, 2, 3, stepLive, 0},
		{0, true, 0, 3, stepReread, 1},
		{0, true, 1, 3, stepReread, 2},
		{0, true, 2, 3, stepGiveUp, 3},
		{0, true, 0, 1, stepGiveUp, 1},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d_%v_%d_of_%d", c.buffered, c.overflowed, c.overtakes, c.max), func(t *testing.T) {
			got, n := nextStep(c.buffered, c.overflowed, c.overtakes, c.max)
			if got != c.want || n != c.wantOvertakes {
				t.Errorf("nextStep = %v, %d; want %v, %d", got, n, c.want, c.wantOvertakes)
			}
		})
	}
}
