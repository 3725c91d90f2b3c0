package gateway

import (
	"fmt"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/ws"
)

// Config is the whole gateway's configuration. cmd/tslm fills it from
// TSLM_* environment variables (the env tags, without the prefix); the
// envDefault values are the documented defaults, repeated in README.md.
type Config struct {
	PublicAddrs   []string `env:"PUBLIC_ADDRS" envDefault:":8080"`
	InternalAddrs []string `env:"INTERNAL_ADDRS" envDefault:"127.0.0.1:8081"`
	PublicAllow   []string `env:"PUBLIC_ALLOW" envDefault:"subscribe"`
	RedisURL      string   `env:"REDIS_URL"`
	RedisPrefix   string   `env:"REDIS_PREFIX" envDefault:"tslm:"`

	MaxFrameBytes    int64    `env:"MAX_FRAME_BYTES" envDefault:"131072"`
	MaxDataBytes     int      `env:"MAX_DATA_BYTES" envDefault:"65536"`
	SendQueue        int      `env:"SEND_QUEUE" envDefault:"1024"`
	SendQueueBytes   int      `env:"SEND_QUEUE_BYTES" envDefault:"4194304"`
	MaxSubscriptions int      `env:"MAX_SUBSCRIPTIONS" envDefault:"100"`
	MaxConnections   int      `env:"MAX_CONNECTIONS" envDefault:"10000"`
	PublicRate       float64  `env:"PUBLIC_RATE" envDefault:"50"`
	PublicBurst      int      `env:"PUBLIC_BURST" envDefault:"100"`
	InternalRate     float64  `env:"INTERNAL_RATE" envDefault:"0"`
	InternalBurst    int      `env:"INTERNAL_BURST" envDefault:"0"`
	AllowedOrigins   []string `env:"ALLOWED_ORIGINS"`

	PingInterval  time.Duration `env:"PING_INTERVAL" envDefault:"25s"`
	PongTimeout   time.Duration `env:"PONG_TIMEOUT" envDefault:"10s"`
	WriteTimeout  time.Duration `env:"WRITE_TIMEOUT" envDefault:"10s"`
	ShutdownGrace time.Duration `env:"SHUTDOWN_GRACE" envDefault:"10s"`

	DefaultMaxLen         int64         `env:"DEFAULT_MAX_LEN" envDefault:"10000"`
	DefaultRetention      time.Duration `env:"DEFAULT_RETENTION" envDefault:"24h"`
	ChannelMaxLenLimit    int64         `env:"CHANNEL_MAX_LEN_LIMIT" envDefault:"1000000"`
	ChannelRetentionLimit time.Duration `env:"CHANNEL_RETENTION_LIMIT" envDefault:"720h"`
	MaxChannels           int           `env:"MAX_CHANNELS" envDefault:"100000"`
	ReplayBuffer          int           `env:"REPLAY_BUFFER" envDefault:"4096"`
	MaxLast               int           `env:"MAX_LAST" envDefault:"1000"`
	Readers               int           `env:"READERS" envDefault:"4"`
	ReaderChannels        int           `env:"READER_CHANNELS" envDefault:"100"`
	TrimInterval          time.Duration `env:"TRIM_INTERVAL" envDefault:"1m"`
	IdempotencyWindow     time.Duration `env:"IDEMPOTENCY_WINDOW" envDefault:"10m"`
	MaxIdempotencyKeys    int           `env:"MAX_IDEMPOTENCY_KEYS" envDefault:"100000"`

	LogLevel  string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"text"`
}

// Prefix is the environment variables' prefix.
const Prefix = "TSLM_"

// MaxIdempotencyWindow bounds TSLM_IDEMPOTENCY_WINDOW: a retry comes
// within minutes, and every key costs memory (Redis or the memory backlog)
// for the whole window.
const MaxIdempotencyWindow = 24 * time.Hour

// Validate checks what the env parser cannot, naming the variable at fault.
func (c *Config) Validate() error {
	positive := []struct {
		name string
		v    float64
	}{
		{"MAX_FRAME_BYTES", float64(c.MaxFrameBytes)},
		{"MAX_DATA_BYTES", float64(c.MaxDataBytes)},
		{"SEND_QUEUE", float64(c.SendQueue)},
		{"SEND_QUEUE_BYTES", float64(c.SendQueueBytes)},
		{"MAX_SUBSCRIPTIONS", float64(c.MaxSubscriptions)},
		{"MAX_CONNECTIONS", float64(c.MaxConnections)},
		{"PING_INTERVAL", float64(c.PingInterval)},
		{"PONG_TIMEOUT", float64(c.PongTimeout)},
		{"WRITE_TIMEOUT", float64(c.WriteTimeout)},
		{"SHUTDOWN_GRACE", float64(c.ShutdownGrace)},
		{"DEFAULT_MAX_LEN", float64(c.DefaultMaxLen)},
		{"DEFAULT_RETENTION", float64(c.DefaultRetention)},
		{"CHANNEL_MAX_LEN_LIMIT", float64(c.ChannelMaxLenLimit)},
		{"CHANNEL_RETENTION_LIMIT", float64(c.ChannelRetentionLimit)},
		{"MAX_CHANNELS", float64(c.MaxChannels)},
		{"REPLAY_BUFFER", float64(c.ReplayBuffer)},
		{"MAX_LAST", float64(c.MaxLast)},
		{"READERS", float64(c.Readers)},
		{"READER_CHANNELS", float64(c.ReaderChannels)},
		{"TRIM_INTERVAL", float64(c.TrimInterval)},
		{"IDEMPOTENCY_WINDOW", float64(c.IdempotencyWindow)},
		{"MAX_IDEMPOTENCY_KEYS", float64(c.MaxIdempotencyKeys)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("%s%s must be positive", Prefix, p.name)
		}
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"PUBLIC_RATE", c.PublicRate}, {"PUBLIC_BURST", float64(c.PublicBurst)}, {"INTERNAL_RATE", c.InternalRate}, {"INTERNAL_BURST", float64(c.InternalBurst)}} {
		if p.v < 0 {
			return fmt.Errorf("%s%s must not be negative (0 means unlimited)", Prefix, p.name)
		}
	}
	switch {
	case int64(c.MaxDataBytes) >= c.MaxFrameBytes:
		return fmt.Errorf("%sMAX_DATA_BYTES (%d) must be less than %sMAX_FRAME_BYTES (%d): a publish frame wraps its data", Prefix, c.MaxDataBytes, Prefix, c.MaxFrameBytes)
	case c.DefaultMaxLen > c.ChannelMaxLenLimit:
		return fmt.Errorf("%sDEFAULT_MAX_LEN exceeds %sCHANNEL_MAX_LEN_LIMIT", Prefix, Prefix)
	case c.DefaultRetention > c.ChannelRetentionLimit:
		return fmt.Errorf("%sDEFAULT_RETENTION exceeds %sCHANNEL_RETENTION_LIMIT", Prefix, Prefix)
	case len(c.PublicAddrs) == 0:
		return fmt.Errorf("%sPUBLIC_ADDRS must name at least one address", Prefix)
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("%sLOG_FORMAT must be text or json", Prefix)
	case c.IdempotencyWindow > MaxIdempotencyWindow:
		return fmt.Errorf("%sIDEMPOTENCY_WINDOW may be at most %s: every key is kept that long", Prefix, MaxIdempotencyWindow)
	}
	if err := backlog.CheckKeyPrefix(c.RedisPrefix); err != nil {
		return fmt.Errorf("%sREDIS_PREFIX: %w", Prefix, err)
	}
	if _, err := ws.ParseOps(c.PublicAllow); err != nil {
		return fmt.Errorf("%sPUBLIC_ALLOW: %w", Prefix, err)
	}
	if _, err := c.Level(); err != nil {
		return err
	}
	return nil
}
