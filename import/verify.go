// Package restore fetches a checkpoint image, proves it harmless, and
// restores it through podman's REST API as a new container with new storage.
// (The folder is import/, a Go keyword, hence the package name.)
package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containers/image/v5/pkg/blobinfocache/none"
	"github.com/containers/image/v5/pkg/compression"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// maxMetaSize bounds manifests, configs and the JSON members read whole.
const maxMetaSize = 4 << 20

// Image is a checkpoint image in a local layout, checked entry by entry.
type Image struct {
	src      types.ImageSource
	Manifest imgspecv1.Manifest
	Config   *dump.Config // neutralised
	Cleared  []string     // host-specific fields removed from config.dump
	Volumes  []string
}

// Open reads and verifies a checkpoint image from src: the manifest must
// mark it as a checkpoint, every layer must match its diff ID, and every
// entry (and every entry of the tars inside) must pass tarsafe. Nothing is
// sent anywhere.
func Open(ctx context.Context, src types.ImageSource) (*Image, error) {
	mb, mt, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("reading the manifest: %w", err)
	}
	if mt != imgspecv1.MediaTypeImageManifest {
		return nil, fmt.Errorf("%w: manifest type %q", ckpt.ErrNotCheckpoint, mt)
	}
	img := &Image{src: src}
	if err := json.Unmarshal(mb, &img.Manifest); err != nil {
		return nil, fmt.Errorf("parsing the manifest: %w", err)
	}
	if !ckpt.IsCheckpointAnnotations(img.Manifest.Annotations) {
		return nil, fmt.Errorf("%w: its manifest has neither %s* nor %s* annotations", ckpt.ErrNotCheckpoint, ckpt.PodmanPrefix, ckpt.Prefix)
	}
	var cfg imgspecv1.Image
	if err := readJSONBlob(ctx, src, img.Manifest.Config, &cfg); err != nil {
		return nil, fmt.Errorf("reading the image config: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(img.Manifest.Layers) {
		return nil, fmt.Errorf("%w: %d layers but %d diff IDs", tarsafe.ErrUnsafe, len(img.Manifest.Layers), len(cfg.RootFS.DiffIDs))
	}
	v := &verifier{seen: map[string]bool{}}
	for i, desc := range img.Manifest.Layers {
		if err := v.layer(ctx, src, desc, cfg.RootFS.DiffIDs[i]); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, desc.Digest, err)
		}
	}
	if err := v.complete(); err != nil {
		return nil, err
	}
	img.Config = v.config
	img.Cleared = img.Config.Neutralize()
	img.Volumes = img.Config.NamedVolumes()
	return img, nil
}

func readJSONBlob(ctx context.Context, src types.ImageSource, d imgspecv1.Descriptor, out any) error {
	if d.Size > maxMetaSize {
		return fmt.Errorf("%w: %d bytes is too large", tarsafe.ErrUnsafe, d.Size)
	}
	rc, _, err := src.GetBlob(ctx, types.BlobInfo{Digest: d.Digest, Size: d.Size}, none.NoCache)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxMetaSize+1))
	if err != nil {
		return err
	}
	if digest.FromBytes(b) != d.Digest {
		return fmt.Errorf("%w: content does not match digest %s", tarsafe.ErrUnsafe, d.Digest)
	}
	return json.Unmarshal(b, out)
}

// verifier walks the layers once, checking and remembering what a restore
// needs.
type verifier struct {
	seen        map[string]bool // regular files across layers
	config      *dump.Config
	hasSpec     bool
	hasCRIU     bool
	rootfsLinks *tarsafe.Checker
	deleted     []string
}

func (v *verifier) layer(ctx context.Context, src types.ImageSource, desc imgspecv1.Descriptor, diffID digest.Digest) error {
	wantRole := ckpt.Role(desc.Annotations[ckpt.AnnLayerRole])
	rc, err := openLayer(ctx, src, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	dh := diffID.Algorithm().Hash()
	if !diffID.Algorithm().Available() {
		return fmt.Errorf("%w: unsupported diff ID %q", tarsafe.ErrUnsafe, diffID)
	}
	tr := tar.NewReader(io.TeeReader(rc, dh))
	check := tarsafe.NewChecker(tarsafe.Plain)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: reading: %w", tarsafe.ErrUnsafe, err)
		}
		name, err := check.Check(h)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		if strings.HasPrefix(pathBase(name), ".wh.") {
			return &tarsafe.EntryError{Name: h.Name, Reason: "whiteouts have no place in a checkpoint image"}
		}
		role, _, ok := ckpt.RoleOf(name)
		if !ok {
			return &tarsafe.EntryError{Name: h.Name, Reason: "not a member of a checkpoint archive"}
		}
		if wantRole != "" && role != wantRole {
			return &tarsafe.EntryError{Name: h.Name, Reason: fmt.Sprintf("belongs to the %s role, found in a layer marked %s", role, wantRole)}
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if v.seen[name] {
			return &tarsafe.EntryError{Name: h.Name, Reason: "appears twice in the image"}
		}
		v.seen[name] = true
		if err := v.member(name, tr); err != nil {
			return err
		}
	}
	// Drain padding so the diff ID covers the whole stream.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return err
	}
	if got := digest.NewDigest(diffID.Algorithm(), dh); got != diffID {
		return fmt.Errorf("%w: uncompressed content is %s, the config says %s", tarsafe.ErrUnsafe, got, diffID)
	}
	return nil
}

// member checks one regular file's content where podman will act on it.
func (v *verifier) member(name string, r io.Reader) error {
	switch {
	case name == ckpt.ConfigDump:
		cfg, err := dump.ReadConfig(r)
		if err != nil {
			return fmt.Errorf("%w: %w", tarsafe.ErrUnsafe, err)
		}
		v.config = cfg
	case name == ckpt.SpecDump:
		b, err := io.ReadAll(io.LimitReader(r, dump.MaxSize+1))
		if err != nil {
			return err
		}
		if len(b) > dump.MaxSize || !json.Valid(b) {
			return &tarsafe.EntryError{Name: name, Reason: "not a JSON document of sane size"}
		}
		v.hasSpec = true
	case name == ckpt.DeletedFiles:
		b, err := io.ReadAll(io.LimitReader(r, dump.MaxSize+1))
		if err != nil {
			return err
		}
		if len(b) > dump.MaxSize || json.Unmarshal(b, &v.deleted) != nil {
			return &tarsafe.EntryError{Name: name, Reason: "not a JSON list of paths of sane size"}
		}
		for _, p := range v.deleted {
			if err := tarsafe.CheckDeletedPath(p); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	case name == ckpt.RootfsDiffTar:
		c, err := tarsafe.Verify(r, tarsafe.Tree)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		v.rootfsLinks = c
	case name == ckpt.DevShmTar, strings.HasPrefix(name, ckpt.VolumesDir+"/"):
		if _, err := tarsafe.Verify(r, tarsafe.Tree); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	case strings.HasPrefix(name, ckpt.CheckpointDir+"/"):
		v.hasCRIU = true
	}
	return nil
}

func (v *verifier) complete() error {
	switch {
	case v.config == nil:
		return fmt.Errorf("%w: no %s in it", ckpt.ErrNotCheckpoint, ckpt.ConfigDump)
	case !v.hasSpec:
		return fmt.Errorf("%w: no %s in it", ckpt.ErrNotCheckpoint, ckpt.SpecDump)
	case !v.hasCRIU:
		return fmt.Errorf("%w: no CRIU images (%s/) in it", ckpt.ErrNotCheckpoint, ckpt.CheckpointDir)
	}
	// podman removes these on the host under the container's root: one
	// beneath a link the diff itself creates would leave that root.
	if v.rootfsLinks != nil {
		for _, p := range v.deleted {
			if v.rootfsLinks.BeneathLink(strings.TrimLeft(p, "/")) {
				return &tarsafe.EntryError{Name: p, Reason: "deleted.files entry lies beneath a symbolic link from rootfs-diff.tar"}
			}
		}
	}
	return nil
}

func openLayer(ctx context.Context, src types.ImageSource, desc imgspecv1.Descriptor) (io.ReadCloser, error) {
	rc, _, err := src.GetBlob(ctx, types.BlobInfo{Digest: desc.Digest, Size: desc.Size}, none.NoCache)
	if err != nil {
		return nil, err
	}
	dr, _, err := compression.AutoDecompress(rc)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("%w: decompressing: %w", tarsafe.ErrUnsafe, err)
	}
	return &stacked{dr, rc}, nil
}

type stacked struct {
	io.ReadCloser
	under io.Closer
}

func (s *stacked) Close() error {
	return errors.Join(s.ReadCloser.Close(), s.under.Close())
}

func pathBase(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// WriteArchive writes the image as podman's export archive: the layers'
// entries in order, config.dump replaced by its neutralised form. Open has
// already checked every entry.
func (img *Image) WriteArchive(ctx context.Context, w io.Writer) error {
	cfgBytes, err := img.Config.Bytes()
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, desc := range img.Manifest.Layers {
		if err := img.copyLayer(ctx, tw, desc, cfgBytes); err != nil {
			return err
		}
	}
	return tw.Close()
}

func (img *Image) copyLayer(ctx context.Context, tw *tar.Writer, desc imgspecv1.Descriptor, cfgBytes []byte) error {
	rc, err := openLayer(ctx, img.src, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	check := tarsafe.NewChecker(tarsafe.Plain)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name, err := check.Check(h) // again: the bytes are re-read from disk
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		var body io.Reader = tr
		size := h.Size
		if name == ckpt.ConfigDump {
			body, size = bytes.NewReader(cfgBytes), int64(len(cfgBytes))
		}
		if err := ckpt.WriteMember(tw, name, h, body, size); err != nil {
			return err
		}
	}
}
