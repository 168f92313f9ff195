package kube

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// TestCheckBaseCommand reads base images from a registry (go-containerregistry's,
// over plain HTTP) as the node would pull them: by digest, a list by the
// instance for this platform.
func TestCheckBaseCommand(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	plain := transfer.Options{TLSVerify: transfer.TLSVerify(true, false), Retries: -1}
	push := func(repo string, cfg ggcrv1.Config, list bool) string {
		t.Helper()
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.Config(img, cfg); err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf.OS, cf.Architecture = "linux", "amd64"
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(host + "/" + repo + ":v1")
		if err != nil {
			t.Fatal(err)
		}
		var d ggcrv1.Hash
		if list {
			idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: ggcrv1.Descriptor{Platform: &ggcrv1.Platform{OS: "linux", Architecture: "amd64"}}})
			if err := remote.WriteIndex(ref, idx); err != nil {
				t.Fatal(err)
			}
			d, err = idx.Digest()
		} else {
			if err := remote.Write(ref, img); err != nil {
				t.Fatal(err)
			}
			d, err = img.Digest()
		}
		if err != nil {
			t.Fatal(err)
		}
		return host + "/" + repo + "@" + d.String()
	}
	for _, tt := range []struct {
		name string
		cfg  ggcrv1.Config
		list bool
		want error
	}{
		{"CMD", ggcrv1.Config{Cmd: []string{"/bin/workload"}}, false, nil},
		{"ENTRYPOINT", ggcrv1.Config{Entrypoint: []string{"/bin/workload"}}, false, nil},
		{"neither", ggcrv1.Config{Env: []string{"PATH=/bin"}}, false, ErrNoCommand},
		{"neither, in a list", ggcrv1.Config{}, true, ErrNoCommand},
		{"CMD, in a list", ggcrv1.Config{Cmd: []string{"sh"}}, true, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := push(strings.ToLower(strings.NewReplacer(" ", "-", ",", "").Replace(tt.name)), tt.cfg, tt.list)
			err := checkBaseCommand(context.Background(), base, plain)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil && (!strings.Contains(err.Error(), base) || !strings.Contains(fault.HintOf(err), "buildah config --cmd") || fault.KindOf(err) != fault.Input) {
				t.Errorf("err %v (hint %q) does not name the image and the fix", err, fault.HintOf(err))
			}
		})
	}
	// A base image the registry does not have is the registry's fault.
	err := checkBaseCommand(context.Background(), host+"/gone@sha256:"+strings.Repeat("0", 64), plain)
	if fault.KindOf(err) != fault.Registry {
		t.Fatalf("missing base image: %v (kind %v), want a registry error", err, fault.KindOf(err))
	}
}
