package restore

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrBadCompress is wrapped when --compress is not auto, none, zstd or
// zstd:LEVEL.
var ErrBadCompress = fault.New(fault.Usage, "invalid --compress")

// Wire says how the archive travels to the target's podman. podman
// decompresses what its restore import is sent (4.3.1 and 5.x untar it
// with the storage library, which detects zstd): across a network the
// bytes cost more than the CPU, on a local socket the reverse.
type Wire struct {
	Zstd  bool
	Level zstd.EncoderLevel
}

// String is how results name it: "none" or "zstd:LEVEL".
func (w Wire) String() string {
	if !w.Zstd {
		return "none"
	}
	return "zstd:" + strconv.Itoa(zstdLevel(w.Level))
}

// zstdLevel is the zstd level an encoder level stands for.
func zstdLevel(l zstd.EncoderLevel) int {
	switch l {
	case zstd.SpeedFastest:
		return 1
	case zstd.SpeedDefault:
		return 3
	case zstd.SpeedBetterCompression:
		return 7
	}
	return 11
}

// DefaultWireLevel is zstd's fastest: half a checkpoint is usually random
// memory, which no level shrinks.
const DefaultWireLevel = 1

// ChooseWire turns --compress into the compression for the target at
// address: auto compresses for tcp:// and ssh://, not for unix://.
func ChooseWire(spec, address string) (Wire, error) {
	switch s := strings.TrimSpace(spec); {
	case s == "" || s == "auto":
		if strings.HasPrefix(address, "tcp://") || strings.HasPrefix(address, "ssh://") {
			return Wire{Zstd: true, Level: zstd.EncoderLevelFromZstd(DefaultWireLevel)}, nil
		}
		return Wire{}, nil
	case s == "none":
		return Wire{}, nil
	case s == "zstd":
		return Wire{Zstd: true, Level: zstd.EncoderLevelFromZstd(DefaultWireLevel)}, nil
	case strings.HasPrefix(s, "zstd:"):
		n, err := strconv.Atoi(strings.TrimPrefix(s, "zstd:"))
		if err != nil || n < 1 || n > 22 {
			return Wire{}, fmt.Errorf("%w %q: want a zstd level from 1 to 22", ErrBadCompress, spec)
		}
		return Wire{Zstd: true, Level: zstd.EncoderLevelFromZstd(n)}, nil
	}
	return Wire{}, fmt.Errorf("%w %q: want auto, none, zstd or zstd:LEVEL", ErrBadCompress, spec)
}

// writer wraps w in the wire's compression; close flushes it (not w).
func (wr Wire) writer(w io.Writer) (io.Writer, func() error, error) {
	if !wr.Zstd {
		return w, func() error { return nil }, nil
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(wr.Level))
	if err != nil {
		return nil, nil, err
	}
	return zw, zw.Close, nil
}
