package config

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/internal/envconfig"
)

// TestDocsListEveryKey holds docs/config.md to the file's shape: every key
// the decoder reads has a row under its table's heading, no row names a key
// that does not exist, and every variable a row names is a real one.
func TestDocsListEveryKey(t *testing.T) {
	documented, variables := docRows(t, "../docs/config.md")
	var keys []string
	walkKeys(reflect.TypeFor[document](), "", &keys)
	for _, k := range keys {
		if !slices.Contains(documented, k) {
			t.Errorf("docs/config.md does not document %s", k)
		}
	}
	for _, k := range documented {
		if !slices.Contains(keys, k) {
			t.Errorf("docs/config.md documents %s, which the file cannot set", k)
		}
	}
	if len(keys) < 30 {
		t.Fatalf("only %d keys found: %q", len(keys), keys)
	}
	known := envconfig.Names()
	for _, v := range variables {
		if !slices.Contains(known, v) {
			t.Errorf("docs/config.md names %s, which is no variable", v)
		}
	}
}

// walkKeys lists the full paths of the leaf keys of a decoded type.
// Listener tables are "listener.NAME".
func walkKeys(t reflect.Type, prefix string, out *[]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct {
		t = t.Elem()
	}
	if t.Kind() == reflect.Map {
		walkKeys(t.Elem(), prefix+".NAME", out)
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("toml"), ",")[0]
		path := strings.TrimPrefix(prefix+"."+name, ".")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		isTable := ft.Kind() == reflect.Map ||
			ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() ||
			ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct
		if isTable {
			walkKeys(ft, path, out)
		} else {
			*out = append(*out, path)
		}
	}
}

var (
	docHeading  = regexp.MustCompile("^## `\\[\\[?([a-z_.]+)\\]\\]?`")
	docVariable = regexp.MustCompile("`(TSLM_[A-Z_]+)`")
)

// docRows reads the key rows of docs/config.md's tables as full paths
// ("auth.oidc.issuer"), under headings such as "## `[auth.oidc]`"; the
// listener heading stands for "listener.NAME".
func docRows(t *testing.T, path string) (keys, variables []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := docHeading.FindStringSubmatch(line); m != nil {
			table = m[1]
			if strings.HasPrefix(table, "listener.") {
				table = "listener.NAME"
			}
			continue
		}
		if strings.HasPrefix(line, "## ") {
			table = ""
			continue
		}
		if table == "" || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) != 7 {
			t.Fatalf("docs/config.md: row %q has %d cells, want key, type, default, variable, meaning", line, len(cells)-2)
		}
		keys = append(keys, table+"."+strings.Trim(strings.TrimSpace(cells[1]), "`"))
		for _, m := range docVariable.FindAllStringSubmatch(cells[3]+cells[4], -1) {
			variables = append(variables, m[1])
		}
	}
	return keys, variables
}
