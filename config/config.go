package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/gateway"
)

// File is what a config file says.
type File struct {
	// Config holds the file's settings; the settings it does not mention
	// are zero, which means their defaults (or the environment's values,
	// once merged).
	Config gateway.Config
	// Warnings are worth logging at start but not worth refusing it
	// (settings TSLM reads differently from the original TSLM, an inline
	// secret, an API key already expired). Each names the file, line and
	// key.
	Warnings []string
}

// Error is one mistake in a config file.
type Error struct {
	File string
	// Line and Column, from 1, are where the mistake is written; 0 when
	// unknown.
	Line, Column int
	// Key is the path of the key at fault, such as "listener.public.port"
	// or "channel[2].pattern" (arrays count from 0); "" for a syntax error.
	Key string
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads the config file at path. Its error, when it is about the
// file's content, joins one *Error per mistake found.
func Load(path string) (File, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("config file: %w", err)
	}
	return parse(path, doc)
}

// document is the file's shape. Pointers tell a key left out from one set
// to its zero value, where that differs.
type document struct {
	Listener map[string]listenerTable `toml:"listener"`
	Auth     authTable                `toml:"auth"`
	Channel  []channelTable           `toml:"channel"`
	Redis    redisTable               `toml:"redis"`
}

// loader turns a decoded document into a Config, collecting every mistake.
type loader struct {
	name string // the file, as named in messages
	dir  string // relative paths in the file are relative to it
	ix   *index
	errs []*Error
	warn []*Error
	cfg  gateway.Config
	// from maps a Config field to the key that set it, so that a
	// gateway.ConfigError can be traced back to a line.
	from map[string]string
}

func parse(name string, doc []byte) (File, error) {
	var d document
	dec := toml.NewDecoder(strings.NewReader(string(doc)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return File{}, decodeError(name, doc, err)
	}
	l := &loader{
		name: name,
		dir:  filepath.Dir(name),
		ix:   newIndex(doc),
		from: make(map[string]string),
	}
	l.listeners(d.Listener)
	l.auth(d.Auth)
	l.channels(d.Channel)
	l.redis(d.Redis)
	if len(l.errs) == 0 {
		l.validate()
	}
	if len(l.errs) > 0 {
		return File{}, errors.Join(inFileOrder(l.errs)...)
	}
	var warnings []string
	for _, w := range inFileOrder(l.warn) {
		warnings = append(warnings, w.Error())
	}
	return File{Config: l.cfg, Warnings: warnings}, nil
}

// validate runs the checks gateway.Config makes of the file's settings on
// their own, so that a conflict inside the file names its line; the
// environment's overrides are checked again with them by envconfig. A
// conflict with a setting the file leaves out is left to that check: a
// variable may settle it, as TSLM_OIDC_ISSUER does for a listener whose
// auth the file sets.
func (l *loader) validate() {
	resolved := l.cfg.WithDefaults()
	err := resolved.Validate()
	var ce *gateway.ConfigError
	switch {
	case err == nil:
	case errors.As(err, &ce) && ce.Related != "" && !(l.sets(ce.Field) && l.sets(ce.Related)):
	case errors.As(err, &ce):
		key, ok := l.from[ce.Field]
		if !ok {
			key = l.from[ce.Related]
		}
		msg := ce.Field + ": " + ce.Err.Error()
		if ce.Related != "" {
			msg += " (see " + ce.Related + ")"
		}
		l.fail(key, "%s", msg)
	default:
		l.fail("", "%v", err)
	}
	if len(l.cfg.Publishers.APIKeys)+len(l.cfg.Publishers.JWTKeys) > 0 {
		// The checks above name lines; this one catches what they missed.
		if _, err := auth.NewPublisherVerifier(l.cfg.Publishers); err != nil {
			l.fail("auth", "%v", err)
		}
	}
}

// fail records a mistake at key.
func (l *loader) fail(key, format string, args ...any) {
	e := &Error{File: l.name, Key: key, Msg: fmt.Sprintf(format, args...)}
	if pl, ok := l.ix.find(key); ok && key != "" {
		e.Line, e.Column = pl.line, pl.col
	}
	l.errs = append(l.errs, e)
}

// warnf records a warning at key, formatted as an Error.
func (l *loader) warnf(key, format string, args ...any) {
	e := &Error{File: l.name, Key: key, Msg: fmt.Sprintf(format, args...)}
	if pl, ok := l.ix.find(key); ok {
		e.Line, e.Column = pl.line, pl.col
	}
	l.warn = append(l.warn, e)
}

// present reports whether the file writes key or anything under it.
func (l *loader) present(key string) bool {
	_, ok := l.ix.find(key)
	return ok
}

// set records that key set the Config field named field.
func (l *loader) set(field, key string) { l.from[field] = key }

// sets reports whether the file sets the Config field named field.
func (l *loader) sets(field string) bool {
	_, ok := l.from[field]
	return ok
}

// inFileOrder sorts errs by line and column, so that an operator reads
// them as the file goes; those without a line come last.
func inFileOrder(errs []*Error) []error {
	slices.SortStableFunc(errs, func(a, b *Error) int {
		la, lb := a.Line, b.Line
		if la == 0 {
			la = math.MaxInt
		}
		if lb == 0 {
			lb = math.MaxInt
		}
		if la != lb {
			return cmp.Compare(la, lb)
		}
		return cmp.Compare(a.Column, b.Column)
	})
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return out
}

// positive checks an integer key that must be above zero when present.
func (l *loader) positive(key string, v *int64) (int64, bool) {
	if v == nil {
		return 0, false
	}
	if *v <= 0 {
		l.fail(key, "must be positive (leave the key out for the default)")
		return 0, false
	}
	return *v, true
}

// duration reads a duration key ("10s", "1h30m"), which must be positive
// when present.
func (l *loader) duration(key string, s *string) (time.Duration, bool) {
	if s == nil {
		return 0, false
	}
	d, err := time.ParseDuration(strings.TrimSpace(*s))
	switch {
	case err != nil:
		l.fail(key, "%q is not a duration: write a number and a unit, such as \"10s\", \"15m\" or \"1h30m\"", *s)
		return 0, false
	case d <= 0:
		l.fail(key, "must be positive (leave the key out for the default)")
		return 0, false
	}
	return d, true
}

// filePath resolves a path written in the file against the file's
// directory, so that the file means the same from any working directory.
func (l *loader) filePath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(l.dir, p)
}

// number checks a float key, such as a rate, which TOML lets be inf or nan.
func (l *loader) number(key string, v float64) bool {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		l.fail(key, "must be a finite number, not negative")
		return false
	}
	return true
}

// originalOps are the original TSLM's names of operations.
var originalOps = map[string]auth.Op{
	"Subscribe":     auth.OpSubscribe,
	"CreateChannel": auth.OpCreate,
	"NotifyChannel": auth.OpPublish,
}

// ops reads a list of operations by TSLM's names or the original TSLM's,
// each error naming its element.
func (l *loader) ops(key string, names []string) (auth.OpSet, bool) {
	var set auth.OpSet
	ok := true
	for i, n := range names {
		op, known := originalOps[n]
		if !known {
			var err error
			if op, err = auth.ParseOp(n); err != nil {
				l.fail(fmt.Sprintf("%s[%d]", key, i), "unknown operation %q: want subscribe, publish, create, request or serve (or the original TSLM's Subscribe, CreateChannel, NotifyChannel)", n)
				ok = false
				continue
			}
		}
		set |= auth.Ops(op)
	}
	return set, ok
}

// patterns reads a list of channel patterns, each error naming its
// element.
func (l *loader) patterns(key string, list []string) ([]auth.Pattern, bool) {
	out := make([]auth.Pattern, 0, len(list))
	ok := true
	for i, s := range list {
		p, err := auth.ParsePattern(s)
		if err != nil {
			l.fail(fmt.Sprintf("%s[%d]", key, i), "pattern %q: %v", s, err)
			ok = false
			continue
		}
		out = append(out, p)
	}
	return out, ok
}

// decodeError rewrites the decoder's errors as *Error, one per mistake.
func decodeError(name string, doc []byte, err error) error {
	// The index names keys as the other errors do, with their array
	// positions; of a malformed document it knows the part before the
	// mistake.
	ix := newIndex(doc)
	var se *toml.StrictMissingError
	if errors.As(err, &se) {
		errs := make([]error, 0, len(se.Errors))
		for i := range se.Errors {
			e := fromDecode(name, ix, &se.Errors[i])
			e.Msg = "unknown key: see docs/config.md for the keys of each table"
			if pl, ok := ix.at[e.Key]; ok && (pl.kind == unstable.Table || pl.kind == unstable.ArrayTable) {
				e.Msg = "unknown table: see docs/config.md for the tables"
			}
			errs = append(errs, e)
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return fromDecode(name, ix, de)
	}
	return &Error{File: name, Msg: err.Error()}
}

func fromDecode(name string, ix *index, de *toml.DecodeError) *Error {
	line, col := de.Position()
	e := &Error{
		File:   name,
		Line:   line,
		Column: col,
		Key:    strings.Join(de.Key(), "."),
		Msg:    typeMessage(strings.TrimPrefix(de.Error(), "toml: ")),
	}
	if path, ok := ix.pathAt(line, col); ok && e.Key != "" {
		e.Key = path
	}
	return e
}

var typeMismatch = regexp.MustCompile(`^cannot (?:decode|store) TOML (\S+) (?:into|in) .*type (\S+)$`)

// typeMessage rewrites a type mismatch, which the decoder words in Go
// types, in the file's terms.
func typeMessage(msg string) string {
	m := typeMismatch.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	return fmt.Sprintf("want %s, not a TOML %s", describe(m[2]), m[1])
}

func describe(goType string) string {
	t := strings.TrimLeft(goType, "*")
	switch {
	case t == "string":
		return "a string"
	case t == "int64" || t == "int":
		return "an integer"
	case t == "float64":
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "time.Time":
		return "a date-time such as 2027-01-01T00:00:00Z"
	case t == "[]string":
		return "an array of strings"
	case strings.HasPrefix(t, "[]"):
		return "an array of tables"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "config."):
		return "a table"
	}
	return "a value of type " + t
}

// sortedKeys returns m's keys in order, so that errors come out the same
// way each time.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
