package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestManPagesDocumentEveryFlag keeps docs/*.md in step with the commands.
func TestManPagesDocumentEveryFlag(t *testing.T) {
	root := newRootCmd(nil, nil)
	page := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "docs", name+".1.md"))
		if err != nil {
			t.Fatalf("no man page for %s: %v", name, err)
		}
		return string(b)
	}
	top := page("podman-migrate")
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(top, "--"+f.Name) {
			t.Errorf("podman-migrate.1.md lacks --%s", f.Name)
		}
	})
	for _, cmd := range root.Commands() {
		if cmd.Hidden || cmd.Name() == "help" || cmd.Name() == "completion" {
			continue
		}
		doc := page("podman-migrate-" + cmd.Name())
		if !strings.Contains(top, "podman-migrate-"+cmd.Name()+"(1)") {
			t.Errorf("podman-migrate.1.md does not list %s", cmd.Name())
		}
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !strings.Contains(doc, "--"+f.Name) {
				t.Errorf("podman-migrate-%s.1.md lacks --%s", cmd.Name(), f.Name)
			}
		})
	}
}
