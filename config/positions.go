package config

import (
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// place is where a key, a table header or an array element is written.
type place struct {
	line, col int
	kind      unstable.Kind // of the value; Table or ArrayTable for headers
}

// index maps key paths to where they are written, so that an error found
// after decoding (a bad pattern, two keys that exclude each other) can name
// its line. A path joins keys with dots and numbers array elements and
// arrays of tables from 0: "listener.public.port", "channel[1].pattern",
// "auth.api_key[0].grants.publish[2]".
type index struct {
	at    map[string]place
	order []string // paths in document order, for prefix look-ups
	lines []int    // offset of each line's first byte
}

// newIndex reads doc's structure. A document the parser refuses yields the
// places found up to the error; the decoder reports the error itself.
func newIndex(doc []byte) *index {
	ix := &index{at: make(map[string]place), lines: []int{0}}
	for i, c := range doc {
		if c == '\n' {
			ix.lines = append(ix.lines, i+1)
		}
	}
	var p unstable.Parser
	p.Reset(doc)
	arrays := make(map[string]int) // array-of-tables path → elements seen
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			path, first := ix.keyPath(&p, "", e.Key(), arrays)
			if e.Kind == unstable.ArrayTable {
				n := arrays[path]
				arrays[path]++
				path += "[" + strconv.Itoa(n) + "]"
			}
			ix.add(path, first, e.Kind)
			table = path
		case unstable.KeyValue:
			path, first := ix.keyPath(&p, table, e.Key(), nil)
			ix.value(&p, path, first, e.Value())
		}
	}
	return ix
}

// keyPath joins a key's parts onto prefix, resolving parts that name an
// array of tables to its latest element, and returns where the key starts.
func (ix *index) keyPath(p *unstable.Parser, prefix string, it unstable.Iterator, arrays map[string]int) (string, unstable.Position) {
	path := prefix
	var first unstable.Position
	for i := 0; it.Next(); i++ {
		k := it.Node()
		if i == 0 {
			first = ix.pos(k.Raw)
		}
		if path != "" {
			path += "."
		}
		path += string(k.Data)
		if n := arrays[path]; n > 0 && !it.IsLast() {
			path += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	return path, first
}

// value records a key's value at path, and the elements and keys inside it.
func (ix *index) value(p *unstable.Parser, path string, at unstable.Position, v *unstable.Node) {
	ix.add(path, at, v.Kind)
	switch v.Kind {
	case unstable.Array:
		i := 0
		for c := v.Children(); c.Next(); i++ {
			n := c.Node()
			ix.value(p, path+"["+strconv.Itoa(i)+"]", ix.start(p, n, at), n)
		}
	case unstable.InlineTable:
		for c := v.Children(); c.Next(); {
			kv := c.Node()
			sub, first := ix.keyPath(p, path, kv.Key(), nil)
			ix.value(p, sub, first, kv.Value())
		}
	}
}

// start is where node n begins; containers carry no range of their own, so
// they are placed at their first element, or at fallback when empty.
func (ix *index) start(p *unstable.Parser, n *unstable.Node, fallback unstable.Position) unstable.Position {
	if n.Raw.Length > 0 {
		return ix.pos(n.Raw)
	}
	if c := n.Child(); c.Valid() {
		if n.Kind == unstable.InlineTable {
			it := c.Key()
			if it.Next() {
				return ix.pos(it.Node().Raw)
			}
		}
		return ix.start(p, c, fallback)
	}
	return fallback
}

// pos is where r starts. The parser's Shape counts lines from the start of
// the document at each call, which is quadratic over a whole file.
func (ix *index) pos(r unstable.Range) unstable.Position {
	off := int(r.Offset)
	line, _ := slices.BinarySearch(ix.lines, off+1)
	return unstable.Position{Offset: off, Line: line, Column: off - ix.lines[line-1] + 1}
}

func (ix *index) add(path string, at unstable.Position, kind unstable.Kind) {
	if _, dup := ix.at[path]; dup {
		return // the decoder refuses a key defined twice
	}
	ix.at[path] = place{line: at.Line, col: at.Column, kind: kind}
	ix.order = append(ix.order, path)
}

// find returns where path is written: the key itself, or else the first key
// under it (a table made by dotted keys has no header of its own).
func (ix *index) find(path string) (place, bool) {
	if pl, ok := ix.at[path]; ok {
		return pl, true
	}
	for _, q := range ix.order {
		if strings.HasPrefix(q, path+".") || strings.HasPrefix(q, path+"[") {
			return ix.at[q], true
		}
	}
	return place{}, false
}

// has reports whether the file sets path.
func (ix *index) has(path string) bool {
	_, ok := ix.at[path]
	return ok
}

// pathAt returns the path of the innermost key or element written at line
// up to col: the one a decoder error at that position is about.
func (ix *index) pathAt(line, col int) (string, bool) {
	best, bestCol := "", 0
	for _, q := range ix.order {
		if pl := ix.at[q]; pl.line == line && pl.col <= col && pl.col >= bestCol {
			best, bestCol = q, pl.col
		}
	}
	return best, best != ""
}
