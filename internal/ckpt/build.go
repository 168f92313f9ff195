package ckpt

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/containers/image/v5/pkg/blobinfocache/none"
	"github.com/containers/image/v5/pkg/compression"
	"github.com/containers/image/v5/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/asyncw"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// ErrBadArchive is wrapped when podman's archive is not what a checkpoint
// export should be.
var ErrBadArchive = fault.New(fault.Podman, "unexpected checkpoint archive")

// BuildOptions control the image written by Build.
type BuildOptions struct {
	// Compression is "zstd" (default) or "gzip"; Level its level (nil:
	// the library's default; zstd 1-20, gzip 1-9).
	Compression string
	Level       *int
	// Annotate returns the manifest annotations, given the (already
	// neutralised) config.dump; it runs once the archive has been read.
	Annotate func(cfg *dump.Config) (map[string]string, error)
	// Rewrite edits members by name (config.dump after it is
	// neutralised); each is read whole, bounded by dump.MaxSize.
	Rewrite map[string]func([]byte) ([]byte, error)
	// Arch and OS of the image config; default to this binary's.
	Arch, OS string
	Created  time.Time
}

// Layer describes one layer written by Build.
type Layer struct {
	Role   Role
	Volume string
	Desc   imgspecv1.Descriptor
	DiffID digest.Digest
}

// Built is the image Build wrote.
type Built struct {
	Manifest imgspecv1.Manifest
	Digest   digest.Digest
	Size     int64 // of the manifest as stored, for an index's descriptor
	Layers   []Layer
	Config   *dump.Config
	Cleared  []string // config.dump fields removed as host-specific
}

// MediaType returns the OCI layer media type for a compression name.
func MediaType(comp string) (string, compression.Algorithm, error) {
	switch comp {
	case "", "zstd":
		return imgspecv1.MediaTypeImageLayerZstd, compression.Zstd, nil
	case "gzip":
		return imgspecv1.MediaTypeImageLayerGzip, compression.Gzip, nil
	}
	return "", compression.Algorithm{}, fmt.Errorf("unknown compression format %q (want zstd or gzip)", comp)
}

// layer is one layer being written: entries go through a tar writer, the
// uncompressed stream is hashed for the diff ID, and the compressed stream
// is piped to the destination, which hashes and stores it without
// buffering. The hash and the destination each get their own goroutine
// (asyncw), so reading, hashing, compressing and storing overlap.
type layer struct {
	role   Role
	volume string
	tw     *tar.Writer
	diff   digest.Digester
	diffW  *asyncw.Writer
	comp   io.WriteCloser
	out    *asyncw.Writer
	pw     *io.PipeWriter
	done   chan putResult
}

// Buffers of the asynchronous stages: 2 × 3 × 256 KiB per layer at most.
const (
	stageBuffer = 256 << 10
	stageDepth  = 2
)

type putResult struct {
	info types.BlobInfo
	err  error
}

// layerAnnotations name what a layer holds, in its blob and its descriptor.
func layerAnnotations(role Role, volume string) map[string]string {
	ann := map[string]string{AnnLayerRole: string(role)}
	if volume != "" {
		ann[AnnLayerVolume] = volume
	}
	return ann
}

func newLayer(ctx context.Context, dest types.ImageDestination, algo compression.Algorithm, level *int, role Role, volume string) (*layer, error) {
	pr, pw := io.Pipe()
	l := &layer{role: role, volume: volume, diff: digest.Canonical.Digester(), pw: pw, done: make(chan putResult, 1)}
	go func() {
		// The role tells a destination what the blob holds (a push
		// streams some roles to the registry while building).
		info, err := dest.PutBlob(ctx, pr, types.BlobInfo{Size: -1, Annotations: layerAnnotations(role, volume)}, none.NoCache, false)
		pr.CloseWithError(err)
		l.done <- putResult{info, err}
	}()
	l.out = asyncw.New(pw, stageBuffer, stageDepth)
	comp, err := compressor(l.out, algo, level)
	if err != nil {
		l.abort(err)
		return nil, err
	}
	l.comp = comp
	l.diffW = asyncw.New(l.diff.Hash(), stageBuffer, stageDepth)
	l.tw = tar.NewWriter(io.MultiWriter(comp, l.diffW))
	return l, nil
}

// compressor is containers/image's CompressStream, but zstd's encoder is
// given less memory, since every layer's encoder stays open until the
// archive ends: one goroutine (the layer's other stages have their own,
// and a second one measured slower on 2 cores) and, at the default level,
// the 2 MiB window the zstd tool's level 3 uses instead of 8 MiB. That
// took a push's peak RSS from 62 to 46 MiB at no cost in time or size
// (CRIU pages).
func compressor(w io.Writer, algo compression.Algorithm, level *int) (io.WriteCloser, error) {
	if algo.Name() != compression.Zstd.Name() {
		return compression.CompressStream(w, algo, level)
	}
	opts := []zstd.EOption{zstd.WithEncoderConcurrency(1)}
	if level == nil || *level <= 3 {
		opts = append(opts, zstd.WithWindowSize(2<<20))
	}
	if level != nil {
		opts = append(opts, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(*level)))
	}
	return zstd.NewWriter(w, opts...)
}

func (l *layer) close() (types.BlobInfo, error) {
	err := l.tw.Close()
	if err == nil {
		err = l.comp.Close()
	}
	if err == nil {
		err = l.diffW.Close()
	}
	if err == nil {
		err = l.out.Close()
	}
	if err != nil {
		l.abort(err)
		return types.BlobInfo{}, err
	}
	_ = l.pw.Close()
	r := <-l.done
	return r.info, r.err
}

func (l *layer) abort(err error) {
	l.pw.CloseWithError(err)
	if l.diffW != nil {
		l.diffW.Close()
	}
	l.out.Close() // its writes fail now that the pipe is closed
	<-l.done
}

// stableTime is the time volume and rootfs layers give their entries, so
// that unchanged content makes the same blob at every push and a registry
// that has it is not sent it again.
var stableTime = time.Unix(0, 0).UTC()

// Build reads podman's export archive from r and writes it to dest as a
// checkpoint image, committing it: one layer per role (metadata, CRIU
// images, root-filesystem diff, each named volume), so the union of the
// layers is the archive again, which is what `podman container restore
// IMAGE` mounts and reads. dest may be any containers/image
// destination; the caller closes it.
func Build(ctx context.Context, r io.Reader, dest types.ImageDestination, o BuildOptions) (built *Built, retErr error) {
	mediaType, algo, err := MediaType(o.Compression)
	if err != nil {
		return nil, err
	}
	b := &building{dest: dest, o: o, mediaType: mediaType, algo: algo, layers: map[string]*layer{}}
	defer func() {
		if retErr != nil {
			b.abort(retErr)
		}
	}()
	// The metadata layer comes first even if podman's archive starts with
	// something else.
	if _, err := b.layerOf(ctx, RoleMetadata, ""); err != nil {
		return nil, err
	}
	if err := b.split(ctx, r); err != nil {
		return nil, err
	}
	if err := b.closeLayers(); err != nil {
		return nil, err
	}
	if err := b.commit(ctx); err != nil {
		return nil, err
	}
	return b.built, nil
}

// building is one Build: the layers open so far and what the archive
// gave, for the manifest.
type building struct {
	dest      types.ImageDestination
	o         BuildOptions
	mediaType string
	algo      compression.Algorithm

	layers   map[string]*layer // by role, or "volume/NAME"
	order    []*layer          // as opened
	cfg      *dump.Config
	cleared  []string
	seenCRIU bool
	built    *Built
}

// abort ends the layers still open, whose goroutines would otherwise wait
// on their pipes.
func (b *building) abort(err error) {
	for _, l := range b.order {
		if l.tw != nil {
			l.abort(err)
		}
	}
}

// layerOf returns the layer of role (and volume), opening it at its first
// member.
func (b *building) layerOf(ctx context.Context, role Role, volume string) (*layer, error) {
	key := string(role) + "/" + volume
	if l, ok := b.layers[key]; ok {
		return l, nil
	}
	l, err := newLayer(ctx, b.dest, b.algo, b.o.Level, role, volume)
	if err != nil {
		return nil, err
	}
	b.layers[key] = l
	b.order = append(b.order, l)
	if role == RoleVolume {
		// Each volume layer carries the parent directory itself, so
		// any one of them unpacks on its own.
		if err := l.tw.WriteHeader(&tar.Header{Name: VolumesDir + "/", Typeflag: tar.TypeDir, Mode: 0o700, ModTime: stableTime}); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// split reads podman's archive once, writing each member into its role's
// layer, and checks it had what a restore needs.
func (b *building) split(ctx context.Context, r io.Reader) error {
	err := tarsafe.NewChecker(tarsafe.Plain).Walk(ctxReader{ctx, r}, ErrBadArchive, nil, func(name string, h *tar.Header, body io.Reader) error {
		return b.member(ctx, name, h, body)
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if b.cfg == nil {
		return fmt.Errorf("%w: no %s in it", ErrBadArchive, ConfigDump)
	}
	if !b.seenCRIU {
		return fmt.Errorf("%w: no %s/ directory (CRIU images) in it", ErrBadArchive, CheckpointDir)
	}
	return nil
}

// member writes one archive member into its layer.
func (b *building) member(ctx context.Context, name string, h *tar.Header, body io.Reader) error {
	role, volume, ok := RoleOf(name)
	if !ok {
		return fmt.Errorf("%w: member %q is not part of the checkpoint format this tool knows", ErrBadArchive, h.Name)
	}
	if role == RoleVolume && volume == "" {
		return nil // the volumes/ directory: each volume layer has its own
	}
	if role == RoleCRIU {
		b.seenCRIU = true
	}
	l, err := b.layerOf(ctx, role, volume)
	if err != nil {
		return err
	}
	body, size, err := b.content(name, h, body)
	if err != nil {
		return err
	}
	if role == RoleVolume || role == RoleRootfs {
		// podman writes these tars afresh at every checkpoint: their
		// time alone would make unchanged content a new blob.
		hc := *h
		hc.ModTime = stableTime
		h = &hc
	}
	if err := WriteMember(l.tw, name, h, body, size); err != nil {
		return fmt.Errorf("writing the %s layer: %w", l.role, err)
	}
	return nil
}

// content returns a member's body and size as the image stores them:
// config.dump neutralised, the members o.Rewrite names rewritten, the
// rest streamed as they are.
func (b *building) content(name string, h *tar.Header, body io.Reader) (io.Reader, int64, error) {
	var data []byte
	var err error
	switch fn := b.o.Rewrite[name]; {
	case name == ConfigDump:
		data, err = b.configDump(body, fn)
	case fn != nil && h.Typeflag == tar.TypeReg:
		data, err = rewrite(name, body, fn)
	default:
		return body, h.Size, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return bytes.NewReader(data), int64(len(data)), nil
}

// configDump reads config.dump, which the annotations and the caller need,
// and clears the source host's paths from it before any rewrite.
func (b *building) configDump(body io.Reader, fn func([]byte) ([]byte, error)) ([]byte, error) {
	var err error
	if b.cfg, err = dump.ReadConfig(body); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadArchive, err)
	}
	b.cleared = b.cfg.Neutralize()
	data, err := b.cfg.Bytes()
	if err != nil {
		return nil, err
	}
	if fn == nil {
		return data, nil
	}
	if data, err = fn(data); err != nil {
		return nil, fmt.Errorf("rewriting %s: %w", ConfigDump, err)
	}
	if b.cfg, err = dump.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("rewriting %s: %w", ConfigDump, err)
	}
	return data, nil
}

// rewrite reads a member whole, bounded since it is held in memory, and
// returns it as fn rewrites it.
func rewrite(name string, body io.Reader, fn func([]byte) ([]byte, error)) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(body, dump.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBadArchive, name, err)
	}
	if len(data) > dump.MaxSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadArchive, name, dump.MaxSize)
	}
	if data, err = fn(data); err != nil {
		return nil, fmt.Errorf("rewriting %s: %w", name, err)
	}
	return data, nil
}

// closeLayers closes every layer, in manifest order: metadata, CRIU,
// rootfs, volumes. Only a closed layer has its digests.
func (b *building) closeLayers() error {
	b.built = &Built{Config: b.cfg, Cleared: b.cleared}
	for _, l := range sortLayers(b.order) {
		info, err := l.close()
		l.tw = nil
		if err != nil {
			return fmt.Errorf("storing the %s layer: %w", l.role, err)
		}
		b.built.Layers = append(b.built.Layers, Layer{
			Role: l.role, Volume: l.volume, DiffID: l.diff.Digest(),
			Desc: imgspecv1.Descriptor{MediaType: b.mediaType, Digest: info.Digest, Size: info.Size, Annotations: layerAnnotations(l.role, l.volume)},
		})
	}
	return nil
}

// commit stores the image config and the manifest, which name the layers'
// digests, and commits dest.
func (b *building) commit(ctx context.Context) error {
	annotations := map[string]string{}
	if b.o.Annotate != nil {
		var err error
		if annotations, err = b.o.Annotate(b.cfg); err != nil {
			return err
		}
	}
	configDesc, err := putConfig(ctx, b.dest, b.built.Layers, b.o)
	if err != nil {
		return err
	}
	m := imgspecv1.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   imgspecv1.MediaTypeImageManifest,
		Config:      configDesc,
		Annotations: annotations,
	}
	for _, l := range b.built.Layers {
		m.Layers = append(m.Layers, l.Desc)
	}
	b.built.Manifest = m
	mb, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := b.dest.PutManifest(ctx, mb, nil); err != nil {
		return fmt.Errorf("storing the manifest: %w", err)
	}
	if err := b.dest.Commit(ctx, nil); err != nil {
		return fmt.Errorf("committing the image: %w", err)
	}
	b.built.Digest, b.built.Size = digest.FromBytes(mb), int64(len(mb))
	return nil
}

func sortLayers(ls []*layer) []*layer {
	rank := map[Role]int{RoleMetadata: 0, RoleCRIU: 1, RoleRootfs: 2, RoleVolume: 3}
	out := make([]*layer, 0, len(ls))
	for r := 0; r <= 3; r++ {
		for _, l := range ls { // volumes keep the archive's order
			if rank[l.role] == r {
				out = append(out, l)
			}
		}
	}
	return out
}

func putConfig(ctx context.Context, dest types.ImageDestination, layers []Layer, o BuildOptions) (imgspecv1.Descriptor, error) {
	created := o.Created
	if created.IsZero() {
		created = time.Now().UTC()
	}
	cfg := imgspecv1.Image{
		Created:  &created,
		Platform: imgspecv1.Platform{Architecture: orDefault(o.Arch, runtime.GOARCH), OS: orDefault(o.OS, "linux")},
		RootFS:   imgspecv1.RootFS{Type: "layers"},
	}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		comment := string(l.Role)
		if l.Volume != "" {
			comment += " " + l.Volume
		}
		cfg.History = append(cfg.History, imgspecv1.History{Created: &created, CreatedBy: "podman-migrate push", Comment: comment})
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return imgspecv1.Descriptor{}, err
	}
	info, err := dest.PutBlob(ctx, bytes.NewReader(b), types.BlobInfo{Digest: digest.FromBytes(b), Size: int64(len(b))}, none.NoCache, true)
	if err != nil {
		return imgspecv1.Descriptor{}, fmt.Errorf("storing the image config: %w", err)
	}
	return imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageConfig, Digest: info.Digest, Size: info.Size}, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// ctxReader stops a long copy (CRIU pages reach gigabytes) once ctx is
// done, so an interrupted push gets to its rollback without delay.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
