package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram counts latencies in buckets about 1.6 % wide (64 per power
// of two), with atomic counters so that every subscriber records into one
// without a lock.
type histogram struct {
	buckets [64 * 60]atomic.Uint64
	n       atomic.Uint64
	max     atomic.Int64
}

const subBuckets = 64

func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	e := bits.Len64(v) - 7 // v>>e lies in [64, 128)
	return (e+1)*subBuckets + int(v>>e) - subBuckets
}

// lowest is the smallest value of bucket i.
func lowest(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	e := i/subBuckets - 1
	return uint64(i%subBuckets+subBuckets) << e
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0 // clocks of one machine; a negative is rounding
	}
	h.buckets[bucketOf(uint64(d))].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// quantile returns the latency under which a fraction q of the recorded
// ones lie (the middle of its bucket), 0 when none were recorded.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n-1)) + 1
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			lo, hi := lowest(i), lowest(i+1)
			return time.Duration(lo + (hi-lo)/2)
		}
	}
	return time.Duration(h.max.Load())
}

// Latency is the end-to-end latency of a run, in milliseconds: from the
// publisher's clock in the payload to the subscriber's on receipt.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
}

func (h *histogram) summary() Latency {
	ms := func(d time.Duration) float64 { return round3(float64(d) / 1e6) }
	return Latency{P50: ms(h.quantile(0.5)), P90: ms(h.quantile(0.9)), P99: ms(h.quantile(0.99)),
		P999: ms(h.quantile(0.999)), Max: ms(time.Duration(h.max.Load()))}
}
