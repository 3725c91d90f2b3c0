// Package envconfig reads a replica's configuration from TSLM_* environment
// variables into gateway.Config. It is the only place that knows the
// variables' names; every default lives with the package that applies it,
// and an unset variable leaves its field zero so that default applies.
package envconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/ws"
)

// Prefix starts every variable's name.
const Prefix = "TSLM_"

// Vars are the variables, each named by its env tag after Prefix. A field
// named like a gateway.Config field is copied into it; the others belong to
// the process (logging).
type Vars struct {
	PublicAddrs   []string `env:"PUBLIC_ADDRS"`
	InternalAddrs []string `env:"INTERNAL_ADDRS"`
	PublicAllow   []string `env:"PUBLIC_ALLOW"`
	RedisURL      string   `env:"REDIS_URL"`
	RedisPrefix   string   `env:"REDIS_PREFIX"`

	MaxFrameBytes    int64    `env:"MAX_FRAME_BYTES"`
	MaxDataBytes     int      `env:"MAX_DATA_BYTES"`
	SendQueue        int      `env:"SEND_QUEUE"`
	SendQueueBytes   int      `env:"SEND_QUEUE_BYTES"`
	MaxSubscriptions int      `env:"MAX_SUBSCRIPTIONS"`
	MaxConnections   int      `env:"MAX_CONNECTIONS"`
	PublicRate       float64  `env:"PUBLIC_RATE"`
	PublicBurst      int      `env:"PUBLIC_BURST"`
	InternalRate     float64  `env:"INTERNAL_RATE"`
	InternalBurst    int      `env:"INTERNAL_BURST"`
	AllowedOrigins   []string `env:"ALLOWED_ORIGINS"`

	PingInterval     time.Duration `env:"PING_INTERVAL"`
	PongTimeout      time.Duration `env:"PONG_TIMEOUT"`
	WriteTimeout     time.Duration `env:"WRITE_TIMEOUT"`
	ShutdownGrace    time.Duration `env:"SHUTDOWN_GRACE"`
	DrainDelay       time.Duration `env:"DRAIN_DELAY"`
	HTTPIdleTimeout  time.Duration `env:"HTTP_IDLE_TIMEOUT"`
	HTTPReadTimeout  time.Duration `env:"HTTP_READ_TIMEOUT"`
	OperationTimeout time.Duration `env:"OPERATION_TIMEOUT"`

	DefaultMaxLen         int64         `env:"DEFAULT_MAX_LEN"`
	DefaultRetention      time.Duration `env:"DEFAULT_RETENTION"`
	ChannelMaxLenLimit    int64         `env:"CHANNEL_MAX_LEN_LIMIT"`
	ChannelRetentionLimit time.Duration `env:"CHANNEL_RETENTION_LIMIT"`
	MaxChannels           int           `env:"MAX_CHANNELS"`
	ReplayBuffer          int           `env:"REPLAY_BUFFER"`
	ReplayPage            int           `env:"REPLAY_PAGE"`
	ReplayPageBytes       int           `env:"REPLAY_PAGE_BYTES"`
	ReplayBytes           int64         `env:"REPLAY_BYTES"`
	ReplayWait            time.Duration `env:"REPLAY_WAIT"`
	ReplayOvertakes       int           `env:"REPLAY_OVERTAKES"`
	MaxLast               int           `env:"MAX_LAST"`
	ReadBatch             int           `env:"READ_BATCH"`
	PollInterval          time.Duration `env:"POLL_INTERVAL"`
	TrimInterval          time.Duration `env:"TRIM_INTERVAL"`
	MaxReadLimit          int           `env:"MAX_READ_LIMIT"`
	MaxListLimit          int           `env:"MAX_LIST_LIMIT"`
	IdempotencyWindow     time.Duration `env:"IDEMPOTENCY_WINDOW"`
	MaxIdempotencyKeys    int           `env:"MAX_IDEMPOTENCY_KEYS"`

	RequestTimeout      time.Duration `env:"REQUEST_TIMEOUT"`
	MaxRequestTimeout   time.Duration `env:"MAX_REQUEST_TIMEOUT"`
	MaxInflightRequests int           `env:"MAX_INFLIGHT_REQUESTS"`
	SessionTTL          time.Duration `env:"SESSION_TTL"`
	SessionReplies      int64         `env:"SESSION_REPLIES"`
	ServeInflight       int           `env:"SERVE_INFLIGHT"`
	RequestReclaimAfter time.Duration `env:"REQUEST_RECLAIM_AFTER"`
	MaxQueuedRequests   int           `env:"MAX_QUEUED_REQUESTS"`

	PublicAuth          string        `env:"PUBLIC_AUTH"`
	InternalAuth        string        `env:"INTERNAL_AUTH"`
	AuthTimeout         time.Duration `env:"AUTH_TIMEOUT"`
	OIDCIssuer          string        `env:"OIDC_ISSUER"`
	OIDCAudience        string        `env:"OIDC_AUDIENCE"`
	OIDCGrantsClaim     string        `env:"OIDC_GRANTS_CLAIM"`
	OIDCRefresh         time.Duration `env:"OIDC_REFRESH"`
	PublicTLSCert       string        `env:"PUBLIC_TLS_CERT"`
	PublicTLSKey        string        `env:"PUBLIC_TLS_KEY"`
	InternalTLSCert     string        `env:"INTERNAL_TLS_CERT"`
	InternalTLSKey      string        `env:"INTERNAL_TLS_KEY"`
	TrustedProxies      []string      `env:"TRUSTED_PROXIES"`
	MaxConnectionsPerIP int           `env:"MAX_CONNECTIONS_PER_IP"`
	PublicAuthTokens    []auth.Secret `env:"PUBLIC_AUTH_TOKENS"`
	InternalAuthTokens  []auth.Secret `env:"INTERNAL_AUTH_TOKENS"`
	HandshakeTimeout    time.Duration `env:"HANDSHAKE_TIMEOUT"`
	SendQueueBudget     int64         `env:"SEND_QUEUE_BUDGET"`

	Demo      bool  `env:"DEMO"`
	Pprof     bool  `env:"PPROF"`
	AccessLog *bool `env:"ACCESS_LOG"`

	LogLevel  string `env:"LOG_LEVEL"`
	LogFormat string `env:"LOG_FORMAT"`
	// Config names the TOML config file (package config), which cmd/tslm
	// reads before the variables.
	Config string `env:"CONFIG"`
}

// processOnly are the Vars fields that are not gateway.Config's.
var processOnly = []string{"LogLevel", "LogFormat", "Config"}

// ConfigVar names the config file, which cmd/tslm reads before LoadOver.
const ConfigVar = Prefix + "CONFIG"

// notVariables are the gateway.Config fields no variable sets: Load
// fills Names itself, and the others come from the config file only
// (the process-wide limits' variables clear the file's per-listener
// values, and TSLM_PUBLIC_ADDRS clears PublicOff: see overListeners).
var notVariables = []string{"Names", "Publishers", "Channels", "PublicLimits", "InternalLimits", "PublicOff", "Listeners"}

// secretVars are the variables whose values are never repeated in an
// error.
var secretVars = []string{"PUBLIC_AUTH_TOKENS", "INTERNAL_AUTH_TOKENS"}

// emptyMeansNone are the variables for which an empty value is meaningful:
// an empty list of extra origins allows the server's own origin only. Every
// other variable set to "" is an error, since an empty value is far more
// often a templating slip (TSLM_X=${UNSET}) than a wish for the default.
var emptyMeansNone = []string{"ALLOWED_ORIGINS"}

// zeroMeansUnlimited are the variables for which 0 is a value rather than
// a mistake. Every other number or duration set to 0 is an error: unset
// the variable for its default.
var zeroMeansUnlimited = []string{"PUBLIC_RATE", "INTERNAL_RATE"}

// zeroIsAValue names the variables whose 0 means none rather than a slip:
// TSLM_DRAIN_DELAY=0s drains at once, as a replica no balancer checks may.
var zeroIsAValue = []string{"DRAIN_DELAY"}

// Settings is what Load read.
type Settings struct {
	Gateway   gateway.Config
	LogLevel  slog.Level
	LogFormat string // "text" or "json"
	// ConfigFile is TSLM_CONFIG's value: the config file the settings
	// were merged onto, or "".
	ConfigFile string
	// Warnings are worth logging at start but not worth refusing it:
	// variables with the prefix that no setting has (misspellings).
	Warnings []string
}

// Load reads the variables from environ (nil: the process's environment)
// and validates them. Every error names the variable at fault.
func Load(environ map[string]string) (Settings, error) {
	return LoadOver(gateway.Config{}, environ)
}

// LoadOver is Load on top of base, a config file's settings (see package
// config): every variable that is set replaces base's value of its
// setting, and the others leave it. The result is validated whole, so a
// variable may fix or break what the file set; an error about a value that
// came from the file says so.
func LoadOver(base gateway.Config, environ map[string]string) (Settings, error) {
	if environ == nil {
		environ = Environ()
	}
	known := names()
	var st Settings
	var errs []error
	for _, key := range sortedKeys(environ) {
		name, ok := strings.CutPrefix(key, Prefix)
		if !ok {
			continue
		}
		if !slices.Contains(known, name) {
			st.Warnings = append(st.Warnings, unknownWarning(key, known))
			continue
		}
		if strings.TrimSpace(environ[key]) == "" && !slices.Contains(emptyMeansNone, name) {
			errs = append(errs, fmt.Errorf("%s is set but empty: unset it for its default, or give a value", key))
		}
	}
	if len(errs) > 0 {
		return st, errors.Join(errs...)
	}
	// An empty list that means none is no list at all: the parser would
	// read it as one empty entry.
	given := environ
	environ = maps.Clone(environ)
	for _, name := range emptyMeansNone {
		if strings.TrimSpace(environ[Prefix+name]) == "" {
			delete(environ, Prefix+name)
		}
	}
	vars, err := env.ParseAsWithOptions[Vars](env.Options{Prefix: Prefix, Environment: environ})
	if err != nil {
		return st, nameVariables(err)
	}
	if err := checkValues(&vars, environ); err != nil {
		return st, err
	}
	st.Gateway = over(base, vars, given)
	overListeners(&st.Gateway, given)
	st.ConfigFile = vars.Config
	// Refusals sent to clients and operators name the variable to set.
	st.Gateway.Names = ws.SettingNames{
		MaxConnections:      Prefix + "MAX_CONNECTIONS",
		AllowedOrigins:      Prefix + "ALLOWED_ORIGINS",
		MaxConnectionsPerIP: Prefix + "MAX_CONNECTIONS_PER_IP",
	}
	if err := st.readLogging(vars); err != nil {
		return st, err
	}
	resolved := st.Gateway.WithDefaults()
	if err := resolved.Validate(); err != nil {
		return st, explainFrom(err, base, environ)
	}
	return st, nil
}

// explainFrom is Explain, saying when the value at fault is the config
// file's rather than the variable's.
func explainFrom(err error, base gateway.Config, environ map[string]string) error {
	var ce *gateway.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	v, ok := variableOf(ce.Field)
	if !ok {
		return Explain(err) // a setting only the file has
	}
	if _, set := environ[v]; !set {
		if f := reflect.ValueOf(base).FieldByName(ce.Field); f.IsValid() && !f.IsZero() {
			ce = &gateway.ConfigError{Field: ce.Field, Related: ce.Related, Err: fmt.Errorf("%w (the value is the %s file's; the variable overrides it)", ce.Err, ConfigVar)}
		}
	}
	return Explain(ce)
}

// Explain rewrites a *gateway.ConfigError, which names a Config field, to
// name the variable that sets it; other errors pass through.
func Explain(err error) error {
	var ce *gateway.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	v, ok := variableOf(ce.Field)
	if !ok {
		v, ok = fileSetting(ce.Field)
	}
	if !ok {
		return err
	}
	r, ok := variableOf(ce.Related)
	if !ok {
		r, ok = fileSetting(ce.Related)
	}
	if ok {
		return fmt.Errorf("%s: %w (see %s)", v, ce.Err, r)
	}
	return fmt.Errorf("%s: %w", v, ce.Err)
}

// fileSetting names a setting only the config file sets per listener,
// such as "PublicLimits.MaxFrameBytes", the way the file writes it.
func fileSetting(field string) (string, bool) {
	keys := map[string]string{"MaxFrameBytes": "max_frame_size", "MaxDataBytes": "max_message_size", "MaxConnections": "max_connections",
		"SendQueue": "channel_buffer_size", "MaxConnectionsPerIP": "max_connections_per_ip", "AuthTokens": "auth_tokens",
		"Auth": "auth", "Allow": "default_endpoint_permissions", "Rate": "rate_limit_per_second", "TLSCert": "tls_cert", "TLSKey": "tls_key"}
	owner, f, ok := strings.Cut(field, ".")
	if !ok {
		return "", false
	}
	f = strings.TrimPrefix(f, "Limits.")
	name := ""
	switch {
	case owner == "PublicLimits":
		name = "public"
	case owner == "InternalLimits":
		name = "internal"
	case strings.HasPrefix(owner, "Listeners[") && strings.HasSuffix(owner, "]"):
		name = owner[len("Listeners[") : len(owner)-1]
	default:
		return "", false
	}
	key, ok := keys[f]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("listener.%s.%s in the %s file", name, key, ConfigVar), true
}

func variableOf(field string) (string, bool) {
	f, ok := reflect.TypeFor[Vars]().FieldByName(field)
	if !ok {
		return "", false
	}
	return Prefix + f.Tag.Get("env"), true
}

// names lists the variables without the prefix, in declaration order.
func names() []string {
	t := reflect.TypeFor[Vars]()
	out := make([]string, t.NumField())
	for i := range out {
		out[i] = t.Field(i).Tag.Get("env")
	}
	return out
}

// Names lists every variable, prefix included, in declaration order.
func Names() []string {
	out := names()
	for i := range out {
		out[i] = Prefix + out[i]
	}
	return out
}

// checkValues refuses what the parser accepts but no setting means:
// negative numbers, zero where zero is not a value, empty list entries.
func checkValues(vars *Vars, environ map[string]string) error {
	v := reflect.ValueOf(vars).Elem()
	t := v.Type()
	for i := range t.NumField() {
		name := t.Field(i).Tag.Get("env")
		if _, set := environ[Prefix+name]; !set {
			continue
		}
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Int, reflect.Int64, reflect.Float64:
			var n float64
			if f.Kind() == reflect.Float64 {
				n = f.Float()
			} else {
				n = float64(f.Int())
			}
			switch {
			case slices.Contains(zeroMeansUnlimited, name) && n < 0:
				return fmt.Errorf("%s%s must not be negative (0 means unlimited)", Prefix, name)
			case slices.Contains(zeroMeansUnlimited, name):
			case slices.Contains(zeroIsAValue, name) && n < 0:
				return fmt.Errorf("%s%s must not be negative (0 means none)", Prefix, name)
			case slices.Contains(zeroIsAValue, name):
			case n <= 0:
				return fmt.Errorf("%s%s must be positive: unset it for its default", Prefix, name)
			}
		case reflect.Slice:
			for j := range f.Len() {
				item := strings.TrimSpace(f.Index(j).String())
				switch {
				case item == "" && slices.Contains(secretVars, name):
					return fmt.Errorf("%s%s has an empty entry (entry %d)", Prefix, name, j+1)
				case item == "":
					return fmt.Errorf("%s%s has an empty entry in %q", Prefix, name, environ[Prefix+name])
				}
				f.Index(j).SetString(item)
			}
		}
	}
	// 0 says "unlimited" in the environment; in gateway.Config zero means
	// the default, so say it the Config way.
	if _, set := environ[Prefix+"PUBLIC_RATE"]; set && vars.PublicRate == 0 {
		vars.PublicRate = gateway.Unlimited
	}
	if _, set := environ[Prefix+"INTERNAL_RATE"]; set && vars.InternalRate == 0 {
		vars.InternalRate = gateway.Unlimited
	}
	return nil
}

// over copies every variable set in environ (an empty list too: it says
// none) into the gateway.Config field
// of the same name, on top of base; TestEveryConfigFieldHasAVariable keeps
// the two structs in step.
func over(base gateway.Config, vars Vars, environ map[string]string) gateway.Config {
	cfg := base
	src := reflect.ValueOf(vars)
	dst := reflect.ValueOf(&cfg).Elem()
	for i := range src.NumField() {
		f := src.Type().Field(i)
		if slices.Contains(processOnly, f.Name) {
			continue
		}
		if _, set := environ[Prefix+f.Tag.Get("env")]; !set {
			continue
		}
		dst.FieldByName(f.Name).Set(src.Field(i))
	}
	return cfg
}

// overListeners applies the process-wide variables to what a config file
// set per listener: a limit's variable replaces every listener's value of
// that limit, as it replaces the process-wide one, and
// TSLM_PUBLIC_ADDRS opens the public listener a file left out.
func overListeners(cfg *gateway.Config, environ map[string]string) {
	set := func(name string) bool {
		_, ok := environ[Prefix+name]
		return ok
	}
	cfg.Listeners = slices.Clone(cfg.Listeners) // the file's Config shares it
	limits := []*gateway.ListenerLimits{&cfg.PublicLimits, &cfg.InternalLimits}
	for i := range cfg.Listeners {
		limits = append(limits, &cfg.Listeners[i].Limits)
		if set("MAX_CONNECTIONS_PER_IP") {
			cfg.Listeners[i].MaxConnectionsPerIP = 0
		}
	}
	for _, l := range limits {
		if set("MAX_FRAME_BYTES") {
			l.MaxFrameBytes = 0
		}
		if set("MAX_DATA_BYTES") {
			l.MaxDataBytes = 0
		}
		if set("MAX_CONNECTIONS") {
			l.MaxConnections = 0
		}
		if set("SEND_QUEUE") {
			l.SendQueue = 0
		}
	}
	if set("PUBLIC_ADDRS") {
		cfg.PublicOff = false
	}
}

func (st *Settings) readLogging(vars Vars) error {
	level := cmpOr(vars.LogLevel, "info")
	if err := st.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("%sLOG_LEVEL must be debug, info, warn or error", Prefix)
	}
	st.LogFormat = cmpOr(vars.LogFormat, "text")
	if st.LogFormat != "text" && st.LogFormat != "json" {
		return fmt.Errorf("%sLOG_FORMAT must be text or json", Prefix)
	}
	return nil
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// nameVariables rewrites the env parser's errors, which name Go struct
// fields, to name the environment variables an operator actually sets.
func nameVariables(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	msgs := make([]string, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if v, ok := variableOf(pe.Name); ok {
				msgs = append(msgs, fmt.Sprintf("%s: invalid value: %v", v, pe.Err))
				continue
			}
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}

// unknownWarning names a variable no setting reads, with the closest known
// name when one is a likely misspelling.
func unknownWarning(key string, known []string) string {
	name := strings.TrimPrefix(key, Prefix)
	best, bestDist := "", 4 // farther than 3 edits is not a typo
	for _, k := range known {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("%s is not a TSLM setting and is ignored: did you mean %s%s?", key, Prefix, best)
	}
	return fmt.Sprintf("%s is not a TSLM setting and is ignored", key)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Environ returns the process's environment as LoadOver takes it.
func Environ() map[string]string {
	m := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
