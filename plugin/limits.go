package main

import (
	"fmt"

	"github.com/docker/go-units"
	"github.com/spf13/pflag"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
)

// limitFlags are --max-layer-size and --max-layer-entries, shared by pull,
// move, inspect and kube: what a pulled layer may expand to.
type limitFlags struct {
	size    string
	entries int64
}

// addLimitFlags registers the limits group.
func addLimitFlags(f *pflag.FlagSet) *limitFlags {
	l := &limitFlags{}
	f.StringVar(&l.size, "max-layer-size", units.BytesSize(float64(ckpt.DefaultLimits.MaxLayerSize)),
		"refuse a layer, or a tar inside one, that decompresses to more than SIZE (bytes, or 512MiB, 64GiB)")
	f.Int64Var(&l.entries, "max-layer-entries", ckpt.DefaultLimits.MaxLayerEntries,
		"refuse a layer of more than N archive entries, counting the entries of the tars inside it")
	return l
}

// limits checks the flags, before anything is fetched, and returns the
// limits they set.
func (l *limitFlags) limits() (ckpt.Limits, error) {
	size, err := units.RAMInBytes(l.size)
	if err != nil || size <= 0 {
		return ckpt.Limits{}, usageError{fmt.Errorf("--max-layer-size %q: want a positive size such as 512MiB or 64GiB", l.size)}
	}
	if l.entries <= 0 {
		return ckpt.Limits{}, usageError{fmt.Errorf("--max-layer-entries %d: want a positive number", l.entries)}
	}
	return ckpt.Limits{MaxLayerSize: size, MaxLayerEntries: l.entries}, nil
}
