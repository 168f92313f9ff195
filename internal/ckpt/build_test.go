package ckpt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containers/image/v5/oci/layout"
	"github.com/google/go-cmp/cmp"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// buildInto runs Build into an OCI layout in dir (tag "checkpoint").
func buildInto(t *testing.T, ctx context.Context, r io.Reader, dir string, o BuildOptions) (*Built, error) {
	t.Helper()
	ref, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	dest, err := ref.NewImageDestination(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dest.Close()
	return Build(ctx, r, dest, o)
}

func build(t *testing.T, archive []byte, comp string) (*Built, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := buildInto(t, context.Background(), bytes.NewReader(archive), dir, BuildOptions{
		Compression: comp,
		Annotate: func(cfg *dump.Config) (map[string]string, error) {
			return map[string]string{AnnFormat: FormatVersion, AnnName: cfg.Name(), AnnRuntimeName: "runc"}, nil
		},
	})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return b, dir
}

// TestRoundTrip converts an archive into an image and back, and checks the
// union of the layers is the archive again, less the host paths.
func TestRoundTrip(t *testing.T) {
	for _, comp := range []string{"zstd", "gzip"} {
		t.Run(comp, func(t *testing.T) {
			archive := ckpttest.Tar(t, ckpttest.Archive(t))
			b, dir := build(t, archive, comp)

			var roles []string
			for _, l := range b.Layers {
				roles = append(roles, string(l.Role)+"/"+l.Volume)
				if l.Desc.Annotations[AnnLayerRole] != string(l.Role) {
					t.Errorf("layer %s lacks its role annotation", l.Role)
				}
				wantType, _, _ := MediaType(comp)
				if l.Desc.MediaType != wantType {
					t.Errorf("media type %q, want %q", l.Desc.MediaType, wantType)
				}
			}
			if diff := cmp.Diff([]string{"metadata/", "criu/", "rootfs/", "volume/fixvol"}, roles); diff != "" {
				t.Fatalf("layer order (-want +got):\n%s", diff)
			}
			if b.Manifest.Annotations[AnnName] != "fixture" {
				t.Errorf("annotations: %v", b.Manifest.Annotations)
			}
			if len(b.Cleared) == 0 || !neutral(b.Config) {
				t.Errorf("config.dump not neutralised: cleared %v", b.Cleared)
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
				t.Fatalf("Open: %v", err)
			}
			var out bytes.Buffer
			if err := img.WriteArchive(context.Background(), &out, Edits{}); err != nil {
				t.Fatal(err)
			}
			want := ckpttest.Members(t, archive)
			got := ckpttest.Members(t, out.Bytes())
			if diff := cmp.Diff(ckpttest.Names(want), ckpttest.Names(got)); diff != "" {
				t.Fatalf("members (-want +got):\n%s", diff)
			}
			for name, body := range want {
				if name == ConfigDump {
					continue
				}
				if !bytes.Equal(body, got[name]) {
					t.Errorf("%s differs after the round trip", name)
				}
			}
			var cfg map[string]any
			if err := json.Unmarshal(got[ConfigDump], &cfg); err != nil {
				t.Fatal(err)
			}
			for _, k := range dump.HostPathFields {
				if _, ok := cfg[k]; ok {
					t.Errorf("config.dump still has %s", k)
				}
			}
			if cfg["name"] != "fixture" || cfg["namedVolumes"] == nil || cfg["spec"] == nil {
				t.Errorf("config.dump lost fields: %v", cfg)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	full := ckpttest.Archive(t)
	without := func(name string) []ckpttest.Entry {
		var out []ckpttest.Entry
		for _, e := range full {
			if !strings.HasPrefix(e.Name, name) {
				out = append(out, e)
			}
		}
		return out
	}
	tests := []struct {
		name    string
		entries []ckpttest.Entry
		wantErr error
	}{
		{"no config.dump", without("config.dump"), ErrBadArchive},
		{"no CRIU images", without("checkpoint"), ErrBadArchive},
		{"unknown member", append(without("zzz"), ckpttest.Entry{Name: "etc/passwd", Body: []byte("x")}), ErrBadArchive},
		{"dotdot member", append(without("zzz"), ckpttest.Entry{Name: "../x", Body: []byte("x")}), tarsafe.ErrUnsafe},
		{"symlink member", append(without("zzz"), ckpttest.Entry{Name: "checkpoint/x", Type: '2', Linkname: "/etc"}), tarsafe.ErrUnsafe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := buildInto(t, context.Background(), bytes.NewReader(ckpttest.Tar(t, tt.entries)), t.TempDir(), BuildOptions{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if _, err := buildInto(t, context.Background(), strings.NewReader("garbage that is not a tar archive"), t.TempDir(), BuildOptions{}); !errors.Is(err, ErrBadArchive) {
		t.Fatalf("garbage: err = %v", err)
	}
	if _, err := buildInto(t, context.Background(), bytes.NewReader(ckpttest.Tar(t, full)), t.TempDir(), BuildOptions{Compression: "lz4"}); err == nil {
		t.Fatal("unknown compression accepted")
	}
}

func TestBuildStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := buildInto(t, ctx, bytes.NewReader(ckpttest.Tar(t, ckpttest.Archive(t))), t.TempDir(), BuildOptions{})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrBadArchive) {
		t.Fatalf("err = %v, want context.Canceled alone", err)
	}
}

func TestBuildWithoutRootfs(t *testing.T) {
	var entries []ckpttest.Entry
	for _, e := range ckpttest.Archive(t) {
		if e.Name != "rootfs-diff.tar" && e.Name != "deleted.files" {
			entries = append(entries, e)
		}
	}
	b, _ := build(t, ckpttest.Tar(t, entries), "zstd")
	var roles []string
	for _, l := range b.Layers {
		roles = append(roles, string(l.Role))
	}
	if diff := cmp.Diff([]string{"metadata", "criu", "volume"}, roles); diff != "" {
		t.Fatalf("--ignore-rootfs layers (-want +got):\n%s", diff)
	}
}
