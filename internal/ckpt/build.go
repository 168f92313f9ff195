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

func newLayer(ctx context.Context, dest types.ImageDestination, algo compression.Algorithm, level *int, role Role, volume string) (*layer, error) {
	pr, pw := io.Pipe()
	l := &layer{role: role, volume: volume, diff: digest.Canonical.Digester(), pw: pw, done: make(chan putResult, 1)}
	go func() {
		// The role tells a destination what the blob holds (a push
		// streams some roles to the registry while building).
		ann := map[string]string{AnnLayerRole: string(role)}
		if volume != "" {
			ann[AnnLayerVolume] = volume
		}
		info, err := dest.PutBlob(ctx, pr, types.BlobInfo{Size: -1, Annotations: ann}, none.NoCache, false)
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
	layers := map[string]*layer{} // by role, or "volume/NAME"
	var order []*layer
	defer func() {
		if retErr != nil {
			for _, l := range order {
				if l.tw != nil {
					l.abort(retErr)
				}
			}
		}
	}()
	get := func(role Role, volume string) (*layer, error) {
		key := string(role) + "/" + volume
		if l, ok := layers[key]; ok {
			return l, nil
		}
		l, err := newLayer(ctx, dest, algo, o.Level, role, volume)
		if err != nil {
			return nil, err
		}
		layers[key] = l
		order = append(order, l)
		if role == RoleVolume {
			// Each volume layer carries the parent directory itself, so
			// any one of them unpacks on its own.
			if err := l.tw.WriteHeader(&tar.Header{Name: VolumesDir + "/", Typeflag: tar.TypeDir, Mode: 0o700, ModTime: stableTime}); err != nil {
				return nil, err
			}
		}
		return l, nil
	}
	// The metadata layer comes first even if podman's archive starts with
	// something else.
	if _, err := get(RoleMetadata, ""); err != nil {
		return nil, err
	}

	var cfg *dump.Config
	var cleared []string
	seenCRIU := false
	err = tarsafe.NewChecker(tarsafe.Plain).Walk(ctxReader{ctx, r}, ErrBadArchive, nil, func(name string, h *tar.Header, body io.Reader) error {
		role, volume, ok := RoleOf(name)
		if !ok {
			return fmt.Errorf("%w: member %q is not part of the checkpoint format this tool knows", ErrBadArchive, h.Name)
		}
		if role == RoleVolume && volume == "" {
			return nil // the volumes/ directory: each volume layer has its own
		}
		if role == RoleCRIU {
			seenCRIU = true
		}
		l, err := get(role, volume)
		if err != nil {
			return err
		}
		size := h.Size
		if name == ConfigDump {
			if cfg, err = dump.ReadConfig(body); err != nil {
				return fmt.Errorf("%w: %w", ErrBadArchive, err)
			}
			cleared = cfg.Neutralize()
			b, err := cfg.Bytes()
			if err != nil {
				return err
			}
			if fn := o.Rewrite[name]; fn != nil {
				if b, err = fn(b); err != nil {
					return fmt.Errorf("rewriting %s: %w", name, err)
				}
				if cfg, err = dump.ReadConfig(bytes.NewReader(b)); err != nil {
					return fmt.Errorf("rewriting %s: %w", name, err)
				}
			}
			body, size = bytes.NewReader(b), int64(len(b))
		} else if fn := o.Rewrite[name]; fn != nil && h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(io.LimitReader(body, dump.MaxSize+1))
			if err != nil {
				return fmt.Errorf("%w: reading %s: %w", ErrBadArchive, name, err)
			}
			if len(b) > dump.MaxSize {
				return fmt.Errorf("%w: %s is larger than %d bytes", ErrBadArchive, name, dump.MaxSize)
			}
			if b, err = fn(b); err != nil {
				return fmt.Errorf("rewriting %s: %w", name, err)
			}
			body, size = bytes.NewReader(b), int64(len(b))
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
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if cfg == nil {
		return nil, fmt.Errorf("%w: no %s in it", ErrBadArchive, ConfigDump)
	}
	if !seenCRIU {
		return nil, fmt.Errorf("%w: no %s/ directory (CRIU images) in it", ErrBadArchive, CheckpointDir)
	}

	// Close every layer, in manifest order: metadata, CRIU, rootfs, volumes.
	sorted := sortLayers(order)
	built = &Built{Config: cfg, Cleared: cleared}
	for _, l := range sorted {
		info, err := l.close()
		l.tw = nil
		if err != nil {
			return nil, fmt.Errorf("storing the %s layer: %w", l.role, err)
		}
		ann := map[string]string{AnnLayerRole: string(l.role)}
		if l.volume != "" {
			ann[AnnLayerVolume] = l.volume
		}
		built.Layers = append(built.Layers, Layer{
			Role: l.role, Volume: l.volume, DiffID: l.diff.Digest(),
			Desc: imgspecv1.Descriptor{MediaType: mediaType, Digest: info.Digest, Size: info.Size, Annotations: ann},
		})
	}

	annotations := map[string]string{}
	if o.Annotate != nil {
		if annotations, err = o.Annotate(cfg); err != nil {
			return nil, err
		}
	}
	configDesc, err := putConfig(ctx, dest, built.Layers, o)
	if err != nil {
		return nil, err
	}
	built.Manifest = imgspecv1.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   imgspecv1.MediaTypeImageManifest,
		Config:      configDesc,
		Annotations: annotations,
	}
	for _, l := range built.Layers {
		built.Manifest.Layers = append(built.Manifest.Layers, l.Desc)
	}
	mb, err := json.Marshal(built.Manifest)
	if err != nil {
		return nil, err
	}
	if err := dest.PutManifest(ctx, mb, nil); err != nil {
		return nil, fmt.Errorf("storing the manifest: %w", err)
	}
	if err := dest.Commit(ctx, nil); err != nil {
		return nil, fmt.Errorf("committing the image: %w", err)
	}
	built.Digest = digest.FromBytes(mb)
	return built, nil
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
