package ckpt

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/podman-migrate/podman-migrate/internal/asyncw"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// Edits change members on the way back to podman's archive.
type Edits struct {
	// Replace gives members new content, by member name (config.dump,
	// spec.dump, network.status, …). A name the image lacks is an error.
	Replace map[string][]byte
	// Rename moves members, by member name (volumes/OLD.tar to
	// volumes/NEW.tar under --volume-map). A name the image lacks is an
	// error.
	Rename map[string]string
}

// WriteArchive writes the image as podman's export archive: the layers'
// entries in order, with the edits applied. Open has already checked every
// entry; the entries are checked again because they are read again.
func (img *Image) WriteArchive(ctx context.Context, w io.Writer, e Edits) (retErr error) {
	done := map[string]bool{}
	// Decompressing and walking overlap with podman reading the stream.
	aw := asyncw.New(w, stageBuffer, stageDepth)
	defer func() {
		if err := aw.Close(); retErr == nil {
			retErr = err
		}
	}()
	tw := tar.NewWriter(aw)
	for i, desc := range img.Manifest.Layers {
		rc, err := openLayer(ctx, img.src, desc)
		if err != nil {
			return err
		}
		// Read again, so held to the same limits as when verified.
		budget := img.limits.budget()
		err = tarsafe.NewChecker(tarsafe.Plain).Walk(ctxReader{ctx, budget.Reader(rc)}, tarsafe.ErrUnsafe, budget, func(name string, h *tar.Header, body io.Reader) error {
			size := h.Size
			if b, ok := e.Replace[name]; ok && h.Typeflag != tar.TypeDir {
				body, size = bytes.NewReader(b), int64(len(b))
				done[name] = true
			}
			out := name
			if to, ok := e.Rename[name]; ok {
				out = to
				done[name] = true
			}
			return WriteMember(tw, out, h, body, size)
		})
		rc.Close()
		if err != nil {
			return fmt.Errorf("writing layer %d (%s) to podman: %w", i, desc.Digest, err)
		}
	}
	for name := range e.Replace {
		if !done[name] {
			return fmt.Errorf("replacing %s: the image has no such member", name)
		}
	}
	for name := range e.Rename {
		if !done[name] {
			return fmt.Errorf("renaming %s: the image has no such member", name)
		}
	}
	return tw.Close()
}
