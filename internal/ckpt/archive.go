package ckpt

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
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

// applying applies Edits member by member, and says afterwards which
// edits met no member.
type applying struct {
	e          Edits
	done, what map[string]bool
}

func newApplying(e Edits) *applying {
	return &applying{e: e, done: map[string]bool{}}
}

// member returns the member as it goes out: renamed, or its content
// replaced (never a directory's).
func (a *applying) member(name string, h *tar.Header, body io.Reader, size int64) (string, io.Reader, int64) {
	if b, ok := a.e.Replace[name]; ok && h.Typeflag != tar.TypeDir {
		body, size = bytes.NewReader(b), int64(len(b))
		a.done["replace "+name] = true
	}
	if to, ok := a.e.Rename[name]; ok {
		a.done["rename "+name] = true
		name = to
	}
	return name, body, size
}

// check fails for an edit of a member that was not there.
func (a *applying) check(of string) error {
	for name := range a.e.Replace {
		if !a.done["replace "+name] {
			return fmt.Errorf("replacing %s: the %s has no such member", name, of)
		}
	}
	for name := range a.e.Rename {
		if !a.done["rename "+name] {
			return fmt.Errorf("renaming %s: the %s has no such member", name, of)
		}
	}
	return nil
}

// WriteArchive writes the image as podman's export archive: the layers'
// entries in order, with the edits applied. Open has already checked every
// entry; the entries are checked again because they are read again.
func (img *Image) WriteArchive(ctx context.Context, w io.Writer, e Edits) (retErr error) {
	edit := newApplying(e)
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
			out, body, size := edit.member(name, h, body, h.Size)
			return WriteMember(tw, out, h, body, size)
		})
		rc.Close()
		if err != nil {
			return fmt.Errorf("writing layer %d (%s) to podman: %w", i, desc.Digest, err)
		}
	}
	if err := edit.check("image"); err != nil {
		return err
	}
	return tw.Close()
}

// nestedError is a tar inside a member that failed its check.
type nestedError struct{ err error }

func (e *nestedError) Error() string { return e.err.Error() }
func (e *nestedError) Unwrap() error { return e.err }

// verifyTee runs use on body while a tarsafe check of the tar it holds
// reads the same bytes. The check's failure (a *nestedError) comes first:
// use then mostly fails only because the check stopped reading.
func verifyTee(body io.Reader, budget *tarsafe.Budget, use func(io.Reader) error) (*tarsafe.Checker, error) {
	pr, pw := io.Pipe()
	type verdict struct {
		c   *tarsafe.Checker
		err error
	}
	verified := make(chan verdict, 1)
	go func() {
		c, err := tarsafe.Verify(pr, tarsafe.Tree, budget.Nested())
		pr.CloseWithError(err)
		verified <- verdict{c, err}
	}()
	err := use(io.TeeReader(body, pw))
	pw.CloseWithError(err) // nil: the check reads to the end
	v := <-verified
	if v.err != nil && (err == nil || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, v.err)) {
		return nil, &nestedError{v.err}
	}
	return v.c, err
}
