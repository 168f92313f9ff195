package ckpt

import (
	"archive/tar"
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

var podmanAnn = map[string]string{AnnRuntimeName: "runc", AnnName: "web"}

// base is a valid single-layer checkpoint image, as podman's
// --create-image makes them; tests append one hostile entry to it.
func base(t *testing.T, extra ...ckpttest.Entry) []byte {
	return ckpttest.Tar(t, append(ckpttest.Archive(t), extra...))
}

func open(t *testing.T, layers []ckpttest.Layer, ann map[string]string) error {
	t.Helper()
	ref := ckpttest.WriteImage(t, t.TempDir(), layers, ann)
	src, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = Open(context.Background(), src, Limits{})
	return err
}

func TestOpenAcceptsPodmanImage(t *testing.T) {
	if err := open(t, []ckpttest.Layer{{Tar: base(t)}}, podmanAnn); err != nil {
		t.Fatalf("single-layer podman-style image refused: %v", err)
	}
}

// rejectCase is a hostile or broken image and the class of error it must
// be refused with.
type rejectCase struct {
	name    string
	layers  []ckpttest.Layer
	ann     map[string]string
	wantErr error
}

// rejectCases are the images Open must refuse, and so must every other
// way pull verifies an image (TestFetchingRejects).
func rejectCases(t *testing.T) []rejectCase {
	nested := func(entries ...ckpttest.Entry) []byte { return ckpttest.Tar(t, entries) }
	return []rejectCase{
		{"plain image, no annotations", []ckpttest.Layer{{Tar: base(t)}}, nil, ErrNotCheckpoint},
		{"annotated but no config.dump", []ckpttest.Layer{{Tar: nested(ckpttest.Entry{Name: "checkpoint/", Type: tar.TypeDir})}}, podmanAnn, ErrNotCheckpoint},
		{"an OS image", []ckpttest.Layer{{Tar: nested(ckpttest.Entry{Name: "bin/sh", Body: []byte("x")})}}, podmanAnn, tarsafe.ErrUnsafe},
		{"dotdot entry", []ckpttest.Layer{{Tar: base(t, ckpttest.Entry{Name: "../../../../tmp/x/a", Body: []byte("x")})}}, podmanAnn, tarsafe.ErrUnsafe},
		{"absolute entry", []ckpttest.Layer{{Tar: base(t, ckpttest.Entry{Name: "/etc/cron.d/x", Body: []byte("x")})}}, podmanAnn, tarsafe.ErrUnsafe},
		{"symlink entry", []ckpttest.Layer{{Tar: base(t, ckpttest.Entry{Name: "checkpoint/evil", Type: tar.TypeSymlink, Linkname: "/etc"})}}, podmanAnn, tarsafe.ErrUnsafe},
		{"device node", []ckpttest.Layer{{Tar: base(t, ckpttest.Entry{Name: "checkpoint/mem", Type: tar.TypeChar})}}, podmanAnn, tarsafe.ErrUnsafe},
		{"whiteout", []ckpttest.Layer{{Tar: base(t, ckpttest.Entry{Name: "checkpoint/.wh.pages-1.img"})}}, podmanAnn, tarsafe.ErrUnsafe},
		{"rootfs diff climbing out", []ckpttest.Layer{{Tar: replace(t, RootfsDiffTar, nested(ckpttest.Entry{Name: "../../etc/passwd", Body: []byte("x")}))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"rootfs diff writes through its link", []ckpttest.Layer{{Tar: replace(t, RootfsDiffTar, nested(
			ckpttest.Entry{Name: "lib", Type: tar.TypeSymlink, Linkname: "/etc"},
			ckpttest.Entry{Name: "lib/shadow", Body: []byte("x")}))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"rootfs diff relative link out", []ckpttest.Layer{{Tar: replace(t, RootfsDiffTar, nested(ckpttest.Entry{Name: "a", Type: tar.TypeSymlink, Linkname: "../../../"}))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"rootfs diff device", []ckpttest.Layer{{Tar: replace(t, RootfsDiffTar, nested(ckpttest.Entry{Name: "dev/sda", Type: tar.TypeBlock}))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"volume tar climbing out", []ckpttest.Layer{{Tar: replace(t, "volumes/fixvol.tar", nested(ckpttest.Entry{Name: "../x", Body: []byte("x")}))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"deleted.files climbing out", []ckpttest.Layer{{Tar: replace(t, DeletedFiles, []byte(`["/../../../etc"]`))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"deleted.files root", []ckpttest.Layer{{Tar: replace(t, DeletedFiles, []byte(`["/"]`))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"deleted.files not JSON", []ckpttest.Layer{{Tar: replace(t, DeletedFiles, []byte(`rm -rf`))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"config.dump not JSON", []ckpttest.Layer{{Tar: replace(t, ConfigDump, []byte(`{`))}}, podmanAnn, tarsafe.ErrUnsafe},
		{"diff ID lies", []ckpttest.Layer{{Tar: base(t), DiffID: digest.FromString("other")}}, podmanAnn, tarsafe.ErrUnsafe},
		{"member in the wrong role's layer", []ckpttest.Layer{{Tar: base(t), Annotations: map[string]string{AnnLayerRole: "criu"}}}, podmanAnn, tarsafe.ErrUnsafe},
		{"member twice", []ckpttest.Layer{{Tar: base(t)}, {Tar: nested(ckpttest.Entry{Name: "checkpoint/pages-1.img", Body: []byte("x")})}}, podmanAnn, tarsafe.ErrUnsafe},
	}
}

func TestOpenRejects(t *testing.T) {
	for _, tt := range rejectCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			err := open(t, tt.layers, tt.ann)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			t.Log(err)
		})
	}
}

// replace returns the standard archive with one member's body swapped.
func replace(t *testing.T, name string, body []byte) []byte {
	entries := ckpttest.Archive(t)
	for i := range entries {
		if entries[i].Name == name {
			entries[i].Body = body
		}
	}
	return ckpttest.Tar(t, entries)
}

// deletedBeneathLink is an image whose deleted.files reaches through a
// link that its rootfs-diff.tar creates.
func deletedBeneathLink(t *testing.T) []ckpttest.Layer {
	entries := ckpttest.Archive(t)
	for i := range entries {
		switch entries[i].Name {
		case RootfsDiffTar:
			entries[i].Body = ckpttest.Tar(t, []ckpttest.Entry{{Name: "x", Type: tar.TypeSymlink, Linkname: "/"}})
		case DeletedFiles:
			entries[i].Body = []byte(`["/x/etc/passwd"]`)
		}
	}
	return []ckpttest.Layer{{Tar: ckpttest.Tar(t, entries)}}
}

func TestDeletedFileBeneathDiffLink(t *testing.T) {
	err := open(t, deletedBeneathLink(t), podmanAnn)
	if !errors.Is(err, tarsafe.ErrUnsafe) {
		t.Fatalf("err = %v, want ErrUnsafe", err)
	}
}
