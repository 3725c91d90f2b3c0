package backlog

import "time"

// WithDefaults returns c with every zero field set to its documented
// default, as NewMemory applies them.
func (c MemoryConfig) WithDefaults() MemoryConfig {
	if c.MaxChannels <= 0 {
		c.MaxChannels = defaultMaxChannels
	}
	if c.BlockInterval <= 0 {
		c.BlockInterval = defaultBlockInterval
	}
	if c.MaxIdempotencyKeys <= 0 {
		c.MaxIdempotencyKeys = 100_000
	}
	if c.MaxRequests <= 0 {
		c.MaxRequests = DefaultMaxRequests
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// WithDefaults returns c with every zero field set to its documented
// default, as NewRedis applies them.
func (c RedisConfig) WithDefaults() RedisConfig {
	if c.KeyPrefix == "" {
		c.KeyPrefix = "tslm:"
	}
	if c.BlockInterval <= 0 {
		c.BlockInterval = defaultBlockInterval
	}
	if c.IdleReaders <= 0 {
		c.IdleReaders = 16
	}
	if c.MaxRequests <= 0 {
		c.MaxRequests = DefaultMaxRequests
	}
	if c.MaxChannels <= 0 {
		c.MaxChannels = defaultMaxChannels
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// defaultMaxChannels is both backlogs' channel limit by default.
const defaultMaxChannels = 100_000

// defaultBlockInterval is how long a Read waits for news before returning
// empty, in both backlogs: long enough that an idle replica costs little,
// short enough that a lost wake-up is noticed soon.
const defaultBlockInterval = 5 * time.Second
