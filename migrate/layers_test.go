package migrate

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/podman-migrate/podman-migrate/"

// floors are the top-level folders from the top down: a package imports
// only from floors below its own. internal/ (small shared pieces: the
// format, tar checks, transfers, error kinds) is the ground floor, one
// floor whose packages share it; bindings, our podman client, stands on
// it, and its fake (bindings/podmantest) with it.
var floors = map[string]int{"plugin": 5, "migrate": 4, "export": 3, "import": 3, "bindings": 2, "internal": 1}

// TestImportsRunDown: no package imports one on its own floor or above
// (test files included, but for the e2e tier and the test program).
func TestImportsRunDown(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		top := strings.Split(filepath.ToSlash(rel), "/")[0]
		from, ok := floors[top]
		if !ok {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(p, module) {
				continue
			}
			to := strings.Split(strings.TrimPrefix(p, module), "/")[0]
			checked++
			if to == top && (top == "internal" || top == "bindings") {
				continue
			}
			if floors[to] >= from {
				t.Errorf("%s imports %s: %s is on floor %d, not below %s's %d", rel, p, to, floors[to], top, from)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d imports checked: the walk missed the tree", checked)
	}
}
