package backlog

import "time"

// WithDefaults returns c with every zero field set to its documented
// default, as NewMemory applies them.
func (c MemoryConfig) WithDefaults() MemoryConfig {
	if c.MaxChannels <= 0 {
		c.MaxChannels = defaultMaxChannels
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
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
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

// defaultBlockInterval bounds the CLIENT UNBLOCK of a cancelled Claim.
const defaultBlockInterval = 5 * time.Second

// DefaultPollInterval is RedisConfig.PollInterval's default: short enough
// that a plain XADD with nothing after it reaches subscribers soon, long
// enough that the poll of 10 000 channels costs Redis little (docs/redis.md).
const DefaultPollInterval = 2 * time.Second
