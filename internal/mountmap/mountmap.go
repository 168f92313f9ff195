// Package mountmap is --mount-map: SRC=DST pairs that move bind-mount
// sources to where the target host keeps them, the most specific first.
// pull and kube share it.
package mountmap

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrBadMap is wrapped when a mapping is malformed or names what the
// checkpoint does not have (pull and kube wrap it too): bad input.
var ErrBadMap = fault.New(fault.Input, "invalid mapping")

// Map is one SRC=DST.
type Map struct{ Src, Dst string }

// Maps are the mappings of one command line, longest SRC first.
type Maps []Map

// Parse reads SRC=DST values: both absolute, each SRC once.
func Parse(vals []string) (Maps, error) {
	var out Maps
	seen := map[string]bool{}
	for _, v := range vals {
		src, dst, ok := strings.Cut(v, "=")
		if !ok || !path.IsAbs(src) || !path.IsAbs(dst) {
			return nil, fmt.Errorf("%w: --mount-map %q: want SRC=DST, both absolute paths", ErrBadMap, v)
		}
		src, dst = path.Clean(src), path.Clean(dst)
		if seen[src] {
			return nil, fmt.Errorf("%w: --mount-map %s given twice", ErrBadMap, src)
		}
		seen[src] = true
		out = append(out, Map{src, dst})
	}
	// Longest source first: the most specific mapping wins.
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].Src) > len(out[j].Src) })
	return out, nil
}

// Apply maps p by the first mapping whose SRC is p or a parent of it (by
// whole path components), and records that SRC in used. It returns p
// unchanged and false when none matches.
func (ms Maps) Apply(p string, used map[string]bool) (string, bool) {
	p = path.Clean(p)
	for _, m := range ms {
		if m.Src == "/" {
			used[m.Src] = true
			return path.Join(m.Dst, p), true
		}
		if p == m.Src {
			used[m.Src] = true
			return m.Dst, true
		}
		if rest, ok := strings.CutPrefix(p, m.Src+"/"); ok {
			used[m.Src] = true
			return path.Join(m.Dst, rest), true
		}
	}
	return p, false
}
