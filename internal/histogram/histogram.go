// Package histogram counts observations into fixed buckets with plain
// atomics, so that hot paths can feed a Prometheus histogram without
// touching Prometheus: the gateway's collector reads Snapshots at scrape
// time (prometheus.MustNewConstHistogram).
//
// A Histogram is safe for concurrent use, but every Observe on a shared
// one is an atomic add on a shared cache line: on a path taken once per
// delivered message, give each connection its own and Merge their
// Snapshots at scrape. A Snapshot is a plain value, not safe for
// concurrent use.
package histogram

import (
	"math"
	"sync/atomic"
	"time"
)

// Histogram counts observations into the buckets of its bounds.
type Histogram struct {
	bounds []float64       // upper bounds, ascending; shared, never modified
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Uint64   // math.Float64bits of the sum
}

// New returns a histogram with the given upper bounds, which must be
// ascending; a last bucket, +Inf, takes what lies above them. bounds is
// kept, not copied: share one slice between histograms of one metric.
func New(bounds []float64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe counts v in the first bucket whose bound is at least v.
func (h *Histogram) Observe(v float64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// ObserveDuration observes d in seconds.
func (h *Histogram) ObserveDuration(d time.Duration) { h.Observe(d.Seconds()) }

// Snapshot returns the counts so far. Taken while observations go on, its
// sum may be off by the observations in flight; counts never go back.
func (h *Histogram) Snapshot() Snapshot {
	s := Snapshot{Bounds: h.bounds, Counts: make([]uint64, len(h.counts))}
	h.AddTo(&s)
	return s
}

// AddTo adds the counts so far to s, which must have h's bounds (a zero
// Snapshot takes them), without allocating once s has its counts.
func (h *Histogram) AddTo(s *Snapshot) {
	if s.Counts == nil {
		s.Bounds, s.Counts = h.bounds, make([]uint64, len(h.counts))
	}
	for i := range h.counts {
		s.Counts[i] += h.counts[i].Load()
	}
	s.Sum += math.Float64frombits(h.sum.Load())
}

// Snapshot is a histogram's counts at one moment.
type Snapshot struct {
	Bounds []float64
	Counts []uint64 // per bucket, not cumulative; len(Bounds)+1, the last +Inf
	Sum    float64
}

// Count is the number of observations.
func (s Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Merge adds o, which must have s's bounds (a zero s takes o's), to s.
func (s *Snapshot) Merge(o Snapshot) {
	if o.Counts == nil {
		return
	}
	if s.Counts == nil {
		s.Bounds, s.Counts = o.Bounds, make([]uint64, len(o.Counts))
	}
	for i, c := range o.Counts {
		s.Counts[i] += c
	}
	s.Sum += o.Sum
}

// Cumulative returns the count of observations at or below each bound, as
// prometheus.MustNewConstHistogram takes them (the +Inf bucket is Count).
func (s Snapshot) Cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(s.Bounds))
	var n uint64
	for i, b := range s.Bounds {
		n += s.Counts[i]
		out[b] = n
	}
	return out
}
