package ckpt

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/asyncw"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// Archive is what a restore sends podman: a verified image, or podman's
// export read while it is written (Live).
type Archive interface {
	// Meta is what planning read: the dumps and the annotations.
	Meta() *Metadata
	// WriteArchive writes podman's archive with the edits applied.
	WriteArchive(ctx context.Context, w io.Writer, e Edits) error
}

// Meta returns m: Image and Live embed it.
func (m *Metadata) Meta() *Metadata { return m }

var (
	_ Archive = (*Image)(nil)
	_ Archive = (*Live)(nil)
)

// ErrConsumed is returned by a second Live.WriteArchive: the export stream
// can be read once only.
var ErrConsumed = fault.New(fault.Podman, "the checkpoint stream was already sent once")

// LiveOptions say what Live records of the archive, as Build would in an
// image.
type LiveOptions struct {
	// Annotate returns the annotations an image of this checkpoint would
	// carry, given the neutralised config.dump.
	Annotate func(cfg *dump.Config) (map[string]string, error)
	Arch     string
	// SpillDir holds members podman writes before config.dump (the
	// /dev/shm tar) once they exceed what is held in memory; "" is
	// os.TempDir().
	SpillDir string
}

// heldInMemory bounds the bytes of the members read before planning that
// stay in memory; the rest goes to a file in LiveOptions.SpillDir.
// podman writes only artifacts/ and devshm-checkpoint.tar (of a 64 MB
// /dev/shm by default) before config.dump.
const heldInMemory = 8 << 20

// Live is podman's export archive read once, while podman writes it, for a
// restore elsewhere with no image in between (move without a registry).
// ReadLive reads the head of the archive, up to what planning needs
// (config.dump, spec.dump, network.status), holding what it read;
// WriteArchive then sends the head and streams the rest, member by member,
// each checked as Open checks an image's entries: names, kinds and the
// tars inside. A failure ends the stream before the archive's end, so
// podman, which unpacks the whole archive before it acts on any member,
// acts on none.
type Live struct {
	Metadata
	Cleared []string // config.dump fields removed as host-specific
	rd      *tarsafe.Reader
	budget  *tarsafe.Budget
	head    []held
	spill   *os.File
	next    *liveEntry // the first member past the head
	files   map[string]bool
	hasCRIU bool
	links   *tarsafe.Checker // rootfs-diff.tar's, for deleted.files
	deleted []string
	used    bool
}

type liveEntry struct {
	name string
	h    *tar.Header
}

// held is a member read before planning: its bytes in memory, or a range
// of the spill file.
type held struct {
	liveEntry
	data       []byte
	off, size  int64
	inSpill    bool
	replaceKey bool // a plan input, which edits may replace
}

// ReadLive reads the head of podman's export archive from r. r is read
// again by WriteArchive; the caller closes it.
func ReadLive(ctx context.Context, r io.Reader, lim Limits, o LiveOptions) (_ *Live, retErr error) {
	budget := lim.budget()
	l := &Live{budget: budget, files: map[string]bool{}}
	l.rd = tarsafe.NewChecker(tarsafe.Plain).NewReader(ctxReader{ctx, budget.Reader(r)}, ErrBadArchive, budget)
	defer func() {
		if retErr != nil {
			l.Close()
			if ctx.Err() != nil {
				retErr = ctx.Err()
			}
		}
	}()
	var heldBytes int64
	for {
		name, h, err := l.rd.Next()
		if errors.Is(err, io.EOF) {
			break // WriteArchive says what is missing
		}
		if err != nil {
			return nil, err
		}
		if err := l.entry(name, h); err != nil {
			return nil, err
		}
		if l.headDone(name) {
			l.next = &liveEntry{name, h}
			break
		}
		m := held{liveEntry: liveEntry{name, h}}
		if h.Typeflag != tar.TypeDir {
			if m.data, m.replaceKey, err = l.planInput(name); err != nil {
				return nil, err
			}
			if !m.replaceKey {
				if err := l.hold(&m, &heldBytes, o.SpillDir); err != nil {
					return nil, l.rd.Blame(name, err)
				}
			}
		}
		l.head = append(l.head, m)
	}
	if l.Config == nil {
		return nil, fmt.Errorf("%w: no %s before the CRIU images", ErrBadArchive, ConfigDump)
	}
	if l.SpecDump == nil {
		return nil, fmt.Errorf("%w: no %s before the CRIU images", ErrBadArchive, SpecDump)
	}
	if err := l.describe(o); err != nil {
		return nil, err
	}
	return l, nil
}

// entry checks what Open checks of every entry: a known member, in no
// whiteout, not seen before.
func (l *Live) entry(name string, h *tar.Header) error {
	if strings.HasPrefix(pathBase(name), ".wh.") {
		return fmt.Errorf("%w: %w", ErrBadArchive, &tarsafe.EntryError{Name: h.Name, Reason: "whiteouts have no place in a checkpoint archive"})
	}
	role, _, ok := RoleOf(name)
	if !ok {
		return fmt.Errorf("%w: member %q is not part of the checkpoint format this tool knows", ErrBadArchive, h.Name)
	}
	if role == RoleCRIU {
		l.hasCRIU = true
	}
	if h.Typeflag == tar.TypeDir {
		return nil
	}
	if l.files[name] {
		return fmt.Errorf("%w: %w", ErrBadArchive, &tarsafe.EntryError{Name: h.Name, Reason: "appears twice in the archive"})
	}
	l.files[name] = true
	return nil
}

// headDone says whether member name is past the head: the plan's inputs
// were seen (network.status is optional and comes right after spec.dump
// in podman's order: artifacts, devshm-checkpoint.tar, config.dump,
// spec.dump, network.status, stats-dump, ctr.log, checkpoint/, …), or
// the members that follow them began.
func (l *Live) headDone(name string) bool {
	switch name {
	case ConfigDump, SpecDump, NetworkStatus:
		return false
	}
	role, _, _ := RoleOf(name)
	if role != RoleMetadata {
		return true
	}
	return l.Config != nil && l.SpecDump != nil
}

// planInput reads config.dump (neutralised, as an image stores it),
// spec.dump or network.status; ok is false for other members.
func (l *Live) planInput(name string) ([]byte, bool, error) {
	switch name {
	case ConfigDump, SpecDump, NetworkStatus:
	default:
		return nil, false, nil
	}
	b, err := readSmall(name, l.rd)
	if err != nil {
		return nil, false, l.rd.Blame(name, err)
	}
	switch name {
	case ConfigDump:
		cfg, err := dump.ReadConfig(bytes.NewReader(b))
		if err != nil {
			return nil, false, fmt.Errorf("%w: %w", ErrBadArchive, err)
		}
		l.Cleared = cfg.Neutralize()
		if b, err = cfg.Bytes(); err != nil {
			return nil, false, err
		}
		l.Config, l.ConfigDump = cfg, b
	case SpecDump:
		if !json.Valid(b) {
			return nil, false, fmt.Errorf("%w: %s is not a JSON document", ErrBadArchive, name)
		}
		l.SpecDump = b
	case NetworkStatus:
		if !json.Valid(b) {
			return nil, false, fmt.Errorf("%w: %s is not a JSON document", ErrBadArchive, name)
		}
		l.NetworkStatus = b
	}
	return b, true, nil
}

// hold keeps another member of the head, verifying a tar inside it.
func (l *Live) hold(m *held, total *int64, dir string) error {
	if !nestedTar(m.name) {
		return l.keep(m, l.rd, total, dir)
	}
	_, err := l.verifyTee(m.name, func(body io.Reader) error { return l.keep(m, body, total, dir) })
	return err
}

// verifyTee runs use on the member's body while a tarsafe check reads the
// same bytes, and returns the check's verdict first.
func (l *Live) verifyTee(name string, use func(io.Reader) error) (*tarsafe.Checker, error) {
	c, err := verifyTee(l.rd, l.budget, use)
	var bad *nestedError
	if errors.As(err, &bad) {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadArchive, name, bad.err)
	}
	return c, err
}

func (l *Live) keep(m *held, body io.Reader, total *int64, dir string) error {
	m.size = m.h.Size
	if *total+m.size <= heldInMemory {
		*total += m.size
		m.data = make([]byte, m.size)
		_, err := io.ReadFull(body, m.data)
		return err
	}
	if l.spill == nil {
		f, err := os.CreateTemp(dir, "podman-migrate-head-")
		if err != nil {
			return fmt.Errorf("holding %s: %w", m.name, err)
		}
		os.Remove(f.Name()) // gone with the last close
		l.spill = f
	}
	off, err := l.spill.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	m.off, m.inSpill = off, true
	n, err := io.Copy(l.spill, body)
	if err == nil && n != m.size {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// describe fills what an image of this checkpoint would say of it.
func (l *Live) describe(o LiveOptions) error {
	ann := map[string]string{}
	if o.Annotate != nil {
		var err error
		if ann, err = o.Annotate(l.Config); err != nil {
			return err
		}
	}
	l.Manifest = imgspecv1.Manifest{MediaType: imgspecv1.MediaTypeImageManifest, Annotations: ann}
	l.ImageConfig = imgspecv1.Image{Platform: imgspecv1.Platform{Architecture: o.Arch, OS: "linux"}}
	var err error
	l.Options, err = OptionsFromAnnotations(ann)
	return err
}

// Close releases what the head held.
func (l *Live) Close() {
	if l.spill != nil {
		l.spill.Close()
		l.spill = nil
	}
}

// WriteArchive writes the archive to w, once: the head with the edits
// applied, then every member left in the stream, checked, renamed as the
// edits say, and the tars inside verified while they are copied.
func (l *Live) WriteArchive(ctx context.Context, w io.Writer, e Edits) (retErr error) {
	if l.used {
		return ErrConsumed
	}
	l.used = true
	aw := asyncw.New(w, stageBuffer, stageDepth)
	defer func() {
		if err := aw.Close(); retErr == nil {
			retErr = err
		}
	}()
	tw := tar.NewWriter(aw)
	edit := newApplying(e)
	out := func(name string, h *tar.Header, body io.Reader, size int64) error {
		name, body, size = edit.member(name, h, body, size)
		return WriteMember(tw, name, h, body, size)
	}
	for _, m := range l.head {
		var body io.Reader = bytes.NewReader(m.data)
		size := int64(len(m.data))
		if m.inSpill {
			body, size = io.NewSectionReader(l.spill, m.off, m.size), m.size
		}
		if err := out(m.name, m.h, body, size); err != nil {
			return err
		}
	}
	l.Close()
	for m := l.next; m != nil; {
		if err := l.stream(m, tw, out); err != nil {
			return l.rd.Blame(m.name, err)
		}
		name, h, err := l.rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := l.entry(name, h); err != nil {
			return err
		}
		m = &liveEntry{name, h}
	}
	if err := l.complete(); err != nil {
		return err
	}
	if err := edit.check("archive"); err != nil {
		return err
	}
	// Only now does podman see the archive end.
	return tw.Close()
}

// stream sends one member past the head on.
func (l *Live) stream(m *liveEntry, tw *tar.Writer, out func(string, *tar.Header, io.Reader, int64) error) error {
	switch {
	case m.name == NetworkStatus || m.name == ConfigDump || m.name == SpecDump:
		// planned without it: edits would not have seen it
		return fmt.Errorf("%w: %s comes after the CRIU images; move it through a registry (--via)", ErrBadArchive, m.name)
	case m.h.Typeflag == tar.TypeDir:
		return out(m.name, m.h, nil, 0)
	case m.name == DeletedFiles:
		b, err := readSmall(m.name, l.rd)
		if err != nil {
			return err
		}
		var deleted []string
		if json.Unmarshal(b, &deleted) != nil {
			return fmt.Errorf("%w: %w", ErrBadArchive, &tarsafe.EntryError{Name: m.name, Reason: "not a JSON list of paths"})
		}
		for _, p := range deleted {
			if err := tarsafe.CheckDeletedPath(p); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrBadArchive, m.name, err)
			}
		}
		l.deleted = deleted
		return out(m.name, m.h, bytes.NewReader(b), int64(len(b)))
	case nestedTar(m.name):
		return l.streamTar(m, out)
	}
	return out(m.name, m.h, l.rd, m.h.Size)
}

// streamTar copies a tar inside the archive on while it is verified.
func (l *Live) streamTar(m *liveEntry, out func(string, *tar.Header, io.Reader, int64) error) error {
	c, err := l.verifyTee(m.name, func(body io.Reader) error { return out(m.name, m.h, body, m.h.Size) })
	if err == nil && m.name == RootfsDiffTar {
		l.links = c
	}
	return err
}

// complete checks what the whole archive must hold.
func (l *Live) complete() error {
	if !l.hasCRIU {
		return fmt.Errorf("%w: no %s/ directory (CRIU images) in it", ErrBadArchive, CheckpointDir)
	}
	if l.links != nil {
		for _, p := range l.deleted {
			if l.links.BeneathLink(strings.TrimLeft(p, "/")) {
				return fmt.Errorf("%w: %w", ErrBadArchive, &tarsafe.EntryError{Name: p, Reason: "deleted.files entry lies beneath a symbolic link from rootfs-diff.tar"})
			}
		}
	}
	return nil
}

// nestedTar says whether a member is a tar podman unpacks on the host.
func nestedTar(name string) bool {
	return name == RootfsDiffTar || name == DevShmTar || strings.HasPrefix(name, VolumesDir+"/")
}
