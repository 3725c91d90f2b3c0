package broker

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// checkMembers asserts that c's fan-out sees exactly want, in any order,
// and that every member knows its index.
func checkMembers(t *testing.T, c *channelState, want map[*Subscription]bool) {
	t.Helper()
	got := c.subscribers()
	defer c.fanned()
	if len(got) != len(want) {
		t.Fatalf("fan-out sees %d subscribers, want %d", len(got), len(want))
	}
	seen := make(map[*Subscription]bool, len(got))
	for _, s := range got {
		if !want[s] || seen[s] {
			t.Fatalf("fan-out sees %p: subscribed %v, seen before %v", s, want[s], seen[s])
		}
		seen[s] = true
	}
	if tail := got[len(got):cap(got)]; slices.ContainsFunc(tail, func(s *Subscription) bool { return s != nil }) {
		t.Fatalf("the fan-out's copy keeps subscriptions that left: %v", tail)
	}
	for i, s := range c.members {
		if s.index != i {
			t.Fatalf("member at %d has index %d", i, s.index)
		}
	}
}

func TestMembersAddRemove(t *testing.T) {
	c := &channelState{}
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[*Subscription]bool{}
	var in []*Subscription
	// Grow to 300, shrink to 0 (through the slice's shrinking), grow again,
	// removing from random places, and look after every step, as the
	// fan-out would between two batches.
	for _, target := range []int{300, 0, 150, 20} {
		for len(in) != target {
			if len(in) < target {
				s := &Subscription{}
				c.add(s)
				in, want[s] = append(in, s), true
			} else {
				i := rng.IntN(len(in))
				s := in[i]
				c.remove(s)
				in, want[s] = slices.Delete(in, i, i+1), false
				delete(want, s)
				c.remove(s) // a second remove is a no-op
			}
			checkMembers(t, c, want)
		}
	}
	c.remove(&Subscription{}) // never added: nothing happens
	checkMembers(t, c, want)
}

// A snapshot handed to a fan-out stays as it was while members change,
// until the fan-out is done with it.
func TestSnapshotIsStable(t *testing.T) {
	c := &channelState{}
	a, b := &Subscription{}, &Subscription{}
	c.add(a)
	c.add(b)
	snap := c.subscribers()
	c.remove(a)
	c.add(&Subscription{})
	if !slices.Equal(snap, []*Subscription{a, b}) {
		t.Fatalf("snapshot changed under the fan-out: %v", snap)
	}
	c.fanned()
	got := c.subscribers()
	c.fanned()
	if len(got) != 2 || slices.Contains(got, a) {
		t.Fatalf("new snapshot %v still holds the removed subscriber or misses the added one", got)
	}
}

// The fan-out's copy keeps no subscription that left alive, whether it
// left during a fan-out or after the last one (a channel gone quiet).
func TestSnapshotForgetsWhoLeft(t *testing.T) {
	c := &channelState{}
	subs := make([]*Subscription, 100)
	for i := range subs {
		subs[i] = &Subscription{}
		c.add(subs[i])
	}
	held := func() (n int) {
		for _, s := range c.snapshot[:cap(c.snapshot)] {
			if s != nil && (s.index >= len(c.members) || c.members[s.index] != s) {
				n++
			}
		}
		return n
	}
	c.subscribers()
	c.remove(subs[0]) // during a fan-out
	c.fanned()
	if n := held(); n != 0 {
		t.Fatalf("after a fan-out, its copy holds %d subscriptions that left", n)
	}
	c.subscribers()
	c.fanned()
	for _, s := range subs[1:99] { // after it
		c.remove(s)
	}
	if n := held(); n != 0 {
		t.Fatalf("on a quiet channel, the last copy holds %d subscriptions that left", n)
	}
	checkMembers(t, c, map[*Subscription]bool{subs[99]: true})
}

// Subscribing and unsubscribing on a channel with many subscribers
// allocates nothing once the member slice has grown: no copy of the list;
// nor does the fan-out's copy of it, which reuses its array.
func TestAddRemoveDoNotCopy(t *testing.T) {
	c := &channelState{}
	for range 5000 {
		c.add(&Subscription{})
	}
	c.subscribers()
	c.fanned()
	s := &Subscription{}
	for _, tc := range []struct {
		name   string
		fanout bool
	}{{"add+remove", false}, {"add+remove+fan-out", true}} {
		allocs := testing.AllocsPerRun(100, func() {
			c.add(s)
			c.remove(s)
			if tc.fanout {
				c.subscribers()
				c.fanned()
			}
		})
		if allocs != 0 {
			t.Errorf("%s allocates %v times, want 0", tc.name, allocs)
		}
	}
}
