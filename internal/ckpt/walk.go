package ckpt

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// walk reads one tar stream of checkpoint members, checks every entry with
// tarsafe (Plain: members are only ever files and directories) and passes
// each one but the root to fn, under its clean name. Errors of the stream
// itself wrap bad; fn's errors come back as they are. After the last entry
// walk reads r to its end, so that a hash teed from r covers the trailing
// padding that GNU tar and Python's tarfile write. Every entry is counted
// against budget (nil: unbounded); the caller bounds the bytes of r.
func walk(r io.Reader, bad error, budget *tarsafe.Budget, fn func(name string, h *tar.Header, body io.Reader) error) error {
	check := tarsafe.NewChecker(tarsafe.Plain)
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if _, err := io.Copy(io.Discard, r); err != nil {
				if errors.Is(err, tarsafe.ErrTooLarge) {
					return err
				}
				return fmt.Errorf("%w: reading past the end of the archive: %w", bad, err)
			}
			return nil
		}
		if errors.Is(err, tarsafe.ErrTooLarge) {
			return err
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err // interrupted, not a bad archive
			}
			return fmt.Errorf("%w: reading: %w", bad, err)
		}
		if err := budget.Entry(h); err != nil {
			return err
		}
		name, err := check.Check(h)
		if err != nil {
			if !errors.Is(err, bad) {
				err = fmt.Errorf("%w: %w", bad, err)
			}
			return err
		}
		if name == "." {
			continue
		}
		if err := fn(name, h, tr); err != nil {
			// A member cut short is the archive's fault, whoever read it.
			if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, bad) {
				err = fmt.Errorf("%w: %s: %w", bad, name, err)
			}
			return err
		}
	}
}
