package transfer

import (
	"context"
	"fmt"

	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"
)

// Instance returns the image of manifest digest d within the index at
// ref, as an image of its own: a registry's by digest (Pinned), any other
// transport's through a source whose top manifest is that instance,
// checked against d. So one member of a pod's index is fetched, planned
// and restored as any single image.
func Instance(ref types.ImageReference, d digest.Digest) (types.ImageReference, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("instance %q: %w", d, err)
	}
	if ref.Transport().Name() == docker.Transport.Name() && ref.DockerReference() != nil {
		return Pinned(ref, d)
	}
	return instanceRef{ImageReference: ref, d: d}, nil
}

type instanceRef struct {
	types.ImageReference
	d digest.Digest
}

func (r instanceRef) NewImageSource(ctx context.Context, sys *types.SystemContext) (types.ImageSource, error) {
	src, err := r.ImageReference.NewImageSource(ctx, sys)
	if err != nil {
		return nil, err
	}
	return instanceSource{ImageSource: src, d: r.d}, nil
}

func (r instanceRef) StringWithinTransport() string {
	return r.ImageReference.StringWithinTransport() + "@" + r.d.String()
}

// instanceSource serves the instance d as its top-level manifest.
type instanceSource struct {
	types.ImageSource
	d digest.Digest
}

func (s instanceSource) GetManifest(ctx context.Context, instance *digest.Digest) ([]byte, string, error) {
	if instance != nil {
		return s.ImageSource.GetManifest(ctx, instance)
	}
	m, mt, err := s.ImageSource.GetManifest(ctx, &s.d)
	if err != nil {
		return nil, "", err
	}
	if got := s.d.Algorithm().FromBytes(m); got != s.d {
		return nil, "", fmt.Errorf("manifest %s has digest %s", s.d, got)
	}
	return m, mt, nil
}

func (s instanceSource) GetSignatures(ctx context.Context, instance *digest.Digest) ([][]byte, error) {
	if instance == nil {
		instance = &s.d
	}
	return s.ImageSource.GetSignatures(ctx, instance)
}
