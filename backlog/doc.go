// Package backlog is the durable per-channel message log: append, range,
// tail, follow, trim and loss detection, behind one interface (Log) with an
// in-memory implementation (Memory) and a Redis Streams one.
//
// Message IDs have the Redis Stream form "<ms>-<seq>" in both, and the two
// implementations are held to the same semantics by the conformance suite in
// backlogtest. Both also hold a request queue per channel (Requests), consumed
// by groups of workers as Redis consumer groups are. All exported types are safe for concurrent use.
package backlog
