// Package tarsafe checks tar entries from untrusted checkpoint images before
// anything reaches podman. podman 4.3.1 extracts checkpoint archives, and the
// root-filesystem diff inside them, with a plain (non-chroot) untar into host
// directories, so every name and link must be proven harmless here first.
package tarsafe

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrUnsafe is wrapped by every rejection, so callers can tell hostile or
// broken input apart from I/O failures.
var ErrUnsafe = fault.New(fault.Input, "unsafe archive entry")

// Policy says which kinds of entry an archive may hold.
type Policy int

const (
	// Plain allows regular files and directories only: the members of a
	// checkpoint archive (CRIU images, dumps) are never anything else.
	Plain Policy = iota
	// Tree allows what a file tree legitimately holds (a root-filesystem
	// diff, a volume): also symbolic and hard links and FIFOs. Device nodes
	// are never allowed.
	Tree
)

// EntryError names the entry that was rejected and why.
type EntryError struct {
	Name   string
	Reason string
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("archive entry %q: %s", e.Name, e.Reason)
}

// Unwrap makes errors.Is(err, ErrUnsafe) hold.
func (e *EntryError) Unwrap() error { return ErrUnsafe }

// Checker checks the entries of one archive in order. It remembers the
// archive's own symbolic links, because an entry written beneath one of them
// would land wherever the link points.
type Checker struct {
	policy  Policy
	links   map[string]bool
	regular map[string]bool
}

// NewChecker returns a Checker for one archive.
func NewChecker(p Policy) *Checker {
	return &Checker{policy: p, links: map[string]bool{}, regular: map[string]bool{}}
}

// Check rejects an entry that could write outside the extraction directory
// or create something the policy does not allow. It returns the entry's name
// in clean relative form ("./a/b/" gives "a/b"; the root itself gives ".").
func (c *Checker) Check(h *tar.Header) (string, error) {
	name, err := CleanName(h.Name)
	if err != nil {
		return "", err
	}
	fail := func(format string, a ...any) (string, error) {
		return "", &EntryError{Name: h.Name, Reason: fmt.Sprintf(format, a...)}
	}
	if c.BeneathLink(name) {
		return fail("lies beneath a symbolic link from the same archive")
	}
	if name != "." {
		delete(c.links, name)
		delete(c.regular, name)
	}
	switch h.Typeflag {
	case tar.TypeDir:
	case tar.TypeReg, tar.TypeGNUSparse: // the reader already maps TypeRegA
		c.regular[name] = true
	case tar.TypeSymlink:
		if c.policy != Tree {
			return fail("symbolic links are not allowed here")
		}
		if name == "." {
			return fail("the archive root cannot be a link")
		}
		if h.Linkname == "" || len(h.Linkname) > maxPath {
			return fail("symbolic link target empty or longer than %d bytes", maxPath)
		}
		// An absolute target resolves inside the container's root at run
		// time; a relative one must not climb out of the tree.
		if !path.IsAbs(h.Linkname) && escapes(path.Join(path.Dir(name), h.Linkname)) {
			return fail("symbolic link points outside the archive (%q)", h.Linkname)
		}
		c.links[name] = true
	case tar.TypeLink:
		if c.policy != Tree {
			return fail("hard links are not allowed here")
		}
		target, err := CleanName(h.Linkname)
		if err != nil || target == "." {
			return fail("hard link target %q is not a path inside the archive", h.Linkname)
		}
		if !c.regular[target] {
			return fail("hard link target %q is not a regular file earlier in the archive", h.Linkname)
		}
		c.regular[name] = true
	case tar.TypeFifo:
		if c.policy != Tree {
			return fail("FIFOs are not allowed here")
		}
	case tar.TypeChar, tar.TypeBlock:
		return fail("device nodes are not allowed")
	default:
		return fail("entry type %q is not allowed", string(h.Typeflag))
	}
	return name, nil
}

// maxPath is Linux's PATH_MAX: podman could not create a longer path, and
// it bounds the work BeneathLink does per entry.
const maxPath = 4096

// CleanName returns an entry name in clean relative form, rejecting absolute
// names, ".." components, empty names and names longer than PATH_MAX.
func CleanName(raw string) (string, error) {
	if raw == "" {
		return "", &EntryError{Name: raw, Reason: "empty name"}
	}
	if len(raw) > maxPath {
		return "", &EntryError{Name: raw[:64] + "…", Reason: fmt.Sprintf("name longer than %d bytes", maxPath)}
	}
	if strings.HasPrefix(raw, "/") {
		return "", &EntryError{Name: raw, Reason: "absolute path"}
	}
	if strings.ContainsRune(raw, 0) || strings.Contains(raw, "\\") {
		return "", &EntryError{Name: raw, Reason: "name contains a NUL or backslash"}
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return "", &EntryError{Name: raw, Reason: `".." in path`}
		}
	}
	return path.Clean(raw), nil
}

func escapes(p string) bool {
	return p == ".." || strings.HasPrefix(p, "../") || path.IsAbs(p)
}

// BeneathLink reports whether name (clean, relative) lies beneath one of the
// archive's symbolic links seen so far.
func (c *Checker) BeneathLink(name string) bool {
	if len(c.links) == 0 {
		return false
	}
	for p := path.Dir(name); p != "." && p != "/"; p = path.Dir(p) {
		if c.links[p] {
			return true
		}
	}
	return false
}

// Verify reads a whole archive and checks every entry under the policy and
// against the budget (nil: unbounded), returning the Checker so its links
// can be consulted afterwards. It drains r so it can sit on the far side of
// a tee.
func Verify(r io.Reader, p Policy, b *Budget) (*Checker, error) {
	c := NewChecker(p)
	if err := c.Walk(b.Reader(r), ErrUnsafe, b, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// Walk reads one tar stream, checks every entry with c and counts it
// against budget (nil: unbounded), and passes each entry but the root to
// fn (nil: none) under its clean name, with its body. Errors of the stream
// itself wrap bad (ErrUnsafe for pulled content); fn's come back as they
// are, but for a body cut short, which is the stream's fault; an
// interrupted read (context.Canceled) is not the stream's fault either.
// After the last entry Walk reads r to its end, so that a hash teed from r
// covers the trailing padding that GNU tar and Python's tarfile write. The
// caller bounds the bytes of r (Budget.Reader).
func (c *Checker) Walk(r io.Reader, bad error, budget *Budget, fn func(name string, h *tar.Header, body io.Reader) error) error {
	rd := c.NewReader(r, bad, budget)
	for {
		name, h, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if fn == nil {
			continue
		}
		if err := fn(name, h, rd); err != nil {
			return rd.Blame(name, err)
		}
	}
}

// Reader is Walk turned inside out: the caller asks for each entry, so a
// stream can be read in parts (the head of an archive, then the rest).
type Reader struct {
	c      *Checker
	r      io.Reader
	tr     *tar.Reader
	bad    error
	budget *Budget
}

// NewReader reads r entry by entry as Walk does.
func (c *Checker) NewReader(r io.Reader, bad error, budget *Budget) *Reader {
	return &Reader{c: c, r: r, tr: tar.NewReader(r), bad: bad, budget: budget}
}

// Next returns the next entry but the root, checked and counted, under its
// clean name; its body is read from the Reader. After the last entry it
// reads the stream to its end and returns io.EOF.
func (rd *Reader) Next() (string, *tar.Header, error) {
	for {
		h, err := rd.tr.Next()
		if errors.Is(err, io.EOF) {
			if _, err := io.Copy(io.Discard, rd.r); err != nil {
				if errors.Is(err, ErrTooLarge) {
					return "", nil, err
				}
				return "", nil, fmt.Errorf("%w: reading past the end of the archive: %w", rd.bad, err)
			}
			return "", nil, io.EOF
		}
		if errors.Is(err, ErrTooLarge) {
			return "", nil, err
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return "", nil, err // interrupted, not a bad archive
			}
			return "", nil, fmt.Errorf("%w: reading: %w", rd.bad, err)
		}
		if err := rd.budget.Entry(h); err != nil {
			return "", nil, err
		}
		name, err := rd.c.Check(h)
		if err != nil {
			if !errors.Is(err, rd.bad) {
				err = fmt.Errorf("%w: %w", rd.bad, err)
			}
			return "", nil, err
		}
		if name != "." {
			return name, h, nil
		}
	}
}

// Read reads the current entry's body.
func (rd *Reader) Read(p []byte) (int, error) { return rd.tr.Read(p) }

// Blame returns err, from handling entry name, as the stream's fault when
// the body was cut short: a member cut short is the archive's fault,
// whoever read it.
func (rd *Reader) Blame(name string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, rd.bad) {
		return fmt.Errorf("%w: %s: %w", rd.bad, name, err)
	}
	return err
}

// CheckDeletedPath checks one entry of podman's deleted.files: podman joins
// it to the container's root on the host and removes the result
// recursively, so it must name something strictly inside that root.
func CheckDeletedPath(p string) error {
	rel := strings.TrimLeft(p, "/")
	if rel == "" {
		return &EntryError{Name: p, Reason: "deleting the container's root is not allowed"}
	}
	if _, err := CleanName(rel); err != nil {
		return &EntryError{Name: p, Reason: "not a path inside the container"}
	}
	return nil
}
