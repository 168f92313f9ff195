package transfer

import (
	"context"
	"errors"
	"testing"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

func TestParseReference(t *testing.T) {
	tests := []struct {
		in, transport, display string
		wantErr                bool
	}{
		{"127.0.0.1:5000/ckpt/web:v1", "docker", "127.0.0.1:5000/ckpt/web:v1", false},
		{"registry.example:5000/web", "docker", "registry.example:5000/web:latest", false},
		{"localhost/web:1", "docker", "localhost/web:1", false},
		{"docker://127.0.0.1:5000/web:v1", "docker", "127.0.0.1:5000/web:v1", false},
		{"docker.io/library/web:1", "docker", "docker.io/library/web:1", false},
		{"oci:/tmp/layout:web", "oci", "oci:/tmp/layout:web", false},
		{"oci-archive:/tmp/web.tar", "oci-archive", "oci-archive:/tmp/web.tar", false},
		{"dir:/tmp/web", "dir", "dir:/tmp/web", false},
		{"127.0.0.1:5000/web:v1@sha256:be830bd6003ad9c96056b82b4e47d220bea005c75096c9628798d38ce64ab981", "docker", "127.0.0.1:5000/web@sha256:be830bd6003ad9c96056b82b4e47d220bea005c75096c9628798d38ce64ab981", false},
		{"web:latest", "", "", true}, // would silently mean Docker Hub
		{"web", "", "", true},
		{"", "", "", true},
		{"Bad/UPPER:tag", "", "", true},
		{"docker://", "", "", true},
		{"containers-storage:localhost/web:1", "", "", true}, // this machine's own store
		{"tarball:/etc/shadow", "", "", true},
		{"docker-daemon:web:1", "", "", true},
	}
	for _, tt := range tests {
		ref, err := ParseReference(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrBadReference) {
				t.Errorf("ParseReference(%q) = %v, want ErrBadReference", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseReference(%q): %v", tt.in, err)
			continue
		}
		if got := ref.Transport().Name(); got != tt.transport {
			t.Errorf("ParseReference(%q) transport %q, want %q", tt.in, got, tt.transport)
		}
		if got := Display(ref); got != tt.display {
			t.Errorf("Display(%q) = %q, want %q", tt.in, got, tt.display)
		}
	}
}

func TestSystemContextTLS(t *testing.T) {
	if sys := (Options{}).SystemContext(); sys.DockerInsecureSkipTLSVerify != types.OptionalBoolUndefined {
		t.Error("unset --tls-verify must leave registries.conf in charge")
	}
	if sys := (Options{TLSVerify: TLSVerify(true, false)}).SystemContext(); sys.DockerInsecureSkipTLSVerify != types.OptionalBoolTrue || !sys.OCIInsecureSkipTLSVerify {
		t.Error("--tls-verify=false must skip verification")
	}
	if sys := (Options{TLSVerify: TLSVerify(true, true)}).SystemContext(); sys.DockerInsecureSkipTLSVerify != types.OptionalBoolFalse {
		t.Error("--tls-verify=true must verify")
	}
}

// TestPullKeepsUncompressedLayers: an image whose layers are plain tar (as
// podman's own `podman push IMAGE oci:DIR` of a checkpoint image writes
// them) arrives in staging as it is, so its manifest digest is still the
// one planned.
func TestPullKeepsUncompressedLayers(t *testing.T) {
	ctx := context.Background()
	src := ckpttest.WriteImage(t, t.TempDir(), []ckpttest.Layer{{Tar: ckpttest.Tar(t, ckpttest.Archive(t))}},
		map[string]string{ckpt.AnnRuntimeName: "runc"})
	s, err := src.NewImageSource(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	mb, _, err := s.GetManifest(ctx, nil)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	local, err := layout.NewReference(t.TempDir(), "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Copy(ctx, "pulling", local, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(mb); d != want {
		t.Fatalf("staged manifest %s, source %s: the layers were changed on the way", d, want)
	}
}
