package ckpt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/containers/image/v5/oci/layout"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// TestToCRIO builds the fixture as push does by default and reads back
// what CRI-O reads: spec.dump's CRI annotations and config.dump's
// rootfsImageRef, with the rest of both files as they were.
func TestToCRIO(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	archive := ckpttest.Tar(t, ckpttest.Archive(t))
	built, err := buildInto(t, ctx, bytes.NewReader(archive), dir, BuildOptions{
		Rewrite: ToCRIO(),
		Annotate: func(cfg *dump.Config) (map[string]string, error) {
			return map[string]string{AnnFormat: FormatVersion, AnnCRIOName: cfg.Name()}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	src, err := ref.NewImageSource(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	img, err := Open(ctx, src, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
		Mounts      []any             `json:"mounts"`
	}
	if err := json.Unmarshal(img.SpecDump, &spec); err != nil {
		t.Fatal(err)
	}
	if got := spec.Annotations[SpecAnnCRIOAnnotations]; got != "{}" {
		t.Errorf("spec.dump %s = %q, want {}", SpecAnnCRIOAnnotations, got)
	}
	if spec.Annotations["io.container.manager"] != "libpod" || len(spec.Mounts) != 13 {
		t.Errorf("spec.dump lost content: %d mounts, annotations %v", len(spec.Mounts), spec.Annotations)
	}
	id := img.Config.RootfsImageID()
	if got := img.Config.String("rootfsImageRef"); got != id || len(id) != 64 {
		t.Errorf("rootfsImageRef %q, want the image ID %q", got, id)
	}
	if built.Config.String("rootfsImageRef") != id || !neutral(built.Config) {
		t.Errorf("Built.Config does not show the rewritten, neutral config.dump")
	}
}

func TestCRIOSpecDump(t *testing.T) {
	kept := []byte(`{"annotations":{"io.kubernetes.cri-o.Annotations":"{\"io.kubernetes.container.hash\":\"1\"}"}}`)
	if got, err := crioSpecDump(kept); err != nil || !bytes.Equal(got, kept) {
		t.Errorf("a valid value was changed: %s, %v", got, err)
	}
	for in, want := range map[string]string{
		`{"ociVersion":"1.0.2"}`:                                  `{"annotations":{"io.kubernetes.cri-o.Annotations":"{}"},"ociVersion":"1.0.2"}`,
		`{"annotations":null}`:                                    `{"annotations":{"io.kubernetes.cri-o.Annotations":"{}"}}`,
		`{"annotations":{"io.kubernetes.cri-o.Annotations":"{"}}`: `{"annotations":{"io.kubernetes.cri-o.Annotations":"{}"}}`,
	} {
		got, err := crioSpecDump([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("crioSpecDump(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{`[]`, `{"annotations":[1]}`, `not json`} {
		if _, err := crioSpecDump([]byte(in)); !errors.Is(err, ErrBadArchive) {
			t.Errorf("crioSpecDump(%s): err = %v, want ErrBadArchive", in, err)
		}
	}
}

func TestCRIOConfigDump(t *testing.T) {
	for in, want := range map[string]string{
		`{"rootfsImageID":"` + hex64 + `"}`:                                  hex64,
		`{"rootfsImageID":"` + hex64 + `","rootfsImageRef":"` + other + `"}`: other, // CRI-O's own
		`{"rootfsImageID":"abc"}`:                                            "",
		`{}`:                                                                 "",
	} {
		out, err := crioConfigDump([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := dump.ReadConfig(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.String("rootfsImageRef"); got != want {
			t.Errorf("crioConfigDump(%s): rootfsImageRef %q, want %q", in, got, want)
		}
	}
}

const (
	hex64 = "ce4431b29f264c3b9f84b8b7d2e4531939b834fa8d13faf7d261d3b1058a57dd"
	other = "0000000000000000000000000000000000000000000000000000000000000001"
)

// neutral reports whether none of config.dump's host path fields remain:
// what Neutralize removes.
func neutral(c *dump.Config) bool {
	for _, k := range dump.HostPathFields {
		if c.String(k) != "" {
			return false
		}
	}
	return !bytes.Contains(c.Raw("mounts"), []byte("/userdata/shm"))
}
