package ckpttest

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/pkg/blobinfocache/none"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layer is one uncompressed layer of a hand-made image.
type Layer struct {
	Tar         []byte
	Annotations map[string]string
	// DiffID overrides the true diff ID, to make a lying config.
	DiffID digest.Digest
	// MediaType overrides the uncompressed layer type, for a Tar that is
	// compressed (give its DiffID then).
	MediaType string
}

// WriteImage writes an OCI layout image by hand, bypassing export.Build's
// checks, so tests can make images that podman-migrate must refuse.
func WriteImage(t testing.TB, dir string, layers []Layer, annotations map[string]string) types.ImageReference {
	t.Helper()
	ctx := context.Background()
	ref, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	dest, err := ref.NewImageDestination(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dest.Close()
	put := func(b []byte, isConfig bool) imgspecv1.Descriptor {
		info, err := dest.PutBlob(ctx, bytes.NewReader(b), types.BlobInfo{Digest: digest.FromBytes(b), Size: int64(len(b))}, none.NoCache, isConfig)
		if err != nil {
			t.Fatal(err)
		}
		return imgspecv1.Descriptor{Digest: info.Digest, Size: info.Size}
	}
	m := imgspecv1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageManifest, Annotations: annotations}
	cfg := imgspecv1.Image{Platform: imgspecv1.Platform{Architecture: "amd64", OS: "linux"}, RootFS: imgspecv1.RootFS{Type: "layers"}}
	for _, l := range layers {
		d := put(l.Tar, false)
		d.MediaType = imgspecv1.MediaTypeImageLayer
		if l.MediaType != "" {
			d.MediaType = l.MediaType
		}
		d.Annotations = l.Annotations
		m.Layers = append(m.Layers, d)
		id := l.DiffID
		if id == "" {
			id = digest.FromBytes(l.Tar)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, id)
	}
	cb, _ := json.Marshal(cfg)
	m.Config = put(cb, true)
	m.Config.MediaType = imgspecv1.MediaTypeImageConfig
	mb, _ := json.Marshal(m)
	if err := dest.PutManifest(ctx, mb, nil); err != nil {
		t.Fatal(err)
	}
	if err := dest.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return ref
}

// WriteManifest stores manifest (an image's or an index's) in the OCI
// layout at dir, tagged tag, next to what is there; the blobs it names
// must be there already.
func WriteManifest(t testing.TB, dir, tag string, manifest []byte) types.ImageReference {
	t.Helper()
	ctx := context.Background()
	ref, err := layout.NewReference(dir, tag)
	if err != nil {
		t.Fatal(err)
	}
	dest, err := ref.NewImageDestination(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dest.Close()
	if err := dest.PutManifest(ctx, manifest, nil); err != nil {
		t.Fatal(err)
	}
	if err := dest.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return ref
}
