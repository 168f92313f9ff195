package transfer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/image/v5/oci/layout"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// TestClassifyRealMismatch alters a blob where it is stored and copies the
// image with copy.Image: the error containers/image gives must be told
// apart as ErrDigestMismatch, whatever its wording in this version.
func TestClassifyRealMismatch(t *testing.T) {
	dir := t.TempDir()
	layer := ckpttest.Tar(t, ckpttest.Archive(t))
	src := ckpttest.WriteImage(t, dir, []ckpttest.Layer{{Tar: layer}}, map[string]string{ckpt.AnnRuntimeName: "runc"})
	blob := filepath.Join(dir, "blobs", "sha256", digest.FromBytes(layer).Encoded())
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tampered"), int64(len(layer)/2)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	dst, err := layout.NewReference(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Copy(context.Background(), "pulling", dst, src, Options{SignaturePolicy: policy})
	var terr *Error
	if !errors.Is(err, ErrDigestMismatch) || !errors.As(err, &terr) {
		t.Fatalf("err = %v, want a transfer.Error wrapping ErrDigestMismatch", err)
	}
	if !strings.Contains(err.Error(), digest.FromBytes(layer).String()) {
		t.Errorf("error %q does not name the blob's digest", err)
	}
}

func TestClassify(t *testing.T) {
	for msg, want := range map[string]bool{
		"writing blob: Digest did not match, expected sha256:aa, got sha256:bb":       true,
		"reading manifest: Manifest does not match provided manifest digest sha256:a": true,
		"Download config.json digest sha256:a does not match expected sha256:b":       true,
		"pinging container registry: connection refused":                              false,
		"reading config.json digest sha256:a":                                         false,
	} {
		if got := errors.Is(classify(errors.New(msg)), ErrDigestMismatch); got != want {
			t.Errorf("classify(%q) mismatch = %v, want %v", msg, got, want)
		}
	}
	if classify(nil) != nil {
		t.Error("classify(nil) != nil")
	}
}
