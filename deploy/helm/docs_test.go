package helm

import (
	"os"
	"regexp"
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
