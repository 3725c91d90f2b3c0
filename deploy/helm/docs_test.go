package helm

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// valuePath is a dotted values path in backquotes: `redis.existingSecret`,
// `networkPolicy.egress.redis.to`.
var valuePath = regexp.MustCompile("`([a-z][A-Za-z]*(?:\\.[a-z][A-Za-z]*)+)`")

// TestReadmeNamesRealValues holds the chart's README, and the repository
// README's Kubernetes section, to naming values that values.yaml has.
func TestReadmeNamesRealValues(t *testing.T) {
	raw, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{chartDir + "/README.md", "../../README.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for _, m := range valuePath.FindAllStringSubmatch(string(text), -1) {
			path := strings.Split(m[1], ".")
			if _, top := values[path[0]]; !top {
				continue // not a value: a file name, a Go package, ...
			}
			checked++
			var at any = values
			for _, key := range path {
				obj, ok := at.(map[string]any)
				if !ok {
					t.Errorf("%s names %s: %s is not a table in values.yaml", doc, m[1], key)
					break
				}
				if at, ok = obj[key]; !ok {
					t.Errorf("%s names %s, which values.yaml does not have", doc, m[1])
					break
				}
			}
		}
		if checked < 5 {
			t.Errorf("%s names %d values; the test looks for them in backquotes", doc, checked)
		}
	}
}

// TestSchemaListenerKeys holds values.schema.json's config.public and
// config.internal to the keys docs/config.md gives the listener tables, so
// that a key the gateway reads is not refused by the chart, and a
// misspelt one is refused at install rather than at the pod's start.
func TestSchemaListenerKeys(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## `[listener.public]`")
	section, _, _ = strings.Cut(section, "\n## ")
	if !ok {
		t.Fatal("docs/config.md has no [listener.public] section")
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(section, -1) {
		documented = append(documented, m[1])
	}
	slices.Sort(documented)

	raw, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Config struct {
				Properties map[string]struct {
					AdditionalProperties *bool          `json:"additionalProperties"`
					Properties           map[string]any `json:"properties"`
				} `json:"properties"`
			} `json:"config"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	for _, listener := range []string{"public", "internal"} {
		l := schema.Properties.Config.Properties[listener]
		if l.AdditionalProperties == nil || *l.AdditionalProperties {
			t.Errorf("config.%s allows any key: a misspelt one would reach the pod", listener)
		}
		var keys []string
		for k := range l.Properties {
			keys = append(keys, k)
		}
		want := documented
		if listener == "internal" {
			// docs/config.md: "public listener only".
			want = slices.DeleteFunc(slices.Clone(documented), func(k string) bool { return k == "max_connections_per_ip" })
		}
		slices.Sort(keys)
		if !slices.Equal(keys, want) {
			t.Errorf("config.%s in values.schema.json has keys %v; docs/config.md documents %v", listener, keys, want)
		}
	}
}

// TestChartPortsMatchCompose holds the chart's default ports to those of
// docker-compose.yml and deploy/haproxy.cfg, so that clients, publishers
// and docs find the listeners at the same ports whichever way the gateway
// is deployed.
func TestChartPortsMatchCompose(t *testing.T) {
	raw, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Ports struct{ Public, Internal int }
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	raw, err = os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `json:"environment"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatal(err)
	}
	env := compose.Services["tslm"].Environment
	haproxy, err := os.ReadFile("../haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct {
		name, variable string
		port           int
	}{{"public", "TSLM_PUBLIC_ADDRS", values.Ports.Public}, {"internal", "TSLM_INTERNAL_ADDRS", values.Ports.Internal}} {
		want := ":" + strconv.Itoa(l.port)
		if env[l.variable] != want {
			t.Errorf("docker-compose.yml sets %s=%q; the chart's %s port is %d", l.variable, env[l.variable], l.name, l.port)
		}
		if !strings.Contains(string(haproxy), "server-template tslm 10 tslm"+want+"\n") {
			t.Errorf("deploy/haproxy.cfg has no backend on the %s port %d", l.name, l.port)
		}
	}
}
