package ckpt

import "github.com/podman-migrate/podman-migrate/internal/tarsafe"

// Limits bound what a pulled image may expand to while it is verified and
// streamed to podman, so that a compression bomb or an archive of countless
// entries stops with an error instead of filling memory, disk or hours.
type Limits struct {
	// MaxLayerSize bounds each layer's decompressed bytes and each tar
	// inside a layer (rootfs-diff.tar, volumes/*.tar,
	// devshm-checkpoint.tar), counted as the sum of its entries' sizes.
	MaxLayerSize int64
	// MaxLayerEntries bounds each layer's tar entries, counting the
	// entries of the tars inside it.
	MaxLayerEntries int64
}

// DefaultLimits are generous for real checkpoints. The CRIU layer holds the
// container's memory, the rootfs and volume layers its written files: 64
// GiB covers all but exceptional containers, which can raise it. A million
// entries is ten times a root-filesystem diff with a node_modules tree, and
// bounds the names the entry checks keep in memory (about 100 bytes each).
var DefaultLimits = Limits{MaxLayerSize: 64 << 30, MaxLayerEntries: 1_000_000}

// orDefault fills unset fields from DefaultLimits.
func (l Limits) orDefault() Limits {
	if l.MaxLayerSize <= 0 {
		l.MaxLayerSize = DefaultLimits.MaxLayerSize
	}
	if l.MaxLayerEntries <= 0 {
		l.MaxLayerEntries = DefaultLimits.MaxLayerEntries
	}
	return l
}

// budget returns the budget of one layer.
func (l Limits) budget() *tarsafe.Budget {
	l = l.orDefault()
	return tarsafe.NewBudget(tarsafe.Limits{MaxBytes: l.MaxLayerSize, MaxEntries: l.MaxLayerEntries})
}
