package ckpt

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/containers/image/v5/oci/layout"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// TestBuildRewrite: BuildOptions.Rewrite edits members by name, config.dump
// after it is neutralised, and its errors stop the build.
func TestBuildRewrite(t *testing.T) {
	archive := ckpttest.Tar(t, ckpttest.Archive(t))
	var sawNeutral bool
	dir := t.TempDir()
	b, err := buildInto(t, context.Background(), bytes.NewReader(archive), dir, BuildOptions{
		Annotate: func(*dump.Config) (map[string]string, error) { return map[string]string{AnnFormat: FormatVersion}, nil },
		Rewrite: map[string]func([]byte) ([]byte, error){
			NetworkStatus: func([]byte) ([]byte, error) { return []byte(`{"rewritten":{}}`), nil },
			ConfigDump: func(b []byte) ([]byte, error) {
				sawNeutral = !bytes.Contains(b, []byte("conmon.pid"))
				return bytes.Replace(b, []byte(`"name":"fixture"`), []byte(`"name":"renamed"`), 1), nil
			},
			"no-such-member": func([]byte) ([]byte, error) { return nil, errors.New("never called") },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawNeutral {
		t.Error("config.dump reached Rewrite with host paths in it")
	}
	if b.Config.Name() != "renamed" {
		t.Errorf("Built.Config name %q, want the rewritten one", b.Config.Name())
	}
	ref, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	src, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	img, err := Open(context.Background(), src, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if string(img.NetworkStatus) != `{"rewritten":{}}` || img.Config.Name() != "renamed" {
		t.Errorf("image holds network.status %s, name %q: not the rewritten members", img.NetworkStatus, img.Config.Name())
	}

	boom := errors.New("boom")
	_, err = buildInto(t, context.Background(), bytes.NewReader(archive), t.TempDir(), BuildOptions{
		Rewrite: map[string]func([]byte) ([]byte, error){SpecDump: func([]byte) ([]byte, error) { return nil, boom }},
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the rewrite's", err)
	}
}
