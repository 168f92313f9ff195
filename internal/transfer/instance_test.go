package transfer

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containers/image/v5/oci/layout"
	"github.com/opencontainers/go-digest"
)

func TestInstance(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ref, err := layout.NewReference(dir, "pod")
	if err != nil {
		t.Fatal(err)
	}
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("0", 64) + `","size":2},"layers":[]}`)
	d := digest.FromBytes(m)
	blob := filepath.Join(dir, "blobs", "sha256", d.Encoded())
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blob, m, 0o644); err != nil {
		t.Fatal(err)
	}
	index := `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d.String() + `","size":` + strconv.Itoa(len(m)) + `,"annotations":{"org.opencontainers.image.ref.name":"pod"}}]}`
	for name, body := range map[string]string{"index.json": index, "oci-layout": `{"imageLayoutVersion":"1.0.0"}`} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	inst, err := Instance(ref, d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(Display(inst), "@"+d.String()) {
		t.Fatalf("an instance shows as %q", Display(inst))
	}
	src, err := inst.NewImageSource(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got, _, err := src.GetManifest(ctx, nil)
	if err != nil || string(got) != string(m) {
		t.Fatalf("the instance's manifest: %q, %v", got, err)
	}
	// Bytes that are not the digest's are refused.
	if err := os.WriteFile(blob, append(m, ' '), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.GetManifest(ctx, nil); err == nil || !strings.Contains(err.Error(), "has digest") {
		t.Fatalf("a manifest that is not its digest's: %v", err)
	}
	if _, err := Instance(ref, "sha256:short"); err == nil {
		t.Fatal("a malformed digest was taken")
	}
	// A registry's instance is its digest reference.
	reg, err := ParseReference("registry.example/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if inst, err := Instance(reg, d); err != nil || Display(inst) != "registry.example/app@"+d.String() {
		t.Fatalf("a registry's instance: %v, %v", inst, err)
	}
}
