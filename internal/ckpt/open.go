package ckpt

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/containers/image/v5/image"
	"github.com/containers/image/v5/manifest"
	"github.com/containers/image/v5/pkg/blobinfocache/none"
	"github.com/containers/image/v5/pkg/compression"
	"github.com/containers/image/v5/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/asyncw"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// maxMetaSize bounds manifests, configs and the JSON members read whole.
const maxMetaSize = 4 << 20

// Metadata is what a checkpoint image says about itself: its manifest, its
// image config and the small members podman reads before CRIU runs. It is
// read without the CRIU images or the root-filesystem diff.
type Metadata struct {
	Manifest       imgspecv1.Manifest
	ManifestDigest digest.Digest
	ImageConfig    imgspecv1.Image
	Options        Options
	// ConfigDump, SpecDump and NetworkStatus are the members as stored
	// (NetworkStatus is nil when absent); Config is ConfigDump parsed.
	ConfigDump    []byte
	SpecDump      []byte
	NetworkStatus []byte
	Config        *dump.Config
}

// Image is a checkpoint image whose every layer and entry was verified.
type Image struct {
	Metadata
	src    types.ImageSource
	limits Limits
}

// Open reads and verifies a checkpoint image from src: the manifest must
// mark it as a checkpoint, every layer must match its diff ID, and every
// entry (and every entry of the tars inside) must pass tarsafe. Nothing is
// sent anywhere. src's blobs are trusted to match their digests (a local
// copy that copy.Image verified); ReadMetadata checks them itself. Every
// layer is held to lim (zero fields: DefaultLimits) while it is read.
func Open(ctx context.Context, src types.ImageSource, lim Limits) (*Image, error) {
	v, err := newVerifier(ctx, src, lim)
	if err != nil {
		return nil, err
	}
	for i := range v.meta.Manifest.Layers {
		if err := v.layer(ctx, i, false); err != nil {
			return nil, err
		}
	}
	if err := v.complete(true); err != nil {
		return nil, err
	}
	return &Image{Metadata: *v.meta, src: src, limits: v.limits}, nil
}

// ReadMetadata reads the manifest, the image config and the layers up to
// and including the one that holds config.dump and spec.dump (the metadata
// layer of our images, the only layer of podman's), checking every digest
// and entry it reads. It does not apply a signature policy: callers get src
// from a policy-checked source (transfer.OpenSource). Layers are held to
// lim as in Open.
func ReadMetadata(ctx context.Context, src types.ImageSource, lim Limits) (*Metadata, error) {
	v, err := newVerifier(ctx, src, lim)
	if err != nil {
		return nil, err
	}
	for i := range v.meta.Manifest.Layers {
		if err := v.layer(ctx, i, true); err != nil {
			return nil, err
		}
		if v.meta.Config != nil && v.meta.SpecDump != nil {
			break
		}
	}
	if err := v.complete(false); err != nil {
		return nil, err
	}
	return v.meta, nil
}

// newVerifier reads and checks the manifest and the image config of src.
func newVerifier(ctx context.Context, src types.ImageSource, lim Limits) (*verifier, error) {
	// UnparsedInstance checks the manifest against a digest in the
	// reference, as copy.Image would.
	mb, mt, err := image.UnparsedInstance(src, nil).Manifest(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the manifest: %w", err)
	}
	if len(mb) > maxMetaSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes", tarsafe.ErrUnsafe, len(mb))
	}
	if manifest.MIMETypeIsMultiImage(mt) {
		return nil, &IndexError{Manifest: mb, MediaType: mt}
	}
	if mt != imgspecv1.MediaTypeImageManifest {
		return nil, fmt.Errorf("%w: manifest type %q", ErrNotCheckpoint, mt)
	}
	meta := &Metadata{ManifestDigest: digest.FromBytes(mb)}
	if err := json.Unmarshal(mb, &meta.Manifest); err != nil {
		return nil, fmt.Errorf("%w: parsing the manifest: %w", tarsafe.ErrUnsafe, err)
	}
	if !IsCheckpointAnnotations(meta.Manifest.Annotations) {
		return nil, fmt.Errorf("%w: its manifest has neither %s* nor %s* annotations", ErrNotCheckpoint, PodmanPrefix, Prefix)
	}
	if meta.Options, err = OptionsFromAnnotations(meta.Manifest.Annotations); err != nil {
		return nil, err
	}
	if err := readJSONBlob(ctx, src, meta.Manifest.Config, &meta.ImageConfig); err != nil {
		return nil, fmt.Errorf("reading the image config: %w", err)
	}
	if err := checkLayerTable(meta); err != nil {
		return nil, err
	}
	return &verifier{src: src, meta: meta, seen: map[string]bool{}, limits: lim.orDefault()}, nil
}

// checkLayerTable checks that every layer has a diff ID and that their
// digests are ones this program can compute.
func checkLayerTable(meta *Metadata) error {
	if len(meta.ImageConfig.RootFS.DiffIDs) != len(meta.Manifest.Layers) {
		return fmt.Errorf("%w: %d layers but %d diff IDs", tarsafe.ErrUnsafe, len(meta.Manifest.Layers), len(meta.ImageConfig.RootFS.DiffIDs))
	}
	// Pulled digests choose a hash function: check them before anything
	// calls Hash() on them, which panics on an unknown algorithm.
	for i, d := range meta.ImageConfig.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%w: the image config gives diff ID %d as %q: %w", tarsafe.ErrUnsafe, i, d, err)
		}
	}
	for i, l := range meta.Manifest.Layers {
		if err := l.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: layer %d digest %q: %w", tarsafe.ErrUnsafe, i, l.Digest, err)
		}
	}
	return nil
}

func readJSONBlob(ctx context.Context, src types.ImageSource, d imgspecv1.Descriptor, out any) error {
	if d.Size > maxMetaSize {
		return fmt.Errorf("%w: %d bytes is too large", tarsafe.ErrUnsafe, d.Size)
	}
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: digest %q: %w", tarsafe.ErrUnsafe, d.Digest, err)
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
	if d.Digest.Algorithm().FromBytes(b) != d.Digest {
		return fmt.Errorf("%w: content does not match digest %s", tarsafe.ErrUnsafe, d.Digest)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%w: %w", tarsafe.ErrUnsafe, err)
	}
	return nil
}

// verifier checks layers against the manifest and config, and merges, in
// manifest order, what they hold into what a restore needs. Checking a
// layer (check) reads only meta and limits, so layers may be checked at
// once and in any order; merging (add) is for one goroutine.
type verifier struct {
	src         types.ImageSource
	meta        *Metadata
	limits      Limits
	seen        map[string]bool // regular files across layers
	hasCRIU     bool
	rootfsLinks *tarsafe.Checker
	deleted     []string
}

// layerFinds is what one layer holds that the image as a whole is
// checked on, or that a restore needs.
type layerFinds struct {
	files         []string // regular files, in order
	hasCRIU       bool
	config        *dump.Config
	configDump    []byte
	specDump      []byte
	networkStatus []byte
	deleted       []string // nil: no deleted.files
	rootfsLinks   *tarsafe.Checker
}

// layer verifies layer i from v.src and merges it. With checkBlob it also
// hashes the compressed stream against the manifest's digest (a source
// nobody verified yet).
func (v *verifier) layer(ctx context.Context, i int, checkBlob bool) error {
	f, err := v.fromSource(ctx, i, checkBlob)
	if err == nil {
		err = v.add(i, f)
	}
	if err != nil {
		return fmt.Errorf("layer %d (%s): %w", i, v.meta.Manifest.Layers[i].Digest, err)
	}
	return nil
}

// fromSource checks layer i as read from v.src.
func (v *verifier) fromSource(ctx context.Context, i int, checkBlob bool) (*layerFinds, error) {
	rc, blobHash, err := openBlob(ctx, v.src, v.meta.Manifest.Layers[i], checkBlob)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var r io.Reader = rc
	if blobHash != nil {
		r = blobHash
	}
	f, err := v.check(i, r, nil)
	if err != nil {
		return nil, err
	}
	if blobHash != nil {
		// Read the compressed stream to its end before judging it.
		if err := blobHash.finish(); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// check verifies layer i from its compressed stream: every entry, its
// role, and the uncompressed content against the config's diff ID. The
// compressed bytes are not hashed here. It reads r to the end of the
// archive and its padding, not necessarily to EOF. With out, every entry
// that passed its own checks goes on to out while its content is checked.
func (v *verifier) check(i int, compressed io.Reader, out *emitter) (*layerFinds, error) {
	desc := v.meta.Manifest.Layers[i]
	diffID := v.meta.ImageConfig.RootFS.DiffIDs[i]
	wantRole := Role(desc.Annotations[AnnLayerRole])
	rc, err := decompress(compressed)
	if err != nil {
		return nil, fmt.Errorf("%w: decompressing: %w", tarsafe.ErrUnsafe, err)
	}
	defer rc.Close()
	dh := diffID.Algorithm().Hash()
	// The diff ID is hashed on a goroutine of its own, so that on 2 cores
	// it overlaps decompressing and checking instead of taking turns.
	hw := asyncw.New(dh, stageBuffer, stageDepth)
	defer hw.Close()
	budget := v.limits.budget()
	f := &layerFinds{}
	files := map[string]bool{}
	err = tarsafe.NewChecker(tarsafe.Plain).Walk(io.TeeReader(budget.Reader(rc), hw), tarsafe.ErrUnsafe, budget, func(name string, h *tar.Header, body io.Reader) error {
		if strings.HasPrefix(pathBase(name), ".wh.") {
			return &tarsafe.EntryError{Name: h.Name, Reason: "whiteouts have no place in a checkpoint image"}
		}
		role, _, ok := RoleOf(name)
		if !ok {
			return &tarsafe.EntryError{Name: h.Name, Reason: "not a member of a checkpoint archive"}
		}
		if wantRole != "" && role != wantRole {
			return &tarsafe.EntryError{Name: h.Name, Reason: fmt.Sprintf("belongs to the %s role, found in a layer marked %s", role, wantRole)}
		}
		if h.Typeflag == tar.TypeDir {
			return out.dir(name, h)
		}
		if files[name] || out.seen(name) {
			return &tarsafe.EntryError{Name: h.Name, Reason: "appears twice in the image"}
		}
		files[name] = true
		f.files = append(f.files, name)
		return f.member(name, body, budget, out.member(name, h))
	})
	if err == nil {
		err = hw.Close() // all of it hashed
	}
	if err != nil {
		return nil, err
	}
	if got := digest.NewDigest(diffID.Algorithm(), dh); got != diffID {
		return nil, fmt.Errorf("%w: uncompressed content is %s, the config says %s", tarsafe.ErrUnsafe, got, diffID)
	}
	return f, nil
}

// add merges layer i's finds; layers must come in manifest order.
func (v *verifier) add(i int, f *layerFinds) error {
	for _, name := range f.files {
		if v.seen[name] {
			return &tarsafe.EntryError{Name: name, Reason: "appears twice in the image"}
		}
	}
	for _, name := range f.files {
		v.seen[name] = true
	}
	if f.hasCRIU {
		v.hasCRIU = true
	}
	if f.config != nil {
		v.meta.Config, v.meta.ConfigDump = f.config, f.configDump
	}
	if f.specDump != nil {
		v.meta.SpecDump = f.specDump
	}
	if f.networkStatus != nil {
		v.meta.NetworkStatus = f.networkStatus
	}
	if f.deleted != nil {
		v.deleted = f.deleted
	}
	if f.rootfsLinks != nil {
		v.rootfsLinks = f.rootfsLinks
	}
	return nil
}

// readSmall reads a member that is read whole, bounded.
func readSmall(name string, r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, dump.MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > dump.MaxSize {
		return nil, &tarsafe.EntryError{Name: name, Reason: fmt.Sprintf("larger than %d bytes", dump.MaxSize)}
	}
	return b, nil
}

// member checks one regular file's content where podman will act on it;
// budget is its layer's. out, when not nil, takes the content as checked.
func (f *layerFinds) member(name string, r io.Reader, budget *tarsafe.Budget, out func(io.Reader) error) error {
	small := func(check func([]byte) error) error {
		b, err := readSmall(name, r)
		if err == nil {
			err = check(b)
		}
		if err == nil && out != nil {
			err = out(bytes.NewReader(b))
		}
		return err
	}
	switch {
	case name == ConfigDump:
		return small(func(b []byte) error {
			cfg, err := dump.ReadConfig(bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("%w: %w", tarsafe.ErrUnsafe, err)
			}
			f.config, f.configDump = cfg, b
			return nil
		})
	case name == SpecDump, name == NetworkStatus:
		return small(func(b []byte) error {
			if !json.Valid(b) {
				return &tarsafe.EntryError{Name: name, Reason: "not a JSON document"}
			}
			if name == SpecDump {
				f.specDump = b
			} else {
				f.networkStatus = b
			}
			return nil
		})
	case name == DeletedFiles:
		return small(func(b []byte) error {
			var deleted []string
			if json.Unmarshal(b, &deleted) != nil {
				return &tarsafe.EntryError{Name: name, Reason: "not a JSON list of paths"}
			}
			for _, p := range deleted {
				if err := tarsafe.CheckDeletedPath(p); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			f.deleted = append([]string{}, deleted...) // non-nil: present
			return nil
		})
	case nestedTar(name):
		var c *tarsafe.Checker
		var err error
		if out == nil {
			c, err = tarsafe.Verify(r, tarsafe.Tree, budget.Nested())
		} else {
			c, err = verifyTee(r, budget, out)
		}
		if err != nil {
			var bad *nestedError
			if errors.As(err, &bad) {
				err = bad.err
			}
			return fmt.Errorf("%s: %w", name, err)
		}
		if name == RootfsDiffTar {
			f.rootfsLinks = c
		}
		return nil
	case strings.HasPrefix(name, CheckpointDir+"/"):
		f.hasCRIU = true
	}
	if out != nil {
		return out(r)
	}
	return nil
}

// complete checks what the whole image must hold; whole is false when only
// the metadata layers were read.
func (v *verifier) complete(whole bool) error {
	switch {
	case v.meta.Config == nil:
		return fmt.Errorf("%w: no %s in it", ErrNotCheckpoint, ConfigDump)
	case v.meta.SpecDump == nil:
		return fmt.Errorf("%w: no %s in it", ErrNotCheckpoint, SpecDump)
	case whole && !v.hasCRIU:
		return fmt.Errorf("%w: no CRIU images (%s/) in it", ErrNotCheckpoint, CheckpointDir)
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

// boundedBlob stops a blob at the size the manifest gives, not at whatever
// end the registry chooses (zstd's skippable frames decompress to
// nothing), and keeps the first failure reading it: the cause, when a check
// fails on a cut blob.
type boundedBlob struct {
	r      io.Reader
	n, max int64
	err    error
}

func (b *boundedBlob) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.max >= 0 && b.n > b.max {
		err = fmt.Errorf("%w: blob is larger than the %d bytes the manifest says", tarsafe.ErrUnsafe, b.max)
	}
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// blobCheck hashes a compressed stream as it is read.
type blobCheck struct {
	sized boundedBlob
	h     hash.Hash
	desc  imgspecv1.Descriptor
}

func (b *blobCheck) Read(p []byte) (int, error) {
	n, err := b.sized.Read(p)
	b.h.Write(p[:n])
	return n, err
}

func (b *blobCheck) finish() error {
	if _, err := io.Copy(io.Discard, b); err != nil {
		return err
	}
	if got := digest.NewDigest(b.desc.Digest.Algorithm(), b.h); got != b.desc.Digest {
		return fmt.Errorf("%w: blob content is %s, the manifest says %s", tarsafe.ErrUnsafe, got, b.desc.Digest)
	}
	if b.desc.Size >= 0 && b.sized.n != b.desc.Size {
		return fmt.Errorf("%w: blob is %d bytes, the manifest says %d", tarsafe.ErrUnsafe, b.sized.n, b.desc.Size)
	}
	return nil
}

// openBlob returns the compressed stream of a layer; with checkBlob, the
// returned blobCheck reads it and verifies the bytes once drained.
func openBlob(ctx context.Context, src types.ImageSource, desc imgspecv1.Descriptor, checkBlob bool) (io.ReadCloser, *blobCheck, error) {
	rc, _, err := src.GetBlob(ctx, types.BlobInfo{Digest: desc.Digest, Size: desc.Size}, none.NoCache)
	if err != nil {
		return nil, nil, err
	}
	if !checkBlob {
		return rc, nil, nil
	}
	return rc, &blobCheck{sized: boundedBlob{r: rc, max: desc.Size}, h: desc.Digest.Algorithm().Hash(), desc: desc}, nil
}

// openLayer returns the uncompressed stream of a layer, as stored.
func openLayer(ctx context.Context, src types.ImageSource, desc imgspecv1.Descriptor) (io.ReadCloser, error) {
	rc, _, err := openBlob(ctx, src, desc, false)
	if err != nil {
		return nil, err
	}
	dr, err := decompress(rc)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("%w: decompressing: %w", tarsafe.ErrUnsafe, err)
	}
	return &stacked{dr, rc}, nil
}

// maxZstdWindow is the largest zstd window accepted, the zstd tool's own
// default limit for decompression (--long=27): the decoder allocates the
// window the stream declares, and a pulled stream must not choose that.
const maxZstdWindow = 128 << 20

// decompress undoes the compressions checkpoint layers use (zstd, gzip, or
// none), with the decoder's memory bounded. Others (xz, bzip2) are refused:
// neither podman-migrate nor podman writes them.
func decompress(r io.Reader) (io.ReadCloser, error) {
	alg, _, r, err := compression.DetectCompressionFormat(r)
	if err != nil {
		return nil, err
	}
	switch {
	case alg.Name() == "":
		return io.NopCloser(r), nil
	case alg.Name() == compression.Zstd.Name():
		d, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case alg.Name() == compression.Gzip.Name():
		return compression.GzipDecompressor(r)
	}
	return nil, fmt.Errorf("%s compression is not used for checkpoint layers", strings.ToLower(alg.Name()))
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
