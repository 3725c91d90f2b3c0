package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.PublicAddrs, ","); got != ":8080" {
		t.Errorf("public addrs = %q, want :8080", got)
	}
	if got := strings.Join(cfg.InternalAddrs, ","); got != "127.0.0.1:8081" {
		t.Errorf("internal addrs = %q, want 127.0.0.1:8081", got)
	}
	if cfg.RedisURL != "" || cfg.ShutdownGrace != 10*time.Second || cfg.SendQueue != 1024 {
		t.Errorf("defaults = %+v", cfg)
	}
}

func TestLoadConfigParsesLists(t *testing.T) {
	cfg, err := loadConfig(map[string]string{
		"TSLM_PUBLIC_ADDRS": "127.0.0.1:9000,[::1]:9000",
		"TSLM_PUBLIC_ALLOW": "subscribe, publish",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.PublicAddrs) != 2 || cfg.PublicAddrs[1] != "[::1]:9000" {
		t.Errorf("public addrs = %q", cfg.PublicAddrs)
	}
}

// TestLoadConfigNamesTheVariable holds every start-up error to naming the
// variable to fix.
func TestLoadConfigNamesTheVariable(t *testing.T) {
	cases := map[string]string{
		"TSLM_MAX_FRAME_BYTES":         "lots",
		"TSLM_PING_INTERVAL":           "soon",
		"TSLM_SEND_QUEUE":              "-1",
		"TSLM_MAX_CONNECTIONS":         "0",
		"TSLM_PUBLIC_RATE":             "-3",
		"TSLM_PUBLIC_ALLOW":            "subscribe,delete",
		"TSLM_LOG_LEVEL":               "loud",
		"TSLM_LOG_FORMAT":              "xml",
		"TSLM_MAX_DATA_BYTES":          "200000", // not less than the frame limit
		"TSLM_DEFAULT_MAX_LEN":         "2000000",
		"TSLM_SHUTDOWN_GRACE":          "0s",
		"TSLM_CHANNEL_RETENTION_LIMIT": "1h", // below the default retention
		"TSLM_ALLOWED_ORIGINS":         "example.com",
		"TSLM_HTTP_IDLE_TIMEOUT":       "0s",
		"TSLM_HTTP_READ_TIMEOUT":       "-1s",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := loadConfig(map[string]string{name: value})
			if err == nil {
				t.Fatalf("%s=%s accepted", name, value)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%s: error %q does not name the variable", name, value, err)
			}
		})
	}
}
