package histogram

import (
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestObserveBuckets(t *testing.T) {
	h := New([]float64{1, 5, 10})
	for _, v := range []float64{-1, 0, 1, 1.5, 5, 7, 10, 11, 1e9} {
		h.Observe(v)
	}
	s := h.Snapshot()
	if want := []uint64{3, 2, 2, 2}; !reflect.DeepEqual(s.Counts, want) {
		t.Errorf("counts %v, want %v (a bound belongs to its bucket; above the last is +Inf)", s.Counts, want)
	}
	if s.Count() != 9 {
		t.Errorf("Count() = %d, want 9", s.Count())
	}
	if want := -1 + 0 + 1 + 1.5 + 5 + 7 + 10 + 11 + 1e9; s.Sum != want {
		t.Errorf("Sum = %v, want %v", s.Sum, want)
	}
	if want := map[float64]uint64{1: 3, 5: 5, 10: 7}; !reflect.DeepEqual(s.Cumulative(), want) {
		t.Errorf("Cumulative() = %v, want %v", s.Cumulative(), want)
	}
}

func TestMergeAndAddTo(t *testing.T) {
	bounds := []float64{1}
	a, b := New(bounds), New(bounds)
	a.Observe(0.5)
	b.Observe(2)
	b.ObserveDuration(1500 * time.Millisecond)

	var total Snapshot
	total.Merge(Snapshot{}) // nothing: stays zero
	if total.Counts != nil {
		t.Fatalf("merging an empty snapshot gave %v", total)
	}
	total.Merge(a.Snapshot())
	b.AddTo(&total)
	if want := []uint64{1, 2}; !reflect.DeepEqual(total.Counts, want) || total.Sum != 4 {
		t.Errorf("merged %v sum %v, want %v sum 4", total.Counts, total.Sum, want)
	}
	var fresh Snapshot
	a.AddTo(&fresh)
	if fresh.Count() != 1 || fresh.Bounds[0] != 1 {
		t.Errorf("AddTo a zero snapshot gave %+v", fresh)
	}
}

// TestConcurrentObserve: no observation is lost to a race on the sum or
// the counts (run with -race).
func TestConcurrentObserve(t *testing.T) {
	h := New([]float64{1})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				h.Observe(1)
			}
		})
	}
	wg.Wait()
	if s := h.Snapshot(); s.Count() != 4000 || s.Sum != 4000 {
		t.Errorf("count %d sum %v, want 4000 and 4000", s.Count(), s.Sum)
	}
}

func TestObserveAllocs(t *testing.T) {
	h := New([]float64{0.001, 0.01, 0.1, 1})
	if n := testing.AllocsPerRun(1000, func() { h.Observe(0.05) }); n != 0 {
		t.Errorf("Observe allocates %v times", n)
	}
}
