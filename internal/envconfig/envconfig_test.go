package envconfig

import (
	"bufio"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/ws"
)

func TestLoadLeavesUnsetVariablesToTheirPackages(t *testing.T) {
	st, err := Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	st.Gateway.Names = ws.SettingNames{}
	if !reflect.DeepEqual(st.Gateway, gateway.Config{}) {
		t.Errorf("no variables gave %+v, want the zero Config", st.Gateway)
	}
	if st.LogLevel != slog.LevelInfo || st.LogFormat != "text" {
		t.Errorf("logging = %v %q, want info text", st.LogLevel, st.LogFormat)
	}
	if len(st.Warnings) != 0 {
		t.Errorf("warnings: %q", st.Warnings)
	}
}

func TestLoadParsesLists(t *testing.T) {
	st, err := Load(map[string]string{
		"TSLM_PUBLIC_ADDRS":    "127.0.0.1:9000, [::1]:9000",
		"TSLM_PUBLIC_ALLOW":    "subscribe, publish",
		"TSLM_ALLOWED_ORIGINS": "",
		"TSLM_PUBLIC_RATE":     "0",
		"TSLM_READ_BATCH":      "50",
		"TSLM_POLL_INTERVAL":   "2s",
		"PATH":                 "/bin",
	})
	if err != nil {
		t.Fatal(err)
	}
	g := st.Gateway
	if !slices.Equal(g.PublicAddrs, []string{"127.0.0.1:9000", "[::1]:9000"}) {
		t.Errorf("public addrs = %q", g.PublicAddrs)
	}
	if !slices.Equal(g.PublicAllow, []string{"subscribe", "publish"}) {
		t.Errorf("public allow = %q", g.PublicAllow)
	}
	if g.AllowedOrigins != nil {
		t.Errorf("empty TSLM_ALLOWED_ORIGINS gave %q, want none", g.AllowedOrigins)
	}
	if g.PublicRate != gateway.Unlimited {
		t.Errorf("TSLM_PUBLIC_RATE=0 gave rate %v, want unlimited", g.PublicRate)
	}
	if g.ReadBatch != 50 || g.PollInterval != 2*time.Second {
		t.Errorf("tuning = %d %s", g.ReadBatch, g.PollInterval)
	}
}

// TestLoadNamesTheVariable holds every start-up error to naming the
// variable to fix.
func TestLoadNamesTheVariable(t *testing.T) {
	cases := map[string]string{
		"TSLM_MAX_FRAME_BYTES":         "lots",
		"TSLM_PING_INTERVAL":           "soon",
		"TSLM_SEND_QUEUE":              "-1",
		"TSLM_MAX_CONNECTIONS":         "0",
		"TSLM_PUBLIC_RATE":             "-3",
		"TSLM_PUBLIC_BURST":            "0",
		"TSLM_PUBLIC_ALLOW":            "subscribe,delete",
		"TSLM_LOG_LEVEL":               "loud",
		"TSLM_LOG_FORMAT":              "xml",
		"TSLM_MAX_DATA_BYTES":          "200000", // not less than the frame limit
		"TSLM_DEFAULT_MAX_LEN":         "2000000",
		"TSLM_SHUTDOWN_GRACE":          "0s",
		"TSLM_CHANNEL_RETENTION_LIMIT": "1h", // below the default retention
		"TSLM_POLL_INTERVAL":           "1ms",
		"TSLM_ALLOWED_ORIGINS":         "example.com",
		"TSLM_HTTP_IDLE_TIMEOUT":       "0s",
		"TSLM_HTTP_READ_TIMEOUT":       "-1s",
		"TSLM_REQUEST_TIMEOUT":         "2m",  // over the maximum
		"TSLM_MAX_REQUEST_TIMEOUT":     "1s",  // under the default timeout
		"TSLM_SESSION_TTL":             "30s", // under the maximum timeout
		"TSLM_MAX_INFLIGHT_REQUESTS":   "0",
		"TSLM_SESSION_REPLIES":         "-1",
		"TSLM_SERVE_INFLIGHT":          "many",
		"TSLM_REQUEST_RECLAIM_AFTER":   "0s",
		"TSLM_MAX_QUEUED_REQUESTS":     "1.5",
		"TSLM_TRUSTED_PROXIES":         "10.0.0.0/8,proxy.internal",
		"TSLM_MAX_CONNECTIONS_PER_IP":  "0",
		"TSLM_HANDSHAKE_TIMEOUT":       "0s",
		"TSLM_SEND_QUEUE_BUDGET":       "65536", // below one queue's bytes
		// Empty values are slips, not wishes for the default.
		"TSLM_PUBLIC_ADDRS": "",
		"TSLM_REDIS_URL":    " ",
		"TSLM_READ_BATCH":   "",
		// So are empty entries in a list.
		"TSLM_INTERNAL_ADDRS": "127.0.0.1:8081,",
		"TSLM_DRAIN_DELAY":    "-1s",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(map[string]string{name: value})
			if err == nil {
				t.Fatalf("%s=%q accepted", name, value)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%q: error %q does not name the variable", name, value, err)
			}
		})
	}
}

// TestLoadReadsRequestSettings holds the request variables to reaching
// their gateway.Config fields, and a conflict between two of them to
// naming both variables.
func TestLoadReadsRequestSettings(t *testing.T) {
	st, err := Load(map[string]string{
		"TSLM_PUBLIC_ALLOW":          "subscribe,request,serve",
		"TSLM_REQUEST_TIMEOUT":       "2s",
		"TSLM_MAX_REQUEST_TIMEOUT":   "30s",
		"TSLM_MAX_INFLIGHT_REQUESTS": "10",
		"TSLM_SESSION_TTL":           "30s",
		"TSLM_SESSION_REPLIES":       "50",
		"TSLM_SERVE_INFLIGHT":        "5",
		"TSLM_REQUEST_RECLAIM_AFTER": "15s",
		"TSLM_MAX_QUEUED_REQUESTS":   "500",
	})
	if err != nil {
		t.Fatal(err)
	}
	g := st.Gateway
	got := []any{g.RequestTimeout, g.MaxRequestTimeout, g.MaxInflightRequests, g.SessionTTL, g.SessionReplies, g.ServeInflight, g.RequestReclaimAfter, g.MaxQueuedRequests}
	want := []any{2 * time.Second, 30 * time.Second, 10, 30 * time.Second, int64(50), 5, 15 * time.Second, 500}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request settings %v, want %v", got, want)
	}
	if !slices.Equal(g.PublicAllow, []string{"subscribe", "request", "serve"}) {
		t.Errorf("public allow = %q", g.PublicAllow)
	}

	_, err = Load(map[string]string{"TSLM_SESSION_TTL": "30s"})
	if err == nil || !strings.Contains(err.Error(), "TSLM_SESSION_TTL") || !strings.Contains(err.Error(), "TSLM_MAX_REQUEST_TIMEOUT") {
		t.Errorf("a session TTL under the maximum request timeout: %v, want an error naming both variables", err)
	}
}

// TestLoadReadsDrainDelay: 0s is a drain delay (none), not a slip.
func TestLoadReadsDrainDelay(t *testing.T) {
	for value, want := range map[string]time.Duration{"0s": 0, "3s": 3 * time.Second} {
		st, err := Load(map[string]string{"TSLM_DRAIN_DELAY": value})
		if err != nil {
			t.Fatalf("TSLM_DRAIN_DELAY=%s: %v", value, err)
		}
		if got := st.Gateway.DrainDelay; got != want {
			t.Errorf("TSLM_DRAIN_DELAY=%s: DrainDelay %v, want %v", value, got, want)
		}
	}
}

func TestLoadWarnsOfUnknownVariables(t *testing.T) {
	st, err := Load(map[string]string{
		"TSLM_PUBLIC_ADRS": ":9000",
		"TSLM_FROBNICATE":  "yes",
		"OTHER_THING":      "x",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"TSLM_FROBNICATE is not a TSLM setting and is ignored",
		"TSLM_PUBLIC_ADRS is not a TSLM setting and is ignored: did you mean TSLM_PUBLIC_ADDRS?",
	}
	if !slices.Equal(st.Warnings, want) {
		t.Errorf("warnings = %q, want %q", st.Warnings, want)
	}
}

// TestRefusalsNameTheVariables: what a refused client reads names the
// variable an operator sets.
func TestRefusalsNameTheVariables(t *testing.T) {
	st, err := Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	want := ws.SettingNames{MaxConnections: "TSLM_MAX_CONNECTIONS", AllowedOrigins: "TSLM_ALLOWED_ORIGINS", MaxConnectionsPerIP: "TSLM_MAX_CONNECTIONS_PER_IP"}
	if st.Gateway.Names != want {
		t.Errorf("Names = %+v, want %+v", st.Gateway.Names, want)
	}
}

func TestExplainNamesTheVariableOfAConfigError(t *testing.T) {
	err := Explain(&gateway.ConfigError{Field: "PublicAddrs", Err: os.ErrPermission})
	if !strings.HasPrefix(err.Error(), "TSLM_PUBLIC_ADDRS: ") {
		t.Errorf("Explain = %q", err)
	}
}

// TestEveryConfigFieldHasAVariable keeps Vars and gateway.Config in step:
// over copies fields by name, so a field added to one must be added
// to the other, with the same type.
func TestEveryConfigFieldHasAVariable(t *testing.T) {
	vars, cfg := reflect.TypeFor[Vars](), reflect.TypeFor[gateway.Config]()
	for i := range cfg.NumField() {
		f := cfg.Field(i)
		if slices.Contains(notVariables, f.Name) {
			continue
		}
		v, ok := vars.FieldByName(f.Name)
		switch {
		case !ok:
			t.Errorf("gateway.Config.%s has no variable in Vars", f.Name)
		case v.Type != f.Type:
			t.Errorf("Vars.%s is %s, gateway.Config's is %s", f.Name, v.Type, f.Type)
		}
	}
	for i := range vars.NumField() {
		name := vars.Field(i).Name
		if _, ok := cfg.FieldByName(name); !ok && !slices.Contains(processOnly, name) {
			t.Errorf("Vars.%s sets nothing in gateway.Config", name)
		}
	}
}

// TestReadmeDocumentsEveryVariable holds README.md's configuration table
// to the code: every variable listed, none invented, and each default the
// one the packages actually apply, so that defaults are written once, in
// code, and the README cannot drift from them.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	documented := readmeDefaults(t, "../../README.md")
	resolved := reflect.ValueOf(gateway.Config{}.WithDefaults())
	st, err := Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	process := map[string]string{"LogLevel": strings.ToLower(st.LogLevel.String()), "LogFormat": st.LogFormat, "Config": st.ConfigFile}
	vars := reflect.TypeFor[Vars]()
	for i := range vars.NumField() {
		f := vars.Field(i)
		name := Prefix + f.Tag.Get("env")
		doc, ok := documented[name]
		if !ok {
			t.Errorf("README.md does not document %s", name)
			continue
		}
		delete(documented, name)
		if v, ok := process[f.Name]; ok {
			if doc != v && !(strings.HasPrefix(doc, "*(") && v == "") {
				t.Errorf("README.md says %s defaults to %q; it is %q", name, doc, v)
			}
			continue
		}
		if !defaultMatches(doc, resolved.FieldByName(f.Name)) {
			t.Errorf("README.md says %s defaults to %q; it is %v", name, doc, resolved.FieldByName(f.Name))
		}
	}
	for name := range documented {
		t.Errorf("README.md documents %s, which no setting reads", name)
	}
}

// readmeDefaults reads the default column of the rows "| `TSLM_X` | … |".
func readmeDefaults(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| `"+Prefix) {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			t.Fatalf("README.md: malformed row %q", line)
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		out[name] = strings.Trim(strings.TrimSpace(cells[2]), "`")
	}
	if len(out) == 0 {
		t.Fatal("README.md has no configuration table")
	}
	return out
}

// defaultMatches compares a README default with the effective value. A
// default in italics, "*(unset: …)*", stands for the zero value: the
// setting is off or derived at run time, as the text says.
func defaultMatches(doc string, v reflect.Value) bool {
	if strings.HasPrefix(doc, "*(") {
		return v.IsZero()
	}
	if v.Kind() == reflect.Pointer {
		return !v.IsNil() && defaultMatches(doc, v.Elem())
	}
	switch v.Kind() {
	case reflect.Slice:
		return doc == strings.Join(v.Interface().([]string), ",")
	case reflect.String:
		return doc == v.String()
	case reflect.Bool:
		return doc == strconv.FormatBool(v.Bool())
	case reflect.Float64:
		n, err := strconv.ParseFloat(doc, 64)
		return err == nil && n == v.Float()
	case reflect.Int64:
		if v.Type() == reflect.TypeFor[time.Duration]() {
			d, err := time.ParseDuration(doc)
			return err == nil && d == time.Duration(v.Int())
		}
		fallthrough
	case reflect.Int:
		n, err := strconv.ParseInt(doc, 10, 64)
		return err == nil && n == v.Int()
	}
	return false
}

// TestLoadOverLetsSetVariablesWin holds LoadOver to its rule: a variable
// that is set replaces the file's value, one that is not leaves it, and an
// empty list that means none still overrides.
func TestLoadOverLetsSetVariablesWin(t *testing.T) {
	file := gateway.Config{
		PublicAddrs:    []string{"0.0.0.0:8080"},
		MaxConnections: 1000,
		PublicRate:     10,
		AllowedOrigins: []string{"https://a.example"},
		OIDCIssuer:     "https://sso.example",
	}
	st, err := LoadOver(file, map[string]string{
		"TSLM_PUBLIC_ADDRS":    "127.0.0.1:9000",
		"TSLM_PUBLIC_RATE":     "0",
		"TSLM_ALLOWED_ORIGINS": "",
		"TSLM_CONFIG":          "/etc/tslm.toml",
	})
	if err != nil {
		t.Fatal(err)
	}
	g := st.Gateway
	got := []any{g.PublicAddrs, g.MaxConnections, g.PublicRate, g.AllowedOrigins, g.OIDCIssuer, st.ConfigFile}
	want := []any{[]string{"127.0.0.1:9000"}, 1000, float64(gateway.Unlimited), []string(nil), "https://sso.example", "/etc/tslm.toml"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged %v, want %v", got, want)
	}
}

// TestLoadOverSaysWhenTheFileIsAtFault: a conflict between a variable and
// a value from the file names the variable and says where the value came
// from.
func TestLoadOverSaysWhenTheFileIsAtFault(t *testing.T) {
	_, err := LoadOver(gateway.Config{MaxDataBytes: 100000}, map[string]string{"TSLM_MAX_FRAME_BYTES": "50000"})
	if err == nil || !strings.Contains(err.Error(), "TSLM_MAX_DATA_BYTES") || !strings.Contains(err.Error(), "TSLM_CONFIG file") {
		t.Errorf("conflict with the file: %v", err)
	}
	_, err = LoadOver(gateway.Config{}, map[string]string{"TSLM_CONFIG": " "})
	if err == nil || !strings.Contains(err.Error(), "TSLM_CONFIG") {
		t.Errorf("empty TSLM_CONFIG: %v", err)
	}
}

// TestLoadReadsDemo holds TSLM_DEMO to strconv.ParseBool's spellings and
// refuses anything else, naming the variable.
func TestLoadReadsDemo(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "false": false, "0": false} {
		st, err := Load(map[string]string{"TSLM_DEMO": v})
		if err != nil {
			t.Fatalf("TSLM_DEMO=%s: %v", v, err)
		}
		if st.Gateway.Demo != want {
			t.Errorf("TSLM_DEMO=%s gave Demo %v", v, st.Gateway.Demo)
		}
	}
	if _, err := Load(map[string]string{"TSLM_DEMO": "yes please"}); err == nil || !strings.Contains(err.Error(), "TSLM_DEMO") {
		t.Errorf("TSLM_DEMO=yes please: error %v, want one naming TSLM_DEMO", err)
	}
}

// TestLoadReadsSwitches: TSLM_PPROF is off unless set; TSLM_ACCESS_LOG is
// on unless set to false, and an unset one leaves the config file's
// choice (nil: the default) alone.
func TestLoadReadsSwitches(t *testing.T) {
	st, err := Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Gateway.Pprof || st.Gateway.AccessLog != nil || !*st.Gateway.WithDefaults().AccessLog {
		t.Errorf("unset: Pprof %v, AccessLog %v; want off, and nil meaning on", st.Gateway.Pprof, st.Gateway.AccessLog)
	}
	st, err = Load(map[string]string{"TSLM_PPROF": "true", "TSLM_ACCESS_LOG": "false"})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Gateway.Pprof || st.Gateway.AccessLog == nil || *st.Gateway.WithDefaults().AccessLog {
		t.Errorf("set: Pprof %v, AccessLog %v; want on, and off", st.Gateway.Pprof, st.Gateway.AccessLog)
	}
	if _, err := Load(map[string]string{"TSLM_ACCESS_LOG": "sometimes"}); err == nil || !strings.Contains(err.Error(), "TSLM_ACCESS_LOG") {
		t.Errorf("TSLM_ACCESS_LOG=sometimes: error %v, want one naming the variable", err)
	}
}

// TestListenerTokenVariables: TSLM_PUBLIC_AUTH_TOKENS and
// TSLM_INTERNAL_AUTH_TOKENS are comma-separated lists of tokens, and no
// error about them repeats a token.
func TestListenerTokenVariables(t *testing.T) {
	st, err := Load(map[string]string{"TSLM_PUBLIC_AUTH_TOKENS": "first-token, second-token", "TSLM_INTERNAL_AUTH_TOKENS": "third-token"})
	if err != nil {
		t.Fatal(err)
	}
	if g := st.Gateway; !reflect.DeepEqual(g.PublicAuthTokens, []auth.Secret{"first-token", "second-token"}) ||
		!reflect.DeepEqual(g.InternalAuthTokens, []auth.Secret{"third-token"}) {
		t.Errorf("tokens %v %v", g.PublicAuthTokens, g.InternalAuthTokens) // printed redacted
	}
	for value, says := range map[string]string{
		"first-token,,second-token": "TSLM_PUBLIC_AUTH_TOKENS has an empty entry (entry 2)",
		"first-token,second token":  "TSLM_PUBLIC_AUTH_TOKENS: token 2 has a character",
	} {
		_, err := Load(map[string]string{"TSLM_PUBLIC_AUTH_TOKENS": value})
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("TSLM_PUBLIC_AUTH_TOKENS=%q: %v, want an error saying %q", value, err, says)
		}
		if err != nil && (strings.Contains(err.Error(), "first-token") || strings.Contains(err.Error(), "second")) {
			t.Errorf("the error repeats a token: %v", err)
		}
	}
	if _, err := Load(map[string]string{"TSLM_INTERNAL_AUTH_TOKENS": ""}); err == nil || strings.Contains(err.Error(), "first") {
		t.Errorf("empty TSLM_INTERNAL_AUTH_TOKENS: %v, want refused", err)
	}
}

// TestVariablesOverrideListenersOfTheFile: a process-wide limit's variable
// replaces every listener's value of it, as it replaces the file's
// process-wide one; TSLM_PUBLIC_ADDRS opens the public listener a file
// left out. The file's Config is not changed.
func TestVariablesOverrideListenersOfTheFile(t *testing.T) {
	file := gateway.Config{
		PublicOff:      true,
		PublicLimits:   gateway.ListenerLimits{MaxConnections: 5, MaxFrameBytes: 200000},
		InternalLimits: gateway.ListenerLimits{MaxConnections: 6, SendQueue: 10},
		Listeners: []gateway.Listener{{Name: "feed", Addrs: []string{":9000"}, MaxConnectionsPerIP: 3,
			Limits: gateway.ListenerLimits{MaxConnections: 7, MaxDataBytes: 1000}}},
	}
	st, err := LoadOver(file, map[string]string{"TSLM_MAX_CONNECTIONS": "9", "TSLM_MAX_CONNECTIONS_PER_IP": "4"})
	if err != nil {
		t.Fatal(err)
	}
	g := st.Gateway
	got := []any{g.PublicLimits, g.InternalLimits, g.Listeners[0].Limits, g.Listeners[0].MaxConnectionsPerIP, g.MaxConnections, g.PublicOff}
	want := []any{gateway.ListenerLimits{MaxFrameBytes: 200000}, gateway.ListenerLimits{SendQueue: 10}, gateway.ListenerLimits{MaxDataBytes: 1000}, 0, 9, true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged %v, want %v", got, want)
	}
	if file.Listeners[0].Limits.MaxConnections != 7 {
		t.Error("LoadOver changed the file's listeners")
	}
	st, err = LoadOver(file, map[string]string{"TSLM_PUBLIC_ADDRS": "127.0.0.1:0", "TSLM_MAX_FRAME_BYTES": "300000", "TSLM_MAX_DATA_BYTES": "2000", "TSLM_SEND_QUEUE": "20"})
	if err != nil {
		t.Fatal(err)
	}
	g = st.Gateway
	got = []any{g.PublicLimits, g.InternalLimits, g.Listeners[0].Limits, g.PublicOff}
	want = []any{gateway.ListenerLimits{MaxConnections: 5}, gateway.ListenerLimits{MaxConnections: 6}, gateway.ListenerLimits{MaxConnections: 7}, false}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged %v, want %v", got, want)
	}
	// A conflict between a variable and a listener's own limit names both.
	_, err = LoadOver(gateway.Config{PublicLimits: gateway.ListenerLimits{MaxDataBytes: 100000}}, map[string]string{"TSLM_MAX_FRAME_BYTES": "70000"})
	if err == nil || !strings.HasPrefix(err.Error(), "listener.public.max_message_size in the TSLM_CONFIG file: ") || !strings.Contains(err.Error(), "(see TSLM_MAX_FRAME_BYTES)") {
		t.Errorf("conflict with a listener's limit: %v", err)
	}
}
