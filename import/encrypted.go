package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// Staged is an encrypted checkpoint image, fetched whole and decrypted
// into a local layout before planning: its metadata layer cannot be read
// in place. A nil *Staged is an image read in place.
type Staged struct {
	dir    string
	digest digest.Digest // the manifest digest of the image as published
}

// Remove removes the staged copy, if any.
func (s *Staged) Remove() {
	if s != nil {
		_ = os.RemoveAll(s.dir)
	}
}

// fetchDecrypted copies the image at ref, pinned to its manifest mb,
// whole into a new staging directory (0700) while copy.Image decrypts it,
// and reads its metadata there. The caller checked the keys first
// (transfer.CheckDecryption), so a wrong key fails before any download.
func fetchDecrypted(ctx context.Context, ref types.ImageReference, mb []byte, o transfer.Options, lim ckpt.Limits, tmpDir string) (*ckpt.Metadata, *Staged, error) {
	var published imgspecv1.Manifest
	if err := json.Unmarshal(mb, &published); err != nil {
		return nil, nil, fmt.Errorf("%w: parsing the manifest: %w", tarsafe.ErrUnsafe, err)
	}
	d := digest.FromBytes(mb)
	if o.Report != nil {
		fmt.Fprintf(o.Report, "The image's layers are encrypted: fetching and decrypting all of it before planning\n")
	}
	dir, err := os.MkdirTemp(transfer.StagingDir(tmpDir), "podman-migrate-pull-")
	if err != nil {
		return nil, nil, fmt.Errorf("creating a staging directory: %w", err)
	}
	s := &Staged{dir: dir, digest: d}
	meta, err := func() (*ckpt.Metadata, error) {
		local, err := layout.NewReference(dir, "checkpoint")
		if err != nil {
			return nil, err
		}
		from, err := transfer.Pinned(ref, d)
		if err != nil {
			return nil, err
		}
		if _, err := transfer.Copy(ctx, "pulling", local, from, o); err != nil {
			return nil, err
		}
		src, err := local.NewImageSource(ctx, nil)
		if err != nil {
			return nil, err
		}
		defer src.Close()
		meta, err := ckpt.ReadMetadata(ctx, src, lim)
		if err != nil {
			return nil, fmt.Errorf("checking %s: %w", transfer.Display(ref), err)
		}
		return meta, nil
	}()
	if err != nil {
		s.Remove()
		return nil, nil, err
	}
	// Plans, pins and inspect show the image as published (its layers
	// encrypted), not the decrypted copy; copy.Image checked that they
	// are the same image.
	meta.ManifestDigest, meta.Manifest = d, published
	return meta, s, nil
}

// Fetch puts the image staged while planning where the pull stages it,
// local in the empty directory dir: a rename when both lie on one file
// system, else a copy.
func (s *Staged) Fetch(ctx context.Context, dir string, local types.ImageReference, o transfer.Options) error {
	if err := os.Remove(dir); err == nil && os.Rename(s.dir, dir) == nil {
		return nil
	}
	staged, err := layout.NewReference(s.dir, "checkpoint")
	if err != nil {
		return err
	}
	_, err = transfer.Copy(ctx, "pulling", local, staged, o)
	return err
}
